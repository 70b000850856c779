"""Training-free scores of a network at initialisation, to choose among alpha's most probable cells.

A supernet searched briefly orders the NAS-Bench-201 cells badly: over the cells within a budget, Kendall's tau
between alpha's joint probability and the table's accuracy is -0.25..0.00, and the supernet's own one-shot accuracy
does no better (``benchmarks/dcanas_nb201_alpha_ranking.py``, ``..._oneshot_ranking.py``). Alpha's most probable
cells still include good ones; what is missing is a way to tell which. NASWOT (Mellor et al., "Neural Architecture
Search without Training", ICML 2021) scores an untrained network by how differently its ReLUs switch on a batch of
images: with ``c_i`` the on/off code of every ReLU unit for image ``i``, ``K[i, j]`` counts the units on which
images ``i`` and ``j`` agree and the score is ``log |K|``. Networks that keep images apart score higher. It costs
one forward pass of the final network per candidate and needs no training.

The derivation ``derivation="naswot"`` (NB201) takes alpha's ``naswot_top_k`` most probable cells within the
budget (all cells enumerated, so the budget holds exactly) and keeps the one with the highest score.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import torch
from torch import nn

from .configuration_dcanas import DCANASConfig
from .modeling_dcanas import DCANASForImageClassification
from .ops import DilConv, FactorizedReduce, ReLUConvBN
from .perturbation import batch_statistics
from .spaces import NB201, NB201Genotype

# modules whose forward starts with a ReLU: the ReLU's on/off state is the sign of their input
RELU_FIRST = (ReLUConvBN, DilConv, FactorizedReduce)


def naswot_score(model: nn.Module, pixel_values: torch.Tensor) -> float:
    """``log |K|`` of the ReLU codes of ``model`` on ``pixel_values`` [batch, C, H, W] (higher: the network
    tells the images apart better). BatchNorm normalises with the batch's statistics, as at initialisation
    (``perturbation.batch_statistics``); the model is left as it was."""
    if pixel_values.dim() != 4 or pixel_values.shape[0] < 2:
        raise ValueError("naswot_score needs a batch of at least 2 images [B, C, H, W], "
                         f"got {tuple(pixel_values.shape)}.")
    codes: list[torch.Tensor] = []

    def record(_module, inputs):
        codes.append((inputs[0].detach() > 0).flatten(1))

    hooks = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, RELU_FIRST)]
    try:
        with batch_statistics(model), torch.no_grad():
            model(pixel_values=pixel_values)
    finally:
        for h in hooks:
            h.remove()
    if not codes:
        raise ValueError("naswot_score found no ReLU-first module (ReLUConvBN / DilConv / FactorizedReduce) "
                         "in the model.")
    return float(torch.linalg.slogdet(_agreement_kernel(torch.cat(codes, dim=1)))[1])


def _agreement_kernel(on: torch.Tensor) -> torch.Tensor:
    """``K[i, j]`` = units on which codes ``i`` and ``j`` agree, as ``n - |c_i| - |c_j| + 2 c_i.c_j``: one matrix
    product instead of two (both on and off agreements). In float32 while every count stays below 2**24, where
    float32 sums of 0/1 products are exact integers (several times faster than float64, same kernel)."""
    units = on.shape[1]
    dtype = torch.float32 if units < 2**24 else torch.float64
    codes = on.to(dtype)
    on_count = codes.sum(dim=1)
    both_on = codes @ codes.T
    return (units - on_count[:, None] - on_count[None, :] + 2.0 * both_on).double()


def synflow_score(model: nn.Module, image_shape: tuple[int, int, int] = (3, 32, 32)) -> float:
    """``log sum |theta * dR/dtheta|`` with ``R`` the summed logits of the network with every weight made positive,
    on an all-ones image (SynFlow, Tanaka et al. 2020; as a zero-cost NAS proxy, Abdelfattah et al. 2021). No data
    needed. Computed in float64 on a copy in eval mode (BatchNorm at its initial statistics is the identity, so the
    constant input is not normalised away); the model is left as it was."""
    import copy

    probe = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for param in probe.parameters():
            param.abs_()
    probe.zero_grad(set_to_none=True)
    logits = probe(pixel_values=torch.ones(1, *image_shape, dtype=torch.float64)).logits
    logits.sum().backward()
    total = sum(float((p.detach() * p.grad).abs().sum()) for p in probe.parameters() if p.grad is not None)
    if not total > 0:
        raise ValueError("synflow_score: no weight receives a gradient from the logits (a cell of only 'none'?).")
    return float(np.log(total))


def nb201_top_cells(cost_model, probs: dict[str, torch.Tensor], budget: float | None, k: int,
                    exclude_none: bool = True) -> list[NB201Genotype]:
    """Alpha's ``k`` most probable NAS-Bench-201 cells whose derived cost is within ``budget`` (every cell of the
    space enumerated; ``None``: no budget), most probable first. Empty when no cell fits."""
    space = cost_model.space
    if space.name != NB201:
        raise ValueError(f"nb201_top_cells enumerates the NAS-Bench-201 space; this cost model is for {space.name!r}.")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    log_probs = torch.log(probs["normal"].detach().double().cpu().clamp_min(1e-300)).numpy()  # [edges, ops]
    ops = [o for o in range(space.num_ops) if not (exclude_none and space.ops[o] == "none")]
    cells = np.array(list(itertools.product(ops, repeat=space.num_edges)))  # [cells, edges]
    edges = np.arange(space.num_edges)[None, :]
    joint = log_probs[edges, cells].sum(axis=1)
    cost = cost_model.skeleton + cost_model.tables["normal"][edges, cells].sum(axis=1)
    fits = np.where(cost <= budget)[0] if budget is not None else np.arange(len(cells))
    order = fits[np.argsort(-joint[fits], kind="stable")][:k]
    return [NB201Genotype.from_ops([space.ops[o] for o in cells[i]]) for i in order]


def naswot_rerank(candidates: list, network_kwargs: dict, pixel_values: torch.Tensor, seed: int = 0,
                  search_space: str = NB201) -> tuple[object, dict]:
    """Build each candidate's final network (``network_kwargs``: ``DCANASConfig`` sizes), seeded initialisation,
    score it with :func:`naswot_score` and return ``(best genotype, trace)``; the trace lists every candidate's
    score in the order given and the seconds spent. Ties keep the earlier (more probable) candidate."""
    if not candidates:
        raise ValueError("naswot_rerank got no candidate cells.")
    began = time.perf_counter()
    scores = []
    for genotype in candidates:
        torch.manual_seed(seed)
        config = DCANASConfig(search_space=search_space, genotype=genotype,
                              **{k: v for k, v in network_kwargs.items() if v is not None})
        scores.append(naswot_score(DCANASForImageClassification(config), pixel_values))
    best = int(np.argmax(scores))
    trace = {"candidates": [str(g) for g in candidates], "scores": scores, "chosen": best,
             "images": int(pixel_values.shape[0]), "seconds": time.perf_counter() - began}
    return candidates[best], trace
