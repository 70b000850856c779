"""Faster-VTrans vs structured L2-norm pruning on SmolLM2-135M, WikiText-2 perplexity, before and after LoRA.

Everything is measured side by side in one run on one machine: the dense model's perplexity on WikiText-2
test, then for each sparsity (fraction of the transformer layers' parameters removed) both methods prune a
copy of the dense model to the same budget and get the same LoRA recovery (same data, steps and losses):

- ``vtrans``: Faster-VTrans, only the VIB gates (and the Lagrange multipliers) train on WikiText-2 valid
  blocks, with logits-KL + hidden-state distillation from the dense model; then materialize;
- ``magnitude`` (baseline): per-unit L2 norms of the same structures, removed lowest first to the budget.

Printed and written to ``benchmarks/results/vtrans_smollm2_<tag>.json``: perplexity before / after LoRA, the
ratio to dense, pruning wall time, generate() tokens/s ratio (pruned / dense, same prompts, greedy, one run),
peak memory (process RSS on CPU, ``max_memory_allocated`` on CUDA).

    python benchmarks/vtrans_smollm2.py --tag cpu                       # CPU-sized run (subset of test)
    python benchmarks/vtrans_smollm2.py --eval_tokens 0 --tag gpu       # full WikiText-2 test
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import hf_compress  # noqa: E402,F401
from hf_compress.lm import generation_throughput, lm_blocks, load_smollm2, load_wikitext2, perplexity  # noqa: E402
from hf_compress.vtrans import dense_shape, resolve_budget  # noqa: E402
from hf_compress.vtrans.baselines import magnitude_importance, prune_by_scores  # noqa: E402
from hf_compress.vtrans.recovery import recover_with_lora  # noqa: E402
from trainers import LoRARecoveryArguments, VTransTrainer, VTransTrainingArguments  # noqa: E402

PROMPTS = [
    "The history of the Roman Empire",
    "In computer science, a hash table is",
    "The capital of France is",
    "Photosynthesis is the process by which",
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.2, 0.3, 0.5])
    p.add_argument("--methods", nargs="+", default=["vtrans", "magnitude"])
    p.add_argument("--block_size", type=int, default=256, help="tokens per calibration / recovery block")
    p.add_argument("--calib_blocks", type=int, default=128, help="WikiText-2 valid blocks for the gates")
    p.add_argument("--prune_epochs", type=float, default=2.0)
    p.add_argument("--lora_blocks", type=int, default=128, help="WikiText-2 valid blocks for LoRA recovery")
    p.add_argument("--lora_epochs", type=float, default=1.0)
    p.add_argument("--lora_lr", type=float, default=2e-4)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--eval_tokens", type=int, default=16384, help="WikiText-2 test tokens scored (0: all)")
    p.add_argument("--eval_length", type=int, default=512)
    p.add_argument("--eval_stride", type=int, default=512)
    p.add_argument("--gen_tokens", type=int, default=48)
    p.add_argument("--uniform", action="store_true", help="uniform layers (native LlamaConfig)")
    p.add_argument("--round_to", type=int, default=None)
    p.add_argument("--vtrans_overrides", default="{}", help="JSON of extra VTransTrainingArguments")
    p.add_argument("--dense_lora", action="store_true",
                   help="also give the dense model the same LoRA recovery (same data, steps, losses) and report every "
                        "pruned perplexity against it too: LoRA on WikiText-2 valid adapts to the domain as well as "
                        "repairing the pruning, and this reference separates the two")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--tag", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv=None) -> dict:
    cli = parse_args(argv)
    torch.manual_seed(cli.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, cli.dtype)
    work = os.path.join("outputs", f"bench_smollm2_{cli.tag}")
    dense, tokenizer = load_smollm2(dtype=dtype)
    dense.to(device).eval()
    calib = lm_blocks(tokenizer, load_wikitext2("valid"), cli.block_size, limit=cli.calib_blocks)
    recovery = lm_blocks(tokenizer, load_wikitext2("valid"), cli.block_size, limit=cli.lora_blocks)
    test_ids = torch.tensor(tokenizer(load_wikitext2("test"))["input_ids"])
    if cli.eval_tokens:
        test_ids = test_ids[: cli.eval_tokens]

    def ppl(model) -> float:
        return perplexity(model, test_ids, max_length=cli.eval_length, stride=cli.eval_stride, device=device,
                          progress=False)["perplexity"]

    def throughput(model) -> float:
        return generation_throughput(model, tokenizer, PROMPTS, max_new_tokens=cli.gen_tokens)["tokens_per_second"]

    common = dict(per_device_train_batch_size=cli.batch_size, save_strategy="no", report_to=[], seed=cli.seed,
                  logging_steps=10, disable_tqdm=True, use_cpu=device.type == "cpu", bf16=dtype == torch.bfloat16)
    result = {
        "benchmark": "vtrans_smollm2", "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(), "config": vars(cli), "eval_tokens": int(test_ids.numel()),
        "rows": [],
    }
    began = time.perf_counter()
    dense_ppl = ppl(dense)
    dense_tps = throughput(dense)
    result["dense"] = {"perplexity": dense_ppl, "tokens_per_second": dense_tps,
                       "params": sum(p.numel() for p in dense.parameters()), "eval_seconds": time.perf_counter() - began,
                       "peak_memory_mb": peak_memory_mb(device)}
    print(f"dense: perplexity {dense_ppl:.2f}, generate {dense_tps:.1f} tokens/s", flush=True)

    def lora_recovery(model, name: str):
        """The same LoRA recovery for every model (same data, steps, losses, teacher); the merged model."""
        lora_args = LoRARecoveryArguments(output_dir=os.path.join(work, f"lora-{name}"),
                                          num_train_epochs=cli.lora_epochs, learning_rate=cli.lora_lr, **common)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            merged, _ = recover_with_lora(model, dense, recovery, lora_args)
        return merged.to(device).eval()

    dense_lora_ppl = None
    if cli.dense_lora:
        began = time.perf_counter()
        copy, _ = load_smollm2(dtype=dtype)
        adapted = lora_recovery(copy.to(device), "dense")
        dense_lora_ppl = ppl(adapted)
        result["dense_lora"] = {"perplexity": dense_lora_ppl, "ratio_to_dense": dense_lora_ppl / dense_ppl,
                                "seconds": time.perf_counter() - began}
        print(f"dense + the same LoRA recovery: perplexity {dense_lora_ppl:.2f}", flush=True)
        del copy, adapted

    for sparsity in cli.sparsities:
        for method in cli.methods:
            torch.manual_seed(cli.seed)
            student, _ = load_smollm2(dtype=dtype)
            student.to(device)
            began = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if method == "vtrans":
                    args = VTransTrainingArguments(
                        output_dir=os.path.join(work, f"vtrans-{sparsity}"), target_sparsity=sparsity, variant="faster",
                        data_fraction=1.0, finetune_epochs=0, num_train_epochs=cli.prune_epochs,
                        uniform=cli.uniform, round_to=cli.round_to, **common, **json.loads(cli.vtrans_overrides),
                    )
                    trainer = VTransTrainer(model=student, teacher_model=dense, args=args, train_dataset=calib)
                    trainer.train()
                    pruned = trainer.materialize()
                else:
                    budget = resolve_budget(dense_shape(student), target_sparsity=sparsity, min_hidden=cli.round_to or 1)
                    pruned = prune_by_scores(student, magnitude_importance(student), budget, round_to=cli.round_to,
                                             uniform=cli.uniform)
            prune_seconds = time.perf_counter() - began
            pruned.to(device).eval()
            report = pruned.config.pruning_report
            before = ppl(pruned)
            began = time.perf_counter()
            merged = lora_recovery(pruned, f"{method}-{sparsity}")
            lora_seconds = time.perf_counter() - began
            after = ppl(merged)
            tps = throughput(merged)
            row = {
                "method": method, "target_sparsity": sparsity,
                "layer_sparsity": report["layer_sparsity"], "total_sparsity": report["total_sparsity"],
                "params": sum(p.numel() for p in merged.parameters()),
                "hidden_size": report["hidden_size"], "num_heads": report["num_heads"],
                "num_kv_heads": report["num_kv_heads"], "intermediate_sizes": report["intermediate_sizes"],
                "perplexity_before_lora": before, "perplexity_after_lora": after,
                "ppl_ratio_before_lora": before / dense_ppl, "ppl_ratio_after_lora": after / dense_ppl,
                "ppl_ratio_after_lora_vs_dense_lora": after / dense_lora_ppl if dense_lora_ppl else None,
                "prune_seconds": prune_seconds, "lora_seconds": lora_seconds,
                "tokens_per_second": tps, "throughput_ratio": tps / dense_tps,
                "peak_memory_mb": peak_memory_mb(device),
            }
            result["rows"].append(row)
            print(
                f"{sparsity:.0%} {method:9s}: ppl {before:8.2f} -> {after:7.2f} after LoRA ({after / dense_ppl:.2f}x dense"
                + (f", {after / dense_lora_ppl:.2f}x dense + LoRA" if dense_lora_ppl else "") + "), "
                f"layer sparsity {row['layer_sparsity']:.3f}, prune {prune_seconds:.0f} s, "
                f"generate {row['throughput_ratio']:.2f}x dense", flush=True,
            )
            out = cli.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"vtrans_smollm2_{cli.tag}.json")
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with open(out, "w") as f:  # rewritten after every row: a cut-short run keeps what it measured
                json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
