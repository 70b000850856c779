"""Accuracy and latency measurements shared by the CLI, the examples and the benchmarks."""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
import torch
from torch.utils.data import DataLoader


def _batches(dataset, collator, batch_size: int):
    columns = [c for c in dataset.column_names if c in ("input_ids", "attention_mask", "token_type_ids", "label", "labels")]
    return DataLoader(dataset.select_columns(columns), batch_size=batch_size, collate_fn=collator)


@torch.no_grad()
def accuracy(model, dataset, collator, batch_size: int = 128) -> float:
    """Classification accuracy of ``model`` on a tokenized dataset with a ``label``/``labels`` column."""
    model.eval()
    device = next(model.parameters()).device
    correct = total = 0
    for batch in _batches(dataset, collator, batch_size):
        labels = batch.pop("labels", batch.pop("label", None))
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        correct += int((logits.argmax(-1).cpu() == labels).sum())
        total += len(labels)
    return correct / max(total, 1)


@torch.no_grad()
def latency(model, batch: dict, repeats: int = 20, warmup: int = 3) -> float:
    """Median seconds of one forward pass over ``batch`` (same batch for every model compared)."""
    model.eval()
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items() if k not in ("labels", "label")}
    for _ in range(warmup):
        model(**batch)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(**batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def latency_batch(dataset, collator, batch_size: int = 32, seed: int = 0) -> dict:
    """A fixed padded batch of real examples for latency comparisons."""
    order = np.random.default_rng(seed).permutation(len(dataset))[:batch_size]
    columns = [c for c in dataset.column_names if c in ("input_ids", "attention_mask", "token_type_ids")]
    rows = dataset.select(sorted(order.tolist())).select_columns(columns)
    return collator([rows[i] for i in range(len(rows))])


def ort_session(model: str | bytes | os.PathLike, num_threads: int | None = None):
    """An onnxruntime CPU session for an ONNX file or serialized graph; ``num_threads`` intra-op threads (and one
    inter-op thread) when set, onnxruntime's own choice otherwise. Warnings below errors are not logged."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = int(num_threads)
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                providers=["CPUExecutionProvider"])


def count_parameters(model) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("vtrans_gates."))
