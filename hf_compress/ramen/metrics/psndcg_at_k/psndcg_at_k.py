"""Propensity-scored nDCG@k (PSnDCG@k) for extreme classification — a local ``evaluate`` module: load it with
``evaluate.load(<this folder>)``. Inputs, arguments and the computation are shared by the four bundled modules
(:mod:`hf_compress.ramen.metrics.evaluate_module`); :func:`hf_compress.ramen.metrics.xc.xc_metrics` documents the
conventions.
"""

import evaluate

from hf_compress.ramen.metrics import evaluate_module

_DESCRIPTION = """\
PSnDCG@k = sum_i PSDCG_i@k / sum_i ideal-PSDCG_i@k, PSDCG@k = sum_{r<=k} w[p_r] y[p_r] / log2(r+1), the ideal
ranking placing the largest-w relevant labels first;
w_l = 1 + (ln N - 1)(B + 1)^A (n_l + B)^(-A) (Jain et al., 2016).
Conventions of the Extreme Classification Repository.
"""
_KWARGS_DESCRIPTION = evaluate_module.kwargs_description("psndcg_at_k", "PSnDCG@", propensity_scored=True)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PSnDCGAtK(evaluate_module.XCMetricModule):
    metric = "psndcg_at_k"
    key_prefix = "PSnDCG@"
    description = _DESCRIPTION
    propensity_scored = True
