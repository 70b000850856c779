"""Propensity-scored precision@k (PSP@k) for extreme classification — a local ``evaluate`` module: load it with
``evaluate.load(<this folder>)``. Inputs, arguments and the computation are shared by the four bundled modules
(:mod:`hf_compress.ramen.metrics.evaluate_module`); :func:`hf_compress.ramen.metrics.xc.xc_metrics` documents the
conventions.
"""

import evaluate

from hf_compress.ramen.metrics import evaluate_module

_DESCRIPTION = """\
PSP@k = [sum_i sum_{r<=k} w[p_r] y_i[p_r] / k] / [sum_i (sum of the min(k, |y_i|) largest w over y_i) / k]:
precision in which a hit on label l is worth its inverse propensity w_l (rare labels count more), as a ratio
of data-set totals normalised by the best achievable value, so a perfect ranking scores 1.
w_l = 1 + (ln N - 1)(B + 1)^A (n_l + B)^(-A) (Jain et al., 2016).
Conventions of the Extreme Classification Repository.
"""
_KWARGS_DESCRIPTION = evaluate_module.kwargs_description("psp_at_k", "PSP@", propensity_scored=True)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PSPAtK(evaluate_module.XCMetricModule):
    metric = "psp_at_k"
    key_prefix = "PSP@"
    description = _DESCRIPTION
    propensity_scored = True
