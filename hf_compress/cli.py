"""``hf-compress`` command line. ``hf-compress vtrans --help`` lists every option.

Options come from the same dataclasses the Python API uses (``HfArgumentParser``): flags, or one JSON /
YAML file (``hf-compress vtrans config.yaml``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field

logger = logging.getLogger("hf_compress")


@dataclass
class VTransScriptArguments:
    """What to prune and on which data (the pruning options live in ``VTransTrainingArguments``)."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Dense model to prune (default: the offline all-MiniLM-L6-v2)."}
    )
    teacher_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Dense model fine-tuned on the task. Default: fine-tune model_name_or_path first."},
    )
    dataset: str = field(
        default="sst2",
        metadata={"help": "'sst2' (offline copy), a local .csv/.tsv/.json/.jsonl train file, or a Hub dataset id."},
    )
    eval_file: str | None = field(default=None, metadata={"help": "Evaluation file when dataset is a local file."})
    text_column: str = field(default="sentence", metadata={"help": "Column holding the text."})
    label_column: str = field(default="label", metadata={"help": "Column holding the integer label."})
    max_length: int = field(default=64, metadata={"help": "Maximum tokens per example."})
    train_limit: int | None = field(default=None, metadata={"help": "Use only the first N training examples."})
    teacher_epochs: float = field(default=1.0, metadata={"help": "Epochs when the teacher has to be fine-tuned."})
    teacher_train_limit: int | None = field(
        default=4000, metadata={"help": "Training examples for fine-tuning the teacher (None: all)."}
    )
    teacher_learning_rate: float = field(default=1e-4, metadata={"help": "Learning rate of the teacher fine-tune."})
    latency_batch_size: int = field(default=32, metadata={"help": "Batch size of the latency comparison."})


# defaults of the main job: a few minutes on a 2-core CPU
_VTRANS_DEFAULTS = {
    "output_dir": "outputs/vtrans-minilm-sst2",
    "variant": "faster",
    "per_device_train_batch_size": "32",
    "per_device_eval_batch_size": "128",
    "learning_rate": "5e-5",
    "num_train_epochs": "3",
    "logging_steps": "10",
    "save_strategy": "no",
    "report_to": "none",
    "seed": "0",
}


def with_defaults(argv: list[str], defaults: dict[str, str]) -> list[str]:
    """``argv`` preceded by ``--key value`` for every default the user did not pass (theirs win)."""
    given = {a.split("=")[0][2:] for a in argv if a.startswith("--")}
    return [item for key, value in defaults.items() if key not in given for item in (f"--{key}", value)] + argv


def parse_dataclass_args(dataclass_types: tuple, argv: list[str], prog: str, defaults: dict[str, str]):
    """Flags (with ``defaults``) or one JSON / YAML file, parsed into the dataclasses like the HF example scripts."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(dataclass_types, prog=prog)
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        if not os.path.isfile(argv[0]):
            raise FileNotFoundError(f"Config file not found: {argv[0]}")
        parse = parser.parse_json_file if argv[0].endswith(".json") else parser.parse_yaml_file
        return parse(os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(args=with_defaults(argv, defaults))


def parse_vtrans_args(argv: list[str]):
    from trainers import VTransTrainingArguments

    defaults = dict(_VTRANS_DEFAULTS)
    given = {a.split("=")[0][2:] for a in argv if a.startswith("--")}
    if not given & {"target_sparsity", "target_params", "target_flops"}:
        defaults["target_sparsity"] = "0.5"
    return parse_dataclass_args((VTransScriptArguments, VTransTrainingArguments), argv, "hf-compress vtrans", defaults)


def run_vtrans(script, args) -> dict:
    """Fine-tune the teacher if needed, prune with VTrans, compare dense vs pruned; returns the summary."""
    import torch
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer, TrainingArguments

    from hf_compress.data import load_tokenizer, minilm_path
    from hf_compress.evaluation import accuracy, count_parameters, latency, latency_batch
    from hf_compress.tasks import load_text_classification
    from model_cards import render_vtrans_card
    from trainers import VTransTrainer

    model_path = script.model_name_or_path or minilm_path()
    tokenizer = load_tokenizer(script.teacher_name_or_path, model_path)
    train, test, num_labels = load_text_classification(script, tokenizer)
    collator = DataCollatorWithPadding(tokenizer)
    torch.manual_seed(args.seed)

    if script.teacher_name_or_path:
        teacher = AutoModelForSequenceClassification.from_pretrained(script.teacher_name_or_path)
    else:
        logger.info("Fine-tuning the dense teacher %s on %s", model_path, script.dataset)
        teacher = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=num_labels)
        teacher_train = train.shuffle(seed=args.seed)
        if script.teacher_train_limit:
            teacher_train = teacher_train.select(range(min(script.teacher_train_limit, len(teacher_train))))
        teacher_args = TrainingArguments(
            os.path.join(args.output_dir, "teacher"),
            per_device_train_batch_size=args.per_device_train_batch_size,
            learning_rate=script.teacher_learning_rate,
            num_train_epochs=script.teacher_epochs,
            warmup_steps=20,
            logging_steps=args.logging_steps,
            save_strategy="no",
            report_to=[],
            seed=args.seed,
            use_cpu=args.use_cpu,
            disable_tqdm=args.disable_tqdm,
        )
        Trainer(model=teacher, args=teacher_args, train_dataset=teacher_train, data_collator=collator).train()
        teacher.save_pretrained(os.path.join(args.output_dir, "teacher"))
        tokenizer.save_pretrained(os.path.join(args.output_dir, "teacher"))
    dense_accuracy = accuracy(teacher, test, collator)
    logger.info("Dense accuracy: %.4f", dense_accuracy)

    student = AutoModelForSequenceClassification.from_pretrained(
        script.teacher_name_or_path or os.path.join(args.output_dir, "teacher")
    )
    trainer = VTransTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=train, eval_dataset=test,
        data_collator=collator, processing_class=tokenizer,
    )
    trainer.train()
    pruned = trainer.materialize()
    batch = latency_batch(test, collator, script.latency_batch_size, seed=args.seed)
    dense_latency, pruned_latency = latency(teacher, batch), latency(pruned, batch)
    report = pruned.config.pruning_report
    summary = {
        "model": model_path,
        "dataset": script.dataset,
        "variant": args.variant,
        "budget": report["budget"],
        "dense_accuracy": dense_accuracy,
        "pruned_accuracy": accuracy(pruned, test, collator),
        "dense_params": count_parameters(teacher),
        "pruned_params": count_parameters(pruned),
        "layer_sparsity": report["layer_sparsity"],
        "total_sparsity": report["total_sparsity"],
        "dense_latency_s": dense_latency,
        "pruned_latency_s": pruned_latency,
        "latency_ratio": pruned_latency / dense_latency,
        "compression_seconds": report["compression_seconds"],
        "output_dir": args.output_dir,
    }
    if args.should_save:
        with open(os.path.join(args.output_dir, "vtrans_summary.json"), "w") as handle:
            json.dump(summary, handle, indent=2)
        render_vtrans_card(pruned.config, summary).save(os.path.join(args.output_dir, "README.md"))
    return summary


def _print_summary(summary: dict) -> None:
    print(
        "\n".join(
            [
                f"VTrans ({summary['variant']}) on {summary['dataset']}: {summary['budget']['description']}",
                f"  accuracy      dense {summary['dense_accuracy']:.4f}   pruned {summary['pruned_accuracy']:.4f}",
                f"  parameters    dense {summary['dense_params']:,}   pruned {summary['pruned_params']:,}"
                f"   (layer sparsity {summary['layer_sparsity']:.1%}, total {summary['total_sparsity']:.1%})",
                f"  latency       dense {summary['dense_latency_s'] * 1e3:.1f} ms   pruned "
                f"{summary['pruned_latency_s'] * 1e3:.1f} ms   (ratio {summary['latency_ratio']:.2f})",
                f"  compression   {summary['compression_seconds']:.0f} s",
                f"  saved to      {summary['output_dir']}  (AutoModelForSequenceClassification.from_pretrained)",
            ]
        )
    )


COMMANDS = {
    "vtrans": "prune a transformer with VTrans to a parameter / FLOPs budget",
    "push": "upload a saved model folder to the Hub (HF_ENDPOINT / HF_TOKEN respected): push DIR REPO [--new_repo]",
    "pull": "download a model repo into a folder: pull REPO [FILE ...] [--revision REV] [--local_dir DIR]",
    "ramen": "train a RAMEN encoder for extreme classification (graph-regularized), evaluate P@k / PSP@k, save a predictor",
    "nas": "DCA-NAS: search a cell under a device budget (params / flops / latency); derive, train, export; latency table (lut), look-up graph (lug)",
    "export": "export a searched DCA-NAS network to ONNX, validate it with onnxruntime and time it: export DIR --output OUT",
    "probe": "attention-probing report (special / current / rest per head, dense vs pruned): probe MODEL --output DIR",
}


def run_push(argv: list[str]) -> int:
    import argparse

    from .hub import push_folder

    parser = argparse.ArgumentParser(prog="hf-compress push", description=COMMANDS["push"])
    parser.add_argument("folder")
    parser.add_argument("repo_id")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--new_repo", action="store_true", help="fail if the repo exists (default: commit on top)")
    parser.add_argument("--commit_message", default="Upload with hf-compress")
    args = parser.parse_args(argv)
    result = push_folder(args.folder, args.repo_id, new_repo=args.new_repo, private=args.private,
                         commit_message=args.commit_message)
    if not result.created:
        print(f"{args.repo_id} already exists: added a commit on top of its main branch")
    print(f"pushed {args.folder} to {args.repo_id} at commit {result.commit}")
    return 0


def run_pull(argv: list[str]) -> int:
    import argparse

    from .hub import pull_repo

    parser = argparse.ArgumentParser(prog="hf-compress pull", description=COMMANDS["pull"])
    parser.add_argument("repo_id")
    parser.add_argument("files", nargs="*", help="only these files (default: the whole repo)")
    parser.add_argument("--revision", default=None)
    parser.add_argument("--local_dir", default=None)
    args = parser.parse_args(argv)
    print(pull_repo(args.repo_id, args.revision, args.local_dir, filenames=args.files or None))
    return 0


def run_probe(argv: list[str]) -> int:
    import argparse

    from model_cards.probe_report import write_probe_report

    parser = argparse.ArgumentParser(prog="hf-compress probe", description=COMMANDS["probe"])
    parser.add_argument("model", help="model folder (pruned or dense) or Hub id")
    parser.add_argument("--data", default="sst2", help="'sst2' or a .txt/.csv/.tsv/.json/.jsonl file of sentences")
    parser.add_argument("--output", required=True, help="folder for probe_report.md and its figures")
    parser.add_argument("--dense", default=None, help="dense model the pruned one came from (default: from its config)")
    parser.add_argument("--max_examples", type=int, default=64, help="sentences to probe")
    parser.add_argument("--max_length", type=int, default=64, help="maximum tokens per sentence")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--text_column", default="sentence", help="text column of a .csv/.tsv/.json(l) file")
    args = parser.parse_args(argv)
    result = write_probe_report(
        args.model, args.output, data=args.data, dense_path=args.dense, max_examples=args.max_examples,
        max_length=args.max_length, batch_size=args.batch_size, text_column=args.text_column,
    )
    rho = "" if result.level is None else f" (Spearman, {result.level} level: {result.spearman})"
    print(f"wrote {result.path}{rho}")
    return 0


def _leave_process_group(wait: bool) -> None:
    """Under ``accelerate launch``, end the run together: a worker that exits while another is still saving
    tears its gloo threads down mid-connection and aborts (SIGABRT), failing the whole launch."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if wait:  # not after an error: the other processes may never reach the barrier
            dist.barrier()
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: hf-compress <command> [options]\n\ncommands:")
        for name, text in COMMANDS.items():
            print(f"  {name:10s} {text}")
        print("\n'hf-compress <command> --help' lists a command's options.")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import hf_compress  # noqa: F401  (registers the Auto classes)
    from hf_compress.hub import HubError

    finished = False
    try:
        code = _dispatch(argv[0], argv[1:])
        finished = True
        return code
    except (FileNotFoundError, ValueError) as err:  # bad input: say what and how to fix, no traceback
        print(f"hf-compress {argv[0]}: error: {err}", file=sys.stderr)
        return 2
    except HubError as err:  # the Hub or the network failed (or the folder to push is unfit): the same, one line
        print(f"hf-compress {argv[0]}: error: {err}", file=sys.stderr)
        return 1
    finally:
        _leave_process_group(wait=finished)


def _dispatch(command: str, argv: list[str]) -> int:
    if command == "push":
        return run_push(argv)
    if command == "pull":
        return run_pull(argv)
    if command == "probe":
        return run_probe(argv)
    if command == "nas":
        from .nas.cli import run_nas

        return run_nas(argv)
    if command == "export":
        from .nas.export import main as export_main

        return export_main(argv)
    if command == "ramen":
        from .ramen.cli import print_summary, run_ramen

        print_summary(run_ramen(argv))
        return 0
    script, args = parse_vtrans_args(argv)
    _print_summary(run_vtrans(script, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
