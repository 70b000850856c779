"""Precision@k for extreme classification —
a local ``evaluate`` module: load it with ``evaluate.load(<this folder>)``.

Delegates to :func:`hf_compress.ramen.metrics.xc.xc_metrics`, which documents the conventions.
"""

import evaluate

from hf_compress.ramen.metrics import xc

_DESCRIPTION = """\
P@k = mean over points of (1/k) * sum_{r<=k} y[p_r]: the fraction of the top-k ranked labels that are
relevant. Points with no relevant label count as 0 and stay in the mean unless ignore_empty=True.
Conventions of the Extreme Classification Repository.
"""

_CITATION = """\
@misc{Bhatia16,
  author = {Bhatia, K. and Dahiya, K. and Jain, H. and Kar, P. and Mittal, A. and Prabhu, Y. and Varma, M.},
  title = {The extreme classification repository: Multi-label datasets and code},
  url = {http://manikvarma.org/downloads/XC/XMLRepository.html},
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
    ignore_empty: drop points without relevant labels from the mean (default False: they count as 0).
Returns:
    a dict {"P@1": float, "P@3": float, ...} with values in [0, 1].
Examples:
    >>> from hf_compress.ramen.metrics import load_metric
    >>> metric = load_metric("precision_at_k")  # = evaluate.load(<the folder of this file>)
    >>> metric.compute(predictions=[[1, 2, 3]], references=[[2]], k=[1, 3])
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PrecisionAtK(evaluate.Metric):
    def _info(self):
        return xc.evaluate_metric_info(_DESCRIPTION, _CITATION, _KWARGS_DESCRIPTION)

    def _compute(
        self,
        predictions,
        references,
        k=(1, 3, 5),
        filter_pairs=None,
        num_labels=None,
        ignore_empty=False,
    ):
        results = xc.xc_metrics(
            predictions,
            references,
            ks=k,
            filter_pairs=filter_pairs,
            num_labels=num_labels,
            ignore_empty=ignore_empty,
        )
        return {key: value for key, value in results.items() if key.startswith("P@")}
