"""nDCG@k for extreme classification — a local ``evaluate`` module: load it with
``evaluate.load(<this folder>)``. Inputs, arguments and the computation are shared by the four bundled modules
(:mod:`hf_compress.ramen.metrics.evaluate_module`); :func:`hf_compress.ramen.metrics.xc.xc_metrics` documents the
conventions.
"""

import evaluate

from hf_compress.ramen.metrics import evaluate_module

_DESCRIPTION = """\
nDCG@k = mean over points of DCG@k / IDCG@k with DCG@k = sum_{r<=k} y[p_r] / log2(r+1) and IDCG@k the DCG of
min(k, |y|) relevant labels ranked first. Points with no relevant label count as 0 and stay in the mean unless
ignore_empty=True.
Conventions of the Extreme Classification Repository.
"""
_KWARGS_DESCRIPTION = evaluate_module.kwargs_description("ndcg_at_k", "nDCG@", propensity_scored=False)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class NDCGAtK(evaluate_module.XCMetricModule):
    metric = "ndcg_at_k"
    key_prefix = "nDCG@"
    description = _DESCRIPTION
    propensity_scored = False
