"""Precision@k for extreme classification — a local ``evaluate`` module: load it with
``evaluate.load(<this folder>)``. Inputs, arguments and the computation are shared by the four bundled modules
(:mod:`hf_compress.ramen.metrics.evaluate_module`); :func:`hf_compress.ramen.metrics.xc.xc_metrics` documents the
conventions.
"""

import evaluate

from hf_compress.ramen.metrics import evaluate_module

_DESCRIPTION = """\
P@k = mean over points of (1/k) * sum_{r<=k} y[p_r]: the fraction of the top-k ranked labels that are
relevant. Points with no relevant label count as 0 and stay in the mean unless ignore_empty=True.
Conventions of the Extreme Classification Repository.
"""
_KWARGS_DESCRIPTION = evaluate_module.kwargs_description("precision_at_k", "P@", propensity_scored=False)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PrecisionAtK(evaluate_module.XCMetricModule):
    metric = "precision_at_k"
    key_prefix = "P@"
    description = _DESCRIPTION
    propensity_scored = False
