"""Perplexity on the *whole* WikiText-2 test set of the dense SmolLM2 and of saved pruned models (+ LoRA).

``benchmarks/vtrans_smollm2.py`` scores a prefix of the test set on a CPU to keep its run short; this script
re-scores the models such a run saved (``outputs/bench_smollm2_<tag>/vtrans-<s>`` and the LoRA adapter in
``lora-vtrans-<s>/adapter``, merged here) and the dense model on every test token, same windows for all.

    python benchmarks/vtrans_smollm2_eval.py outputs/bench_smollm2_cpu_calib128/vtrans-0.2 \\
        --adapters outputs/bench_smollm2_cpu_calib128/lora-vtrans-0.2/adapter --tag cpu_calib128_full
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import hf_compress  # noqa: E402,F401  (registers the pruned-model Auto classes)
from hf_compress.lm import load_smollm2, load_wikitext2, perplexity  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pruned", nargs="+", help="pruned model folders (AutoModelForCausalLM)")
    parser.add_argument("--adapters", nargs="*", default=[],
                        help="one LoRA adapter folder per pruned model ('-' for none), merged before scoring")
    parser.add_argument("--eval_length", type=int, default=512)
    parser.add_argument("--eval_stride", type=int, default=512)
    parser.add_argument("--eval_tokens", type=int, default=0, help="score only this prefix (0: every test token)")
    parser.add_argument("--skip_before_lora", action="store_true", help="score only the merged model of an adapter")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--tag", default="cpu_full")
    parser.add_argument("--out", default=None)
    cli = parser.parse_args(argv)
    if cli.adapters and len(cli.adapters) != len(cli.pruned):
        parser.error(f"--adapters needs one entry per pruned model ({len(cli.pruned)}), '-' for none.")
    if cli.threads:
        torch.set_num_threads(cli.threads)
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    dense, tokenizer = load_smollm2()
    ids = torch.tensor(tokenizer(load_wikitext2("test"))["input_ids"])
    if cli.eval_tokens:
        ids = ids[: cli.eval_tokens]
    out_path = cli.out or os.path.join(ROOT, "benchmarks", "results", f"vtrans_smollm2_eval_{cli.tag}.json")
    result = {"benchmark": "vtrans_smollm2_eval", "config": vars(cli), "test_tokens": int(ids.numel()),
              "torch_threads": torch.get_num_threads(), "models": {}}

    def score(name: str, model) -> None:
        began = time.perf_counter()
        ppl = perplexity(model.eval(), ids, max_length=cli.eval_length, stride=cli.eval_stride, progress=False)
        entry = {**ppl, "params": sum(p.numel() for p in model.parameters()), "seconds": time.perf_counter() - began}
        if "dense" in result["models"]:
            entry["x_dense"] = ppl["perplexity"] / result["models"]["dense"]["perplexity"]
        result["models"][name] = entry
        print(f"{name}: perplexity {ppl['perplexity']:.3f} over {ppl['tokens']} tokens"
              + (f" ({entry['x_dense']:.3f}x dense)" if "x_dense" in entry else "")
              + f", {entry['seconds']:.0f} s", flush=True)
        os.makedirs(os.path.dirname(out_path), exist_ok=True)
        with open(out_path, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)

    score("dense", dense)
    for i, folder in enumerate(cli.pruned):
        name = os.path.basename(os.path.normpath(folder))
        pruned = AutoModelForCausalLM.from_pretrained(folder)
        adapter = cli.adapters[i] if cli.adapters else "-"
        if adapter == "-":
            score(name, pruned)
            continue
        if not cli.skip_before_lora:
            score(name + " (before LoRA)", pruned)
        merged = PeftModel.from_pretrained(pruned, adapter).merge_and_unload()
        score(name + " + LoRA", merged)
    print(f"-> {out_path}")
    return result


if __name__ == "__main__":
    main()
