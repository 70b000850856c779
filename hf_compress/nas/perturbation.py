"""Perturbation-based op selection on a trained supernet (an alternative to argmax alpha at derive time).

The size of alpha is a poor measure of how much an op matters to the supernet: parameter-free ops such as
``skip_connect`` can carry the network while their alpha stays small, and parametric ops that learn fastest
early win the argmax (Wang et al., "Rethinking Architecture Selection in Differentiable NAS", ICLR 2021).
Here each op is scored by what the supernet loses without it: edge by edge (in a seeded random order), the
held-out accuracy with one op removed from the edge's mixture is measured for every candidate op, the op
whose removal costs the most is kept, and the edge is fixed to it before the next edge is scored. The scores
(accuracy lost, in [-1, 1]) become per-edge pseudo-probabilities ``softmax(score / temperature)`` so that
``repair`` / ``fill`` rank budget moves by them exactly as they rank alpha.

BatchNorm uses batch statistics during the measurement (running statistics were gathered under the mixture the
removal changes) without updating them; alpha is restored afterwards.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .spaces import NB201, NB201Genotype

logger = logging.getLogger(__name__)

REMOVED = -1.0e4  # alpha of an op taken out of a mixture
FIXED = 30.0      # alpha of the op an edge is fixed to (softmax ~ one-hot, as set_genotype)


@contextmanager
def batch_statistics(model: nn.Module):
    """Eval mode (derived cells use the argmax genotype, no sampling; no drop-path) but BatchNorm normalises with the
    batch's statistics; its running statistics and batch count are left as they were."""
    was_training = model.training
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.training, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
             for m in norms]
    model.eval()
    for m in norms:
        m.train()
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, training, tracked) in zip(norms, saved):
            m.momentum, m.training = momentum, training
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)
        model.train(was_training)


@contextmanager
def _alphas_restored(supernet):
    """Alpha may be rewritten inside; it is put back exactly on exit."""
    original = {kind: alpha.detach().clone() for kind, alpha in supernet.alphas.items()}
    try:
        yield
    finally:
        for kind, alpha in original.items():
            supernet.alphas[kind].data.copy_(alpha)


@torch.no_grad()
def _accuracy(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    correct = total = 0
    for pixel_values, labels in batches:
        logits = model(pixel_values, arch_grad=False).logits
        correct += int((logits.argmax(-1) == labels).sum())
        total += int(labels.numel())
    return correct / max(1, total)


@torch.no_grad()
def perturbation_scores(supernet, batches: list[tuple[torch.Tensor, torch.Tensor]], seed: int = 0,
                        exclude_none: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """``({cell type: [edges, ops] accuracy lost without each op}, trace)``; ops never scored (``none`` when
    excluded) get ``-inf``. ``batches`` are held-out ``(pixel_values, labels)``; alpha is left as it was."""
    space = supernet.space
    none = space.op_index("none") if "none" in space.ops else None
    rng = np.random.default_rng(seed)
    scores = {kind: torch.full((space.num_edges, space.num_ops), float("-inf")) for kind in supernet.cell_types}
    trace = {"order": {}, "base_accuracy": [], "evaluations": 0}
    started = time.perf_counter()
    with _alphas_restored(supernet), batch_statistics(supernet):
        for kind in supernet.cell_types:
            alpha = supernet.alphas[kind].data
            order = rng.permutation(space.num_edges).tolist()
            trace["order"][kind] = order
            for e in order:
                base = _accuracy(supernet, batches)
                trace["base_accuracy"].append(base)
                row = alpha[e].clone()
                for o in range(space.num_ops):
                    if o == none and exclude_none:
                        continue
                    alpha[e, o] = REMOVED
                    scores[kind][e, o] = base - _accuracy(supernet, batches)
                    alpha[e] = row
                    trace["evaluations"] += 1
                keep = int(scores[kind][e].argmax())
                alpha[e] = REMOVED
                alpha[e, keep] = FIXED
    trace["seconds"] = time.perf_counter() - started
    trace["final_accuracy"] = trace["base_accuracy"][-1] if trace["base_accuracy"] else None
    return scores, trace


@contextmanager
def running_cell(supernet, genotype):
    """Inside, the supernet runs only ``genotype`` (alpha one-hot on it, as the derived cells run it; eval mode with
    batch statistics, as the perturbation scores); alpha and BatchNorm are restored on exit. A supernet that
    excludes ``none`` from derivation (the default) never runs it in its derived cells, so cells with a ``none``
    edge are refused there."""
    if supernet.settings.exclude_none and supernet.space.name == NB201:
        if isinstance(genotype, str):
            genotype = NB201Genotype.parse(genotype)
        if "none" in genotype.ops:
            raise ValueError(f"{genotype} has a `none` edge, which this supernet's derived cells never run "
                             "(exclude_none=True); score cells without `none`, or build the supernet with "
                             "exclude_none=False.")
    with _alphas_restored(supernet), batch_statistics(supernet):
        supernet.set_genotype(genotype, scale=FIXED)
        yield supernet


@torch.no_grad()
def oneshot_accuracy(supernet, genotype, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Held-out accuracy of the supernet running only ``genotype`` with its trained weights (``running_cell``):
    a cell's one-shot score, to rank candidate cells without training them."""
    with running_cell(supernet, genotype):
        return _accuracy(supernet, batches)


def scores_to_probabilities(scores: dict[str, torch.Tensor], temperature: float = 0.01) -> dict[str, torch.Tensor]:
    """Per-edge ``softmax(score / temperature)`` (unscored ops get probability 0)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    return {kind: F.softmax(s.to(torch.float32) / temperature, dim=-1) for kind, s in scores.items()}


def held_out_batches(dataset, images: int, batch_size: int = 256) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``images`` examples of ``dataset`` (dicts with ``pixel_values`` / ``labels``) as tensors."""
    images = min(int(images), len(dataset))
    if images < 1:
        raise ValueError("Perturbation scoring needs at least one held-out image.")
    batches = []
    for start in range(0, images, batch_size):
        rows = [dataset[i] for i in range(start, min(images, start + batch_size))]
        pixels = torch.stack([torch.as_tensor(r["pixel_values"]) for r in rows]).float()
        labels = torch.as_tensor([int(r["labels"]) for r in rows])
        batches.append((pixels, labels))
    return batches
