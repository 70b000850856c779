"""Propensity-scored precision@k (PSP@k) for extreme classification —
a local ``evaluate`` module: load it with ``evaluate.load(<this folder>)``.

Delegates to :func:`hf_compress.ramen.metrics.xc.xc_metrics`, which documents the conventions.
"""

import evaluate

from hf_compress.ramen.metrics import xc

_DESCRIPTION = """\
PSP@k = [sum_i sum_{r<=k} w[p_r] y_i[p_r] / k] / [sum_i (sum of the min(k, |y_i|) largest w over y_i) / k]:
precision in which a hit on label l is worth its inverse propensity w_l (rare labels count more), as a ratio
of data-set totals normalised by the best achievable value, so a perfect ranking scores 1.
w_l = 1 + (ln N - 1)(B + 1)^A (n_l + B)^(-A) (Jain et al., 2016).
Conventions of the Extreme Classification Repository.
"""

_CITATION = """\
@misc{Bhatia16,
  author = {Bhatia, K. and Dahiya, K. and Jain, H. and Kar, P. and Mittal, A. and Prabhu, Y. and Varma, M.},
  title = {The extreme classification repository: Multi-label datasets and code},
  url = {http://manikvarma.org/downloads/XC/XMLRepository.html},
  year = {2016}
}
@inproceedings{Jain16,
  author = {Jain, H. and Prabhu, Y. and Varma, M.},
  title = {Extreme Multi-label Loss Functions for Recommendation, Tagging, Ranking and Other Missing Label
           Applications},
  booktitle = {Proceedings of the 22nd ACM SIGKDD International Conference on Knowledge Discovery
               and Data Mining},
  year = {2016}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: per point, the ranked predicted label ids, best first (-1 = empty slot; rows shorter than k
        are padded with -1). A label id may appear at most once per row.
    references: per point, the ids of the relevant labels.
    k: an int or a list of ints (default [1, 3, 5]).
    filter_pairs: optional [n, 2] (row, label) pairs removed from references and predictions before scoring
        (the XC-repository convention for reciprocal pairs; later predictions move up). Rows index the
        points in the order they were added.
    num_labels: optional size L of the label space (ids must lie in [0, L)).
    inv_propensity: [L] inverse propensities w_l (list or array), or else
    train_label_counts + num_train_points: per-label training counts n_l and N, from which w_l is computed
        with the constants A (default 0.55) and B (default 1.5).
Returns:
    a dict {"PSP@1": float, "PSP@3": float, ...} with values in [0, 1].
Examples:
    >>> from hf_compress.ramen.metrics import load_metric
    >>> metric = load_metric("psp_at_k")  # = evaluate.load(<the folder of this file>)
    >>> metric.compute(predictions=[[1, 2, 3]], references=[[2]], k=[1, 3], inv_propensity=[1.0, 1.0, 2.0, 1.0])
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PSPAtK(evaluate.Metric):
    def _info(self):
        return xc.evaluate_metric_info(_DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION)

    def _compute(
        self,
        predictions,
        references,
        k=(1, 3, 5),
        inv_propensity=None,
        train_label_counts=None,
        num_train_points=None,
        A=0.55,
        B=1.5,
        filter_pairs=None,
        num_labels=None,
    ):
        inv_propensity = xc.resolve_propensity(
            "psp_at_k", inv_propensity, train_label_counts, num_train_points, A, B
        )
        results = xc.xc_metrics(
            predictions,
            references,
            ks=k,
            inv_propensity=inv_propensity,
            filter_pairs=filter_pairs,
            num_labels=num_labels,
        )
        return {key: value for key, value in results.items() if key.startswith("PSP@")}
