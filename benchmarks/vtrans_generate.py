"""generate() throughput of pruned SmolLM2 models against the dense one, at batch 1 and batched.

The pruned models are folders written by ``benchmarks/vtrans_smollm2.py`` (``outputs/bench_smollm2_<tag>/
vtrans-<sparsity>``; throughput depends on the shapes only, so the folder before LoRA recovery is as good as
the merged one). Models are timed in turns (dense, pruned, dense, pruned, ...) for ``--rounds`` rounds so that
drift in the machine's speed hits all of them alike; each model's median tokens/s is reported and the ratio
pruned / dense of the medians.

Batch 1 is latency-bound: on a CPU a 135M model spends much of each token in per-layer Python and dispatch
overhead and in the 49k-word LM head, neither of which pruning the layers removes. A batch of 8 shows the
throughput a server batching requests gets, where the pruned matrices dominate.

    python benchmarks/vtrans_generate.py outputs/bench_smollm2_cpu/vtrans-0.3 --batch_sizes 1 8 --tag cpu
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import hf_compress  # noqa: E402,F401  (registers the pruned-model Auto classes)
from hf_compress.lm import generation_throughput, load_smollm2  # noqa: E402

PROMPTS = [
    "The history of the Roman Empire",
    "In computer science, a hash table is",
    "The capital of France is",
    "Photosynthesis is the process by which",
    "The theory of general relativity",
    "A recipe for bread needs",
    "The stock market fell today because",
    "Mount Everest is located in",
]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pruned", nargs="+", help="pruned model folders (AutoModelForCausalLM)")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--gen_tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--tag", default="cpu")
    parser.add_argument("--out", default=None)
    cli = parser.parse_args(argv)
    if cli.threads:
        torch.set_num_threads(cli.threads)
    from transformers import AutoModelForCausalLM

    dense, tokenizer = load_smollm2()
    models = {"dense": dense.eval()}
    for folder in cli.pruned:
        name = os.path.basename(os.path.normpath(folder))
        models[name] = AutoModelForCausalLM.from_pretrained(folder).eval()
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    result = {"benchmark": "vtrans_generate", "torch_threads": torch.get_num_threads(), "config": vars(cli),
              "params": params, "loadavg_before": list(os.getloadavg()), "batches": {}}
    began = time.perf_counter()
    for batch in cli.batch_sizes:
        samples = {name: [] for name in models}
        for _ in range(cli.rounds):
            for name, model in models.items():
                out = generation_throughput(model, tokenizer, PROMPTS, max_new_tokens=cli.gen_tokens,
                                            batch_size=batch)
                samples[name].append(out["tokens_per_second"])
        medians = {name: statistics.median(values) for name, values in samples.items()}
        result["batches"][str(batch)] = {
            "tokens_per_second": samples, "median_tokens_per_second": medians,
            "ratio_to_dense": {name: medians[name] / medians["dense"] for name in models if name != "dense"},
        }
        print(f"batch {batch}: " + ", ".join(f"{n} {v:.1f} tok/s" for n, v in medians.items()) + " | ratio "
              + ", ".join(f"{n} {r:.3f}x" for n, r in result["batches"][str(batch)]["ratio_to_dense"].items()),
              flush=True)
    result["seconds"] = time.perf_counter() - began
    result["loadavg_after"] = list(os.getloadavg())
    out_path = cli.out or os.path.join(ROOT, "benchmarks", "results", f"vtrans_generate_{cli.tag}.json")
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    print(f"-> {out_path}")
    return result


if __name__ == "__main__":
    main()
