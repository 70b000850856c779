"""What the four bundled ``evaluate`` modules share: inputs, citation, argument docs and the computation.

Each module folder holds a small script with its own description and a subclass of :class:`XCMetricModule`
naming the metric (``key_prefix``); everything else is here, so the four cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import datasets
import evaluate
import numpy as np

from . import xc

XC_REPOSITORY_URL = "http://manikvarma.org/downloads/XC/XMLRepository.html"

XC_CITATION = """\
@misc{Bhatia16,
  author = {Bhatia, K. and Dahiya, K. and Jain, H. and Kar, P. and Mittal, A. and Prabhu, Y. and Varma, M.},
  title = {The extreme classification repository: Multi-label datasets and code},
  url = {http://manikvarma.org/downloads/XC/XMLRepository.html},
  year = {2016}
}
"""

PROPENSITY_CITATION = """\
@inproceedings{Jain16,
  author = {Jain, H. and Prabhu, Y. and Varma, M.},
  title = {Extreme Multi-label Loss Functions for Recommendation, Tagging, Ranking and Other Missing Label
           Applications},
  booktitle = {Proceedings of the 22nd ACM SIGKDD International Conference on Knowledge Discovery
               and Data Mining},
  year = {2016}
}
"""


def kwargs_description(metric: str, key_prefix: str, propensity_scored: bool) -> str:
    """The ``Args / Returns / Examples`` text of one module."""
    if propensity_scored:
        extra = """    inv_propensity: [L] inverse propensities w_l (list or array), or else
    train_label_counts + num_train_points: per-label training counts n_l and N, from which w_l is computed
        with the constants A (default 0.55) and B (default 1.5).
"""
        example_kwargs = ", inv_propensity=[1.0, 1.0, 2.0, 1.0]"
    else:
        extra = "    ignore_empty: drop points without relevant labels from the mean (default False: they count as 0).\n"
        example_kwargs = ""
    return f"""
Args:
    predictions: per point, the ranked predicted label ids, best first (-1 = empty slot; rows shorter than k
        are padded with -1). A label id may appear at most once per row.
    references: per point, the ids of the relevant labels.
    k: an int or a list of ints (default [1, 3, 5]).
    filter_pairs: optional [n, 2] (row, label) pairs removed from references and predictions before scoring
        (the XC-repository convention for reciprocal pairs; later predictions move up). Rows index the
        points in the order they were added.
    num_labels: optional size L of the label space (ids must lie in [0, L)).
{extra}Returns:
    a dict {{"{key_prefix}1": float, "{key_prefix}3": float, ...}} with values in [0, 1].
Examples:
    >>> from hf_compress.ramen.metrics import load_metric
    >>> metric = load_metric("{metric}")  # = evaluate.load(<the folder of this file>)
    >>> metric.compute(predictions=[[1, 2, 3]], references=[[2]], k=[1, 3]{example_kwargs})
"""


class XCMetricModule(evaluate.Metric):
    """Base of the bundled modules: subclasses set ``metric`` (folder name), ``key_prefix`` ("P@", "PSP@", ...),
    ``description`` and whether the metric is ``propensity_scored``."""

    metric: str = ""
    key_prefix: str = ""
    description: str = ""
    propensity_scored: bool = False

    def _info(self):
        citation = XC_CITATION + (PROPENSITY_CITATION if self.propensity_scored else "")
        return evaluate.MetricInfo(
            description=self.description,
            citation=citation,
            inputs_description=kwargs_description(self.metric, self.key_prefix, self.propensity_scored),
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int64")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
            reference_urls=[XC_REPOSITORY_URL],
        )

    def _compute(
        self,
        predictions,
        references,
        k=(1, 3, 5),
        filter_pairs=None,
        num_labels=None,
        ignore_empty=False,
        inv_propensity=None,
        train_label_counts=None,
        num_train_points=None,
        A=0.55,
        B=1.5,
    ) -> dict[str, float]:
        options: dict[str, Any] = {"ks": k, "filter_pairs": filter_pairs, "num_labels": num_labels,
                                   "ignore_empty": ignore_empty}
        if self.propensity_scored:
            options["inv_propensity"] = _resolve_propensity(
                self.metric, inv_propensity, train_label_counts, num_train_points, A, B
            )
        results = xc.xc_metrics(predictions, references, **options)
        return {key: value for key, value in results.items() if key.startswith(self.key_prefix)}


def _resolve_propensity(metric, inv_propensity, train_label_counts, num_train_points, A, B) -> np.ndarray:
    """The inverse propensities a PS module was given, or computed from training label counts."""
    if inv_propensity is None:
        if train_label_counts is None or num_train_points is None:
            raise ValueError(f"{metric} needs inv_propensity, or train_label_counts and num_train_points to compute it")
        return xc.inverse_propensity(np.asarray(train_label_counts), num_train_points, A=A, B=B)
    if train_label_counts is not None:
        raise ValueError("pass either inv_propensity or train_label_counts, not both")
    return np.asarray(inv_propensity, dtype=np.float64)
