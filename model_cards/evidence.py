"""The run's evidence for a card: ``EvalResult`` metrics, hardware and the command, never typed-in numbers."""

from __future__ import annotations

import math
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from huggingface_hub import EvalResult

# offline dataset names -> (Hub dataset type, config, display name, split); SST-2 "test" here is GLUE validation
TASK_NAMES = {
    "text-classification": "Text Classification",
    "token-classification": "Token Classification",
    "text-generation": "Text Generation",
}
KNOWN_DATASETS = {
    "sst2": ("nyu-mll/glue", "sst2", "GLUE SST-2", "validation"),
    "wikitext2": ("Salesforce/wikitext", "wikitext-2-v1", "WikiText-2", "test"),
}


def dataset_identity(dataset: str) -> tuple[str, str | None, str, str | None]:
    """(type, config, name, split) of ``dataset`` as the Hub's model-index names it."""
    if dataset in KNOWN_DATASETS:
        return KNOWN_DATASETS[dataset]
    if os.path.splitext(dataset)[1]:  # a local file: name it, there is no Hub id
        return Path(dataset).stem, None, Path(dataset).name, None
    return dataset, None, dataset, None


def eval_results_from_summary(summary: dict, task_type: str = "text-classification") -> list[EvalResult]:
    """The pruned model's measured accuracy as ``EvalResult``s (empty when the run did not evaluate).

    Raises when the summary holds a partial or non-numeric evaluation, so a card never shows a metric
    without its value.
    """
    if "pruned_accuracy" not in summary and "dense_accuracy" not in summary:
        return []
    value = summary.get("pruned_accuracy")
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(
            f"The run summary has no usable 'pruned_accuracy' (got {value!r}); evaluate the pruned model and put "
            "the number in the summary, or drop the evaluation keys to render a card without metrics."
        )
    dataset = str(summary.get("dataset") or "eval set")
    dtype, config, name, split = dataset_identity(dataset)
    return [
        EvalResult(
            task_type=task_type, task_name=TASK_NAMES.get(task_type), dataset_type=dtype, dataset_name=name,
            dataset_config=config, dataset_split=split, metric_type="accuracy", metric_name="Accuracy",
            metric_value=float(value), verified=False,  # self-reported by the run, not verified by the Hub
        )
    ]


def perplexity_eval_result(value: float, dataset: str = "wikitext2") -> EvalResult:
    """A causal LM's measured perplexity as an ``EvalResult`` (model-index metric ``perplexity``)."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"Perplexity must be a finite number measured by the run, got {value!r}.")
    dtype, config, name, split = dataset_identity(dataset)
    return EvalResult(
        task_type="text-generation", task_name=TASK_NAMES["text-generation"], dataset_type=dtype,
        dataset_name=name, dataset_config=config, dataset_split=split, metric_type="perplexity",
        metric_name="Perplexity", metric_value=float(value), verified=False,
    )


def describe_hardware() -> str:
    """This process's accelerator / CPU and library versions, as one line."""
    import torch

    if torch.cuda.is_available():
        device = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    else:
        cpu = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as handle:
                cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
        except OSError:
            pass
        device = f"CPU {cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    return f"{device}; {platform.system()}, Python {platform.python_version()}, torch {torch.__version__}"


def current_command() -> str | None:
    """``hf-compress ...`` as this process was started, or None when it was not started from the CLI."""
    argv = sys.argv
    if not argv:
        return None
    script = Path(argv[0])
    if script.name == "hf-compress" or argv[0].endswith(os.path.join("hf_compress", "cli.py")):
        return shlex.join(["hf-compress", *argv[1:]])
    return None


def command_text(command: str | Sequence[str] | None) -> str | None:
    """A shell command line from a string or an argv list."""
    if command is None or isinstance(command, str):
        return command
    return shlex.join([str(part) for part in command])
