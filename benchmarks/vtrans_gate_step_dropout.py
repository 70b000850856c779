"""Seconds per Faster-VTrans gate step with the model's dropout on and off, interleaved in one process.

Across separate ``vtrans_sst2.py`` runs the machine's speed drifts by 10-20%, which hides a per-step difference of
this size, so both settings run here in turn (on, off, on, off, ...), each a whole ``Trainer`` gate phase on the same
slice of SST-2 (the teacher runs in the first epoch, then comes from its cache), fine-tune skipped.

    python benchmarks/vtrans_gate_step_dropout.py --teacher outputs/bench-cpufull/teacher
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import warnings

import torch
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

import hf_compress  # noqa: F401
from hf_compress.data import load_sst2, load_tokenizer, tokenize
from trainers import VTransTrainer, VTransTrainingArguments

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def gate_phase_seconds_per_step(teacher_dir: str, teacher, train, collator, dropout: bool, cli) -> float:
    torch.manual_seed(cli.seed)
    student = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    args = VTransTrainingArguments(
        output_dir=os.path.join("outputs", "bench-gate-step-dropout"), target_sparsity=cli.sparsity, variant="faster",
        num_train_epochs=cli.epochs, per_device_train_batch_size=cli.batch_size, data_fraction=1.0, finetune_epochs=0,
        gate_phase_dropout=dropout, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
        logging_steps=10_000, seed=cli.seed,
    )
    trainer = VTransTrainer(model=student, teacher_model=teacher, args=args, train_dataset=train, data_collator=collator)
    output = super(VTransTrainer, trainer).train()  # the gate phase only: no materialization, no fine-tune
    return output.metrics["train_runtime"] / output.global_step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True, help="fine-tuned dense model folder (vtrans_sst2.py --tag X writes one)")
    p.add_argument("--sentences", type=int, default=640)
    p.add_argument("--epochs", type=float, default=3)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="cpu")
    cli = p.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    tokenizer = load_tokenizer(cli.teacher)
    collator = DataCollatorWithPadding(tokenizer)
    train = tokenize(load_sst2("train").shuffle(seed=cli.seed).select(range(cli.sentences)), tokenizer)
    teacher = AutoModelForSequenceClassification.from_pretrained(cli.teacher).eval()
    seconds: dict[str, list[float]] = {"dropout_on": [], "dropout_off": []}
    for _ in range(cli.rounds):
        for dropout in (True, False):
            value = gate_phase_seconds_per_step(cli.teacher, teacher, train, collator, dropout, cli)
            seconds["dropout_on" if dropout else "dropout_off"].append(value)
            print(f"dropout {'on ' if dropout else 'off'}: {value:.3f} s per gate step", flush=True)
    ratio = statistics.median(seconds["dropout_off"]) / statistics.median(seconds["dropout_on"])
    print(f"off / on: {ratio:.3f}")
    result = {"benchmark": "vtrans_gate_step_dropout", "config": vars(cli), "torch_threads": torch.get_num_threads(),
              "seconds_per_step": seconds, "off_over_on_median": ratio}
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"vtrans_gate_step_dropout_{cli.tag}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
