"""Extreme-classification metrics for RAMEN: P@k, nDCG@k, PSP@k, PSnDCG@k (see :mod:`.xc` for definitions).

The plain functions (numpy / scipy.sparse) live in :mod:`hf_compress.ramen.metrics.xc`. The same metrics are
also shipped as local ``evaluate`` modules (one folder each, loadable offline with ``evaluate.load(folder)``);
:func:`load_metric` does that for you::

    from hf_compress.ramen.metrics import load_metric
    psp = load_metric("psp_at_k")
    psp.add_batch(predictions=[[3, 1, 7]], references=[[1]])
    psp.compute(k=[1, 3], inv_propensity=w)
"""

from __future__ import annotations

import os
from typing import Any

from .xc import filter_matrix, inverse_propensity, top_k, xc_metrics

__all__ = [
    "METRIC_NAMES",
    "filter_matrix",
    "inverse_propensity",
    "load_metric",
    "metric_path",
    "top_k",
    "xc_metrics",
]

#: Names of the bundled ``evaluate`` modules (each is a sub-folder of this package).
METRIC_NAMES: tuple[str, ...] = ("precision_at_k", "ndcg_at_k", "psp_at_k", "psndcg_at_k")

_HERE = os.path.dirname(os.path.abspath(__file__))


def metric_path(name: str) -> str:
    """The folder of the bundled ``evaluate`` module ``name`` (one of :data:`METRIC_NAMES`)."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown XC metric {name!r}; choose one of {list(METRIC_NAMES)}")
    return os.path.join(_HERE, name)


def load_metric(name: str, **kwargs: Any):
    """``evaluate.load`` of the bundled module ``name`` (works offline); ``kwargs`` go to ``evaluate.load``."""
    import evaluate

    return evaluate.load(metric_path(name), **kwargs)
