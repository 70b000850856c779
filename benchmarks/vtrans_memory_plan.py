"""The big-model path of Faster-VTrans: the memory plan of LLaMA-2-7B (meta device) and SmolLM2-135M measured vs planned.

Part 1 builds LLaMA-2-7B from a hand-written ``LlamaConfig`` on the meta device (no weights, no download) and
writes :func:`hf_compress.vtrans.memory.estimate_memory`'s plan per phase, for a grid of batch / sequence
length / checkpointing / teacher / hidden-distillation settings, with whether each phase fits an 80 GB and a
24 GB GPU.

Part 2 runs the real SmolLM2-135M-Instruct (bf16 weights, fp32 gates) through a few ``VTransTrainer``
``variant="faster"`` steps on WikiText-2 valid blocks, with the shared-weights teacher (the student with its
gates off), and measures the peak of every phase (CPU: process RSS via the kernel's high-water mark; CUDA:
``max_memory_allocated``) next to the estimate. Each configuration runs in a fresh process so one run's
allocator leftovers do not inflate the next.

    python benchmarks/vtrans_memory_plan.py                      # both parts -> results/vtrans_memory_plan.json
    python benchmarks/vtrans_memory_plan.py --skip_smollm2       # the 7B plan only (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import LlamaConfig  # noqa: E402

from hf_compress.vtrans.memory import GB, GPU_CAPACITIES, estimate_memory, format_memory_plan  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "results", "vtrans_memory_plan.json")


def llama2_7b_config() -> LlamaConfig:
    """LLaMA-2-7B's published architecture, written by hand (nothing is fetched)."""
    return LlamaConfig(
        vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False,
    )


def plan_7b() -> dict:
    config = llama2_7b_config()
    headline = {gc: estimate_memory(config, gradient_checkpointing=gc) for gc in (True, False)}
    grid = []
    for batch, seq in ((1, 512), (4, 512), (8, 512), (1, 2048), (4, 2048)):
        for gc in (True, False):
            for teacher in ("shared", "copy"):
                for hidden in ("pairwise", "selected"):
                    plan = estimate_memory(config, batch_size=batch, seq_len=seq, gradient_checkpointing=gc,
                                           teacher=teacher, hidden_distill=hidden)
                    grid.append({
                        "batch_size": batch, "seq_len": seq, "gradient_checkpointing": gc, "teacher": teacher,
                        "hidden_distill": hidden,
                        "phase_gb": {k: round(v["bytes"] / GB, 3) for k, v in plan["phases"].items()},
                        "fits": plan["fits"],
                    })
    h = headline[True]
    return {
        "config": {k: getattr(config, k) for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                                    "num_attention_heads", "num_key_value_heads", "tie_word_embeddings")},
        "params": h["model"]["params"],
        "params_by_part": h["model"]["params_by_part"],
        "weights_bf16_bytes": h["phases"]["load"]["items"][0]["bytes"],
        "gates": h["model"]["gates"],
        "gpu_capacities_bytes": GPU_CAPACITIES,
        "plans": {"gradient_checkpointing": h, "no_gradient_checkpointing": headline[False]},
        "tables": {"gradient_checkpointing": format_memory_plan(h), "no_gradient_checkpointing": format_memory_plan(headline[False])},
        "grid": grid,
    }


# ------------------------------------------------------------------------------------------------ SmolLM2, measured


def run_smollm2(gradient_checkpointing: bool, hidden_weight: float, steps: int, batch: int, seq: int, out_dir: str,
                threads: int = 1, device: str = "cpu") -> dict:
    """One measured Faster-VTrans run of SmolLM2-135M (bf16 weights, fp32 gates); runs in its own process.

    On ``device="cuda"`` the weights are moved to the GPU inside the load phase and the measured figure per phase
    is ``torch.cuda.max_memory_allocated`` (GPU tensors, what the estimate predicts); on the CPU it is the torch
    CPU allocator's peak (profiler) and the process RSS.
    """
    import warnings

    from transformers import TrainerCallback

    from hf_compress.lm import lm_blocks, load_smollm2, load_wikitext2
    from hf_compress.vtrans.memory import MemoryMonitor, SharedWeightsTeacher, resident_tensor_bytes
    from hf_compress.lm import smollm2_path
    from trainers import VTransTrainer, VTransTrainingArguments

    # one intra-op thread: on a small shared CPU, two busy threads made a SmolLM2 step ~75x slower
    torch.set_num_threads(threads)
    checkpoint = os.path.join(smollm2_path(), "model.safetensors")

    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    on_gpu = device == "cuda"
    with MemoryMonitor(torch_cpu=not on_gpu, cuda=on_gpu) as monitor:
        monitor.mark("load")
        model, tokenizer = load_smollm2(dtype=torch.bfloat16)
        if on_gpu:
            model.to("cuda")
        resident = {"load": resident_tensor_bytes(model)}  # threaded loading: counted, not profiled
        monitor.mark("setup")
        data = lm_blocks(tokenizer, load_wikitext2("valid"), block_size=seq, limit=batch * steps)
        args = VTransTrainingArguments(
            output_dir=out_dir, variant="faster", target_sparsity=0.3, data_fraction=1.0, max_steps=steps,
            per_device_train_batch_size=batch, activation_checkpointing=gradient_checkpointing, finetune_epochs=0,
            distill_hidden_weight=hidden_weight, learning_rate=1e-3, logging_steps=1, save_strategy="no",
            report_to=[], use_cpu=not on_gpu, disable_tqdm=True, seed=0, dataloader_num_workers=0,
        )
        step_seconds: list[float] = []
        gates_with_grads: list[int] = []
        frozen_grads: list[int] = []

        class Marks(TrainerCallback):
            def on_train_begin(self, *a, **k):
                resident["prune_step"] = resident_tensor_bytes(model, trainer.optimizer)
                monitor.mark("prune_step")

            def on_step_begin(self, *a, **k):
                self.started = time.perf_counter()

            def on_pre_optimizer_step(self, args, state, control, model=None, **k):
                gates_with_grads.append(sum(1 for n, p in model.named_parameters()
                                            if n.startswith("vtrans_gates.groups.") and p.grad is not None
                                            and bool(p.grad.abs().sum() > 0)))
                frozen_grads.append(sum(1 for n, p in model.named_parameters()
                                        if not n.startswith("vtrans_gates.") and p.grad is not None))

            def on_step_end(self, *a, **k):
                step_seconds.append(time.perf_counter() - self.started)

            def on_train_end(self, *a, **k):
                resident["materialize"] = resident_tensor_bytes(model, trainer.optimizer)
                monitor.mark("materialize")

        trainer = VTransTrainer(model=model, teacher_model=SharedWeightsTeacher(model), args=args, train_dataset=data,
                                callbacks=[Marks()])
        trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    grad_norms = [entry["grad_norm"] for entry in trainer.state.log_history if "grad_norm" in entry]
    plan = estimate_memory(model.config, dtype=torch.bfloat16, batch_size=batch, seq_len=seq,
                           gradient_checkpointing=gradient_checkpointing, teacher="shared",
                           hidden_distill="selected" if hidden_weight > 0 else "none", finetune=False, device=device,
                           target_sparsity=0.3)
    peaks = monitor.peaks()
    report = trainer.materialize().config.pruning_report
    return {
        "gradient_checkpointing": gradient_checkpointing, "distill_hidden_weight": hidden_weight,
        "batch_size": batch, "seq_len": seq, "steps": steps, "threads": threads,
        "checkpoint_file_bytes": os.path.getsize(checkpoint),
        "device": torch.cuda.get_device_name(0) if on_gpu else "cpu",
        "step_seconds": step_seconds, "losses": losses,
        "grad_norms_before_clipping": grad_norms, "gate_tensors_with_nonzero_grads": gates_with_grads,
        "frozen_weights_with_grads": max(frozen_grads, default=0),
        "layer_sparsity": report["layer_sparsity"], "params_pruned": report["params_pruned"]["total"],
        "measured": peaks, "resident_tensor_bytes_at_phase_start": resident, "plan": plan,
        "table": comparison_rows(plan, peaks, resident) if not on_gpu else cuda_comparison_rows(plan, peaks),
    }


def comparison_rows(plan: dict, peaks: dict, resident: dict) -> list[dict]:
    """Estimate vs measured per phase. Torch CPU tensors = tensors resident at the phase start (counted) + the
    allocator's peak above that start (profiled); for load, the tensors counted once loading is done."""
    rows = []
    for phase in ("load", "prune_step", "materialize"):
        if phase not in peaks or phase not in plan["phases"]:
            continue
        est = plan["phases"][phase]["bytes"]
        if phase == "load":
            tensors = resident["load"]
        else:
            tensors = resident[phase] + peaks[phase]["torch_cpu_peak_above_start"]
        rss = peaks[phase]["rss_peak_delta"]
        rows.append({"phase": phase, "estimate_bytes": est, "measured_torch_cpu_bytes": tensors,
                     "measured_rss_delta_bytes": rss, "torch_cpu_over_estimate": round(tensors / est, 3),
                     "rss_over_estimate": round(rss / est, 3)})
    return rows


def cuda_comparison_rows(plan: dict, peaks: dict) -> list[dict]:
    """Estimate vs ``max_memory_allocated`` per phase (absolute: nothing was on the GPU before the load)."""
    rows = []
    for phase in ("load", "prune_step", "materialize"):
        if phase not in peaks or phase not in plan["phases"]:
            continue
        est, measured = plan["phases"][phase]["bytes"], peaks[phase]["cuda_peak_allocated"]
        rows.append({"phase": phase, "estimate_bytes": est, "measured_cuda_bytes": measured,
                     "cuda_over_estimate": round(measured / est, 3)})
    return rows


def format_rows(run: dict) -> str:
    lines = [f"SmolLM2-135M bf16, batch {run['batch_size']} x seq {run['seq_len']}, checkpointing "
             f"{'on' if run['gradient_checkpointing'] else 'off'}, hidden distillation weight {run['distill_hidden_weight']}, "
             f"{run['steps']} steps ({', '.join(f'{s:.2f}' for s in run['step_seconds'])} s, "
             + (f"{run['threads']} thread)" if run.get("device", "cpu") == "cpu" else f"{run['device']})")]
    if run.get("device", "cpu") != "cpu":
        lines.append(f"    {'phase':<12}{'estimate':>10}{'GPU tensors (max allocated)':>29}{'ratio':>7}")
        for row in run["table"]:
            lines.append(f"    {row['phase']:<12}{row['estimate_bytes'] / 1e6:>7.0f} MB"
                         f"{row['measured_cuda_bytes'] / 1e6:>26.0f} MB{row['cuda_over_estimate']:>7.2f}")
        return "\n".join(lines)
    lines.append(f"    {'phase':<12}{'estimate':>10}{'torch CPU tensors':>19}{'ratio':>7}{'process RSS':>13}{'ratio':>7}")
    for row in run["table"]:
        tensors = row["measured_torch_cpu_bytes"]
        lines.append(
            f"    {row['phase']:<12}{row['estimate_bytes'] / 1e6:>7.0f} MB"
            f"{tensors / 1e6:>16.0f} MB{row['torch_cpu_over_estimate']:>7.2f}"
            f"{row['measured_rss_delta_bytes'] / 1e6:>10.0f} MB{row['rss_over_estimate']:>7.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads of the SmolLM2 runs")
    parser.add_argument("--skip_smollm2", action="store_true")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the SmolLM2 runs train")
    parser.add_argument("--single", default=None, help=argparse.SUPPRESS)  # internal: 'gc,hidden_weight,json_out'
    args = parser.parse_args()

    if args.single:
        gc, hidden, json_out = args.single.split(",")
        with tempfile.TemporaryDirectory() as tmp:
            run = run_smollm2(gc == "1", float(hidden), args.steps, args.batch, args.seq, tmp, args.threads, args.device)
        with open(json_out, "w") as handle:
            json.dump(run, handle)
        return

    started = time.perf_counter()
    result = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "llama2_7b": plan_7b(),
    }
    print(result["llama2_7b"]["tables"]["gradient_checkpointing"], "\n")
    print(result["llama2_7b"]["tables"]["no_gradient_checkpointing"], "\n")

    def write() -> None:  # after every part, so a run cut short keeps what it measured
        result["seconds"] = time.perf_counter() - started
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=1)

    write()
    if not args.skip_smollm2:
        runs: list[dict] = []
        result["smollm2_135m"] = {
            "what_is_measured": {
                "torch_cpu": "peak bytes held by torch's CPU allocator (running sum of the profiler's memory events) "
                             "above what was held before loading the model: CPU tensors only, what the estimate predicts",
                "rss": "peak process RSS (kernel VmHWM, reset per phase) minus RSS before loading the model: everything "
                       "the run touched (tensors, Python objects, the mmap of the fp32 safetensors file while it is "
                       "read, allocator leftovers)",
                "cuda": "with --device cuda: torch.cuda.max_memory_allocated per phase (GPU tensors; the caching "
                        "allocator's reserve and the CUDA context are not counted)",
            },
            "device": args.device,
            "runs": runs,
            "tables": [],
        }
        for gc, hidden in (("1", "0.1"), ("0", "0.1"), ("1", "0")):
            with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
                path = tmp.name
            try:
                cmd = [sys.executable, os.path.abspath(__file__), "--steps", str(args.steps), "--batch", str(args.batch),
                       "--seq", str(args.seq), "--threads", str(args.threads), "--device", args.device,
                       "--single", f"{gc},{hidden},{path}"]
                subprocess.run(cmd, check=True)
                with open(path) as handle:
                    run = json.load(handle)
            finally:
                os.unlink(path)
            print(format_rows(run), "\n")
            runs.append(run)
            result["smollm2_135m"]["tables"].append(format_rows(run))
            write()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
