"""XC metrics (hf_compress.ramen.metrics): hand-computed cases, a brute-force property check, evaluate modules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from hf_compress.ramen.metrics import (
    METRIC_NAMES,
    filter_matrix,
    inverse_propensity,
    load_metric,
    metric_path,
    top_k,
    xc_metrics,
)
from hf_compress.ramen.metrics import xc as xc_module


def d(r: int) -> float:
    """The DCG discount of rank r (1-based): 1 / log2(r + 1). d(1) = 1, d(2) = 0.6309, d(3) = 0.5, d(5) = 0.3869."""
    return 1.0 / math.log2(r + 1)


# ---------------------------------------------------------------------------------------------------------
# The 3-point example, L = 6 labels:
#   point 0: relevant {0, 2}      predicted [0, 1, 2, 3, 4] -> hits 1 0 1 0 0
#   point 1: relevant {1}         predicted [2, 3, 4, 5, 1] -> hits 0 0 0 0 1
#   point 2: relevant {3, 4, 5}   predicted [5, 0, 3, 1, 4] -> hits 1 0 1 0 1
# ---------------------------------------------------------------------------------------------------------
PREDS = np.array([[0, 1, 2, 3, 4], [2, 3, 4, 5, 1], [5, 0, 3, 1, 4]])
REFS = [[0, 2], [1], [3, 4, 5]]
REFS_CSR = sp.csr_matrix(np.array([[1, 0, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1]]))
W = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])  # hand inverse propensities of labels 0..5

EXPECTED_PLAIN = {
    # P@1 = (1 + 0 + 1) / 3
    "P@1": 2 / 3,
    # P@3 = (2/3 + 0/3 + 2/3) / 3 = 4/9
    "P@3": 4 / 9,
    # P@5 = (2/5 + 1/5 + 3/5) / 3 = 6/15
    "P@5": 0.4,
    # nDCG@1 = (1/1 + 0 + 1/1) / 3
    "nDCG@1": 2 / 3,
    # point 0: DCG@3 = d(1) + d(3) = 1.5, IDCG (min(3, 2) = 2 ones) = d(1) + d(2) = 1.6309 -> 0.9197
    # point 1: 0;  point 2: DCG@3 = d(1) + d(3) = 1.5, IDCG (3 ones) = 1 + 0.6309 + 0.5 = 2.1309 -> 0.7039
    # mean = (0.9197 + 0 + 0.7039) / 3 = 0.54121
    "nDCG@3": (1.5 / (1 + d(2)) + 0.0 + 1.5 / (1 + d(2) + d(3))) / 3,
    # point 0: 1.5 / 1.6309;  point 1: DCG@5 = d(5) = 0.3869, IDCG (1 one) = 1 -> 0.3869
    # point 2: DCG@5 = d(1) + d(3) + d(5) = 1.8869, IDCG = 2.1309 -> 0.8855;  mean = 0.73068
    "nDCG@5": (1.5 / (1 + d(2)) + d(5) + (1 + d(3) + d(5)) / (1 + d(2) + d(3))) / 3,
}
EXPECTED_PS = {
    # PSP@1: hits weighted by w: point 0 -> w0 = 1, point 1 -> 0, point 2 -> w5 = 6; total 7.
    # normaliser: largest w among each point's labels: max(w0, w2) = 3, w1 = 2, max(w3, w4, w5) = 6; total 11.
    "PSP@1": 7 / 11,
    # PSP@3: numerator (w0 + w2) + 0 + (w5 + w3) = 4 + 10 = 14 (/3);
    # normaliser: top-min(3,|y|) weights: (3 + 1) + 2 + (6 + 5 + 4) = 21 (/3)  -> 14/21
    "PSP@3": 2 / 3,
    # PSP@5: every relevant label is retrieved within 5 -> numerator 4 + 2 + 15 = 21 = normaliser -> 1
    # (while P@5 is only 0.4: PSP@k is normalised by the best achievable value)
    "PSP@5": 1.0,
    "PSnDCG@1": 7 / 11,
    # PSnDCG@3 numerator: point 0: w0*d(1) + w2*d(3) = 1 + 1.5 = 2.5; point 2: w5*d(1) + w3*d(3) = 6 + 2 = 8 -> 10.5
    # ideal: point 0: 3*d(1) + 1*d(2); point 1: 2*d(1); point 2: 6*d(1) + 5*d(2) + 4*d(3) = 8 + 5 d(2)
    #        total = 13 + 6 d(2) = 16.7856  -> 10.5 / 16.7856 = 0.62554
    "PSnDCG@3": 10.5 / (13 + 6 * d(2)),
    # PSnDCG@5 numerator adds point 1: w1*d(5) = 2 d(5) and point 2: w4*d(5) = 5 d(5) -> 10.5 + 7 d(5);
    # the ideal is unchanged (no point has more than 3 labels) -> 0.78686
    "PSnDCG@5": (10.5 + 7 * d(5)) / (13 + 6 * d(2)),
}


def assert_close(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


def test_three_point_example_plain():
    got = xc_metrics(PREDS, REFS)
    assert list(got) == ["P@1", "P@3", "P@5", "nDCG@1", "nDCG@3", "nDCG@5"]
    assert_close(got, EXPECTED_PLAIN)
    assert got["nDCG@3"] == pytest.approx(0.54121296, abs=1e-8)
    assert got["nDCG@5"] == pytest.approx(0.73067783, abs=1e-8)


@pytest.mark.parametrize(
    "preds", [PREDS, PREDS.tolist(), torch.tensor(PREDS), PREDS.astype(np.int32)], ids=["np", "list", "torch", "i32"]
)
@pytest.mark.parametrize("refs", [REFS, REFS_CSR, REFS_CSR.tocoo()], ids=["lists", "csr", "coo"])
def test_three_point_example_input_types_and_propensity(preds, refs):
    got = xc_metrics(preds, refs, inv_propensity=W)
    assert_close(got, {**EXPECTED_PLAIN, **EXPECTED_PS})
    assert got["PSnDCG@3"] == pytest.approx(0.62553697, abs=1e-8)


def test_ks_int_and_custom_order():
    got = xc_metrics(PREDS, REFS, ks=3)
    assert_close(got, {"P@3": 4 / 9, "nDCG@3": EXPECTED_PLAIN["nDCG@3"]})
    got = xc_metrics(PREDS, REFS, ks=[5, 1, 5])  # duplicates dropped, order kept
    assert list(got) == ["P@5", "P@1", "nDCG@5", "nDCG@1"]


def test_perfect_ranking_scores_one():
    preds = [[2, 0], [1], [5, 4, 3]]
    got = xc_metrics(preds, REFS, ks=(1, 2, 3), inv_propensity=W)
    for key in ("nDCG@1", "nDCG@2", "nDCG@3", "PSP@1", "PSP@2", "PSP@3", "PSnDCG@1", "PSnDCG@2", "PSnDCG@3"):
        assert got[key] == pytest.approx(1.0), key
    # P@3 of point 0 (2 labels) and point 1 (1 label) is capped: (2/3 + 1/3 + 3/3) / 3 = 2/3
    assert got["P@3"] == pytest.approx(2 / 3)
    # PSP with the ideal order reversed at k=1 for point 2: label 3 (w=4) instead of 5 (w=6):
    # numerator 3 + 2 + 4 = 9, normaliser 3 + 2 + 6 = 11
    got = xc_metrics([[2, 0], [1], [3, 4, 5]], REFS, ks=1, inv_propensity=W)
    assert got["PSP@1"] == pytest.approx(9 / 11)
    assert got["P@1"] == 1.0


def test_point_without_labels_counts_zero_or_is_dropped():
    preds = [[0, 1], [1, 0]]
    refs = [[0], []]
    got = xc_metrics(preds, refs, ks=(1, 2), num_labels=2)
    # point 0: P@1 = 1, P@2 = 1/2, nDCG@1 = nDCG@2 = 1;  point 1 (no labels) counts 0 -> halves everything
    assert_close(got, {"P@1": 0.5, "P@2": 0.25, "nDCG@1": 0.5, "nDCG@2": 0.5})
    got = xc_metrics(preds, refs, ks=(1, 2), num_labels=2, ignore_empty=True)
    assert_close(got, {"P@1": 1.0, "P@2": 0.5, "nDCG@1": 1.0, "nDCG@2": 1.0})
    # PSP: the empty point adds 0 to numerator and normaliser, so ignore_empty changes nothing
    w = np.array([2.0, 5.0])
    a = xc_metrics(preds, refs, ks=(1, 2), inv_propensity=w)
    b = xc_metrics(preds, refs, ks=(1, 2), inv_propensity=w, ignore_empty=True)
    assert a["PSP@1"] == b["PSP@1"] == 1.0 and a["PSnDCG@2"] == b["PSnDCG@2"] == 1.0
    # everything empty: 0.0 (no NaN)
    got = xc_metrics([[0]], [[]], ks=1, inv_propensity=w, ignore_empty=True)
    assert got == {"P@1": 0.0, "nDCG@1": 0.0, "PSP@1": 0.0, "PSnDCG@1": 0.0}


def test_fewer_predictions_than_k_are_padded():
    refs = [[2, 0]]
    # one prediction, a hit at rank 1: P@3 = 1/3, nDCG@3 = d(1) / (d(1) + d(2)) = 1 / 1.6309 = 0.6131
    expected = {"P@1": 1.0, "P@3": 1 / 3, "nDCG@1": 1.0, "nDCG@3": 1 / (1 + d(2))}
    assert_close(xc_metrics([[2]], refs, ks=(1, 3), num_labels=4), expected)
    assert_close(xc_metrics(np.array([[2, -1, -1]]), refs, ks=(1, 3), num_labels=4), expected)
    assert_close(xc_metrics(np.array([[2]]), refs, ks=(1, 3), num_labels=4), expected)
    # ragged list of lists: row 1 has no prediction at all
    got = xc_metrics([[2, 0, 1], []], [[2, 0], [1]], ks=(1, 3))
    # point 0: P@3 = 2/3; point 1: 0 -> 1/3
    assert got["P@3"] == pytest.approx(1 / 3)
    # a -1 slot in the middle occupies its rank: [-1, 2] -> hit at rank 2: P@1 = 0, nDCG@2 = d(2)/(1 + d(2))
    got = xc_metrics([[-1, 2]], refs, ks=(1, 2), num_labels=4)
    assert_close(got, {"P@1": 0.0, "P@2": 0.5, "nDCG@1": 0.0, "nDCG@2": d(2) / (1 + d(2))})


def test_filter_pairs():
    preds = [[0, 3, 1], [2, 0, 1]]
    refs = [[0, 1], [2]]
    unfiltered = xc_metrics(preds, refs, ks=(1, 2), num_labels=4)
    assert unfiltered["P@1"] == 1.0
    # pair (0, 0) leaves point 0 with relevant {1} and predictions [3, 1, -1]:
    # P@1 = (0 + 1) / 2;  P@2 = (1/2 + 1/2) / 2;  nDCG@2 = (d(2) / 1 + 1) / 2 = 0.81546
    got = xc_metrics(preds, refs, ks=(1, 2), num_labels=4, filter_pairs=np.array([[0, 0]]))
    assert_close(got, {"P@1": 0.5, "P@2": 0.5, "nDCG@1": 0.5, "nDCG@2": (d(2) + 1) / 2})
    # filtering the only label of point 1 makes it empty (counts 0) and moves its predictions up
    got = xc_metrics(preds, refs, ks=(1,), num_labels=4, filter_pairs=[[1, 2], [0, 0], [0, 0]])
    assert got["P@1"] == 0.0  # point 0 -> [3, 1]: miss; point 1 empty
    got = xc_metrics(preds, refs, ks=(1,), num_labels=4, filter_pairs=[[1, 2], [0, 0]], ignore_empty=True)
    assert got["P@1"] == 0.0
    # a pair that is only in the predictions (not relevant) also moves later predictions up
    got = xc_metrics(preds, refs, ks=(1,), num_labels=4, filter_pairs=[[0, 0]], inv_propensity=np.ones(4))
    assert got["PSP@1"] == pytest.approx(0.5)
    got = xc_metrics([[3, 0, 1]], [[1]], ks=(1,), num_labels=4, filter_pairs=[[0, 3], [0, 0]])
    assert got["P@1"] == 1.0  # [3, 0, 1] -> [1]
    # empty pair list is fine
    assert xc_metrics(preds, refs, ks=(1,), num_labels=4, filter_pairs=np.zeros((0, 2), int)) == {
        "P@1": 1.0,
        "nDCG@1": 1.0,
    }


def test_filter_matrix():
    m = filter_matrix(np.array([[0, 1], [2, 0], [0, 1]]), (3, 4))
    assert isinstance(m, sp.csr_matrix) and m.dtype == bool and m.nnz == 2
    assert m.toarray().tolist() == [[0, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]]
    with pytest.raises(ValueError, match="outside"):
        filter_matrix([[3, 0]], (3, 4))
    with pytest.raises(ValueError, match=r"\[n, 2\]"):
        filter_matrix([1, 2, 3], (3, 4))


# ---------------------------------------------------------------------------------------------------------
# inverse propensity
# ---------------------------------------------------------------------------------------------------------
def test_inverse_propensity_formula():
    # N = 4 training points, label counts n = [3, 1, 2, 0]
    y = sp.csr_matrix(np.array([[1, 0, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0]]))
    # C = (ln 4 - 1) * 2.5^0.55 = 0.386294 * 1.655277 = 0.639430
    # n=3: 1 + C * 4.5^-0.55 = 1 + 0.639430 * 0.437236 = 1.279588
    # n=1: (1 + B)^A (n + B)^-A = 1, so w = 1 + (ln 4 - 1) = ln 4 = 1.386294
    # n=2: 1 + C * 3.5^-0.55 = 1.321032;   n=0: 1 + C * 1.5^-0.55 = 1.511605
    expected = np.array([1.2795880, math.log(4), 1.3210317, 1.5116055])
    np.testing.assert_allclose(inverse_propensity(y), expected, rtol=1e-7)
    np.testing.assert_allclose(inverse_propensity(y.toarray()), expected, rtol=1e-7)
    np.testing.assert_allclose(inverse_propensity(y * 5.0), expected, rtol=1e-7)  # weights: only presence counts
    np.testing.assert_allclose(inverse_propensity(np.array([3, 1, 2, 0]), num_points=4), expected, rtol=1e-7)
    np.testing.assert_allclose(inverse_propensity(torch.tensor([3, 1, 2, 0]), num_points=4), expected, rtol=1e-7)
    # the formula itself, other constants (Amazon: A = 0.6, B = 2.6)
    c = (math.log(4) - 1) * 3.6**0.6
    np.testing.assert_allclose(
        inverse_propensity(y, A=0.6, B=2.6), [1 + c * (n + 2.6) ** -0.6 for n in (3, 1, 2, 0)], rtol=1e-12
    )
    # num_points overrides the row count
    np.testing.assert_allclose(inverse_propensity(y, num_points=100)[1], math.log(100), rtol=1e-12)
    # rarer labels get larger weights
    w = inverse_propensity(np.array([100, 10, 1, 0]), num_points=1000)
    assert np.all(np.diff(w) > 0)
    with pytest.raises(ValueError, match="num_points"):
        inverse_propensity(np.array([3, 1]))
    with pytest.raises(ValueError, match="non-negative"):
        inverse_propensity(np.array([3, -1]), num_points=4)


# ---------------------------------------------------------------------------------------------------------
# top_k
# ---------------------------------------------------------------------------------------------------------
def test_top_k_dense_ties_by_lower_id():
    scores = np.array([[0.5, 0.9, 0.5, 0.9, 0.1], [0.0, 0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 3.0]])
    out = top_k(scores, 4)
    assert out.dtype == np.int64 and out.shape == (3, 4)
    assert out.tolist() == [[1, 3, 0, 2], [0, 1, 2, 3], [4, 0, 1, 2]]
    # k > L: pad with -1
    assert top_k(scores, 7)[0].tolist() == [1, 3, 0, 2, 4, -1, -1]
    # same result on float32, int and torch (incl. bfloat16) input
    assert top_k(scores.astype(np.float32), 4).tolist() == out.tolist()
    assert top_k((scores * 10).astype(np.int64), 4).tolist() == out.tolist()
    assert top_k(torch.tensor(scores), 4).tolist() == out.tolist()
    assert top_k(torch.tensor(scores, dtype=torch.bfloat16), 4).tolist() == out.tolist()
    # -inf is a candidate in dense input (ranked last)
    assert top_k(np.array([[-np.inf, 1.0]]), 2).tolist() == [[1, 0]]


def test_top_k_exclude_and_chunks(monkeypatch):
    scores = np.array([[0.5, 0.9, 0.5, 0.9, 0.1], [0.3, 0.2, 0.1, 0.0, -1.0]])
    excl = filter_matrix([[0, 1], [0, 3], [1, 0], [1, 1], [1, 2], [1, 3]], scores.shape)
    # row 0 without 1 and 3 -> [0, 2, 4];  row 1 keeps only label 4 -> [4, -1, -1]
    assert top_k(scores, 3, exclude=excl).tolist() == [[0, 2, 4], [4, -1, -1]]
    assert top_k(scores, 3, exclude=excl.toarray()).tolist() == [[0, 2, 4], [4, -1, -1]]
    # exclusion of everything
    assert top_k(scores, 2, exclude=np.ones(scores.shape, bool)).tolist() == [[-1, -1], [-1, -1]]
    # an excluded entry never comes back, even when k exceeds the number of candidates and ties at -inf exist
    s = np.array([[-np.inf, -np.inf, 0.0]])
    assert top_k(s, 3, exclude=filter_matrix([[0, 0]], s.shape)).tolist() == [[2, 1, -1]]
    # chunked processing gives the same answer
    monkeypatch.setattr(xc_module, "_TOPK_CHUNK_ELEMENTS", 5)
    assert top_k(scores, 3, exclude=excl).tolist() == [[0, 2, 4], [4, -1, -1]]
    with pytest.raises(ValueError, match="shape"):
        top_k(scores, 2, exclude=sp.csr_matrix((3, 5)))


def test_top_k_sparse_absent_entries_are_not_candidates():
    dense = np.array([[0.0, 0.7, 0.0, 0.7], [0.0, 0.0, 0.0, 0.0], [0.2, 0.0, 0.5, 0.0]])
    csr = sp.csr_matrix(dense)  # stores the non-zeros only
    assert top_k(csr, 3).tolist() == [[1, 3, -1], [-1, -1, -1], [2, 0, -1]]
    # an explicitly stored zero is a candidate; storage order does not matter
    coo = sp.coo_matrix((np.array([0.0, 0.7, 0.7, -0.1]), (np.array([1, 0, 0, 0]), np.array([2, 3, 1, 0]))), (2, 4))
    assert top_k(coo, 3).tolist() == [[1, 3, 0], [2, -1, -1]]
    assert top_k(coo.tocsc(), 3).tolist() == [[1, 3, 0], [2, -1, -1]]
    # exclude on sparse input
    assert top_k(csr, 2, exclude=filter_matrix([[0, 1]], csr.shape)).tolist() == [[3, -1], [-1, -1], [2, 0]]
    # torch sparse COO behaves like scipy sparse
    t = torch.tensor(dense).to_sparse()
    assert top_k(t, 3).tolist() == [[1, 3, -1], [-1, -1, -1], [2, 0, -1]]


def test_top_k_errors():
    with pytest.raises(ValueError, match="NaN"):
        top_k(np.array([[0.0, np.nan]]), 1)
    with pytest.raises(ValueError, match="NaN"):
        top_k(sp.csr_matrix(np.array([[0.0, np.nan]])), 1)
    with pytest.raises(ValueError, match="positive integer"):
        top_k(np.zeros((2, 3)), 0)
    with pytest.raises(ValueError, match="2-D"):
        top_k(np.zeros(3), 1)


# ---------------------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------------------
def test_errors():
    with pytest.raises(ValueError, match="row 1.*appears more than once"):
        xc_metrics([[0, 1], [2, 2]], [[0], [2]])
    with pytest.raises(ValueError, match="row 0.*outside"):
        xc_metrics([[6, 1]], REFS_CSR[:1])
    with pytest.raises(ValueError, match="row 2.*outside"):
        xc_metrics([[0], [1], [-2]], REFS)
    with pytest.raises(ValueError, match="references row 1.*outside"):
        xc_metrics([[0], [1]], [[0], [9]], num_labels=4)
    with pytest.raises(ValueError, match="2 rows but references have 3"):
        xc_metrics([[0], [1]], REFS)
    with pytest.raises(ValueError, match="inconsistent"):
        xc_metrics(PREDS, REFS_CSR, inv_propensity=np.ones(5))
    with pytest.raises(ValueError, match="inconsistent"):
        xc_metrics(PREDS, REFS_CSR, num_labels=7)
    with pytest.raises(TypeError, match="ambiguous"):
        xc_metrics(PREDS, REFS_CSR.toarray())
    with pytest.raises(ValueError, match="integer"):
        xc_metrics(np.array([[0.5, 1.0]]), [[0]])
    with pytest.raises(ValueError, match="positive integer"):
        xc_metrics(PREDS, REFS, ks=(0, 1))
    with pytest.raises(ValueError, match="outside"):
        xc_metrics(PREDS, REFS, filter_pairs=[[3, 0]])
    with pytest.raises(ValueError, match="non-negative"):
        xc_metrics(PREDS, REFS, inv_propensity=-W)


# ---------------------------------------------------------------------------------------------------------
# property check against a slow reference implementation
# ---------------------------------------------------------------------------------------------------------
def brute_force(preds, refs, ks, w, filter_pairs, ignore_empty):
    """Straight from the definitions, one point and one rank at a time, with python sets."""
    filt = {(int(i), int(l)) for i, l in filter_pairs}
    rows = []
    for i, (p, y) in enumerate(zip(preds, refs)):
        y = {l for l in y if (i, l) not in filt}
        p = [l for l in p if l < 0 or (i, l) not in filt]  # drop filtered predictions, later ones move up
        rows.append((p + [-1] * 20, y))
    out = {}
    kept = [(p, y) for p, y in rows if y or not ignore_empty]
    for k in ks:
        total = sum(sum(1 for r in range(k) if p[r] in y) / k for p, y in kept)
        out[f"P@{k}"] = total / len(kept) if kept else 0.0
    for k in ks:
        total = 0.0
        for p, y in kept:
            if not y:
                continue
            dcg = sum(1 / math.log2(r + 2) for r in range(k) if p[r] in y)
            idcg = sum(1 / math.log2(r + 2) for r in range(min(k, len(y))))
            total += dcg / idcg
        out[f"nDCG@{k}"] = total / len(kept) if kept else 0.0
    if w is not None:
        for k in ks:
            num = sum(sum(w[p[r]] for r in range(k) if p[r] in y) / k for p, y in rows)
            den = sum(sum(sorted((w[l] for l in y), reverse=True)[:k]) / k for p, y in rows)
            out[f"PSP@{k}"] = num / den if den else 0.0
        for k in ks:
            num = sum(sum(w[p[r]] / math.log2(r + 2) for r in range(k) if p[r] in y) for p, y in rows)
            den = 0.0
            for p, y in rows:
                best = sorted((w[l] for l in y), reverse=True)[:k]
                den += sum(v / math.log2(r + 2) for r, v in enumerate(best))
            out[f"PSnDCG@{k}"] = num / den if den else 0.0
    return out


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, n_labels, width = 40, 15, 8
    preds, refs = [], []
    for _ in range(n):
        m = int(rng.integers(0, width + 1))
        row = rng.permutation(n_labels)[:m].tolist()
        if m and rng.random() < 0.3:  # an empty slot somewhere
            row[int(rng.integers(0, m))] = -1
        preds.append(row)
        refs.append(rng.choice(n_labels, size=int(rng.integers(0, 6)), replace=False).tolist())
    w = rng.uniform(1.0, 5.0, size=n_labels)
    pairs = np.stack([rng.integers(0, n, 25), rng.integers(0, n_labels, 25)], axis=1)
    # make some filter pairs hit predictions
    for i in range(0, n, 4):
        if preds[i] and preds[i][0] >= 0:
            pairs = np.vstack([pairs, [i, preds[i][0]]])
    ks = (1, 2, 3, 5, 10)
    for ignore_empty in (False, True):
        for fp in (np.zeros((0, 2), int), pairs):
            got = xc_metrics(
                preds, refs, ks=ks, inv_propensity=w, filter_pairs=fp, num_labels=n_labels, ignore_empty=ignore_empty
            )
            expected = brute_force(preds, refs, ks, w, fp, ignore_empty)
            assert set(got) == set(expected)
            for key in expected:
                assert got[key] == pytest.approx(expected[key], rel=1e-10, abs=1e-12), (key, ignore_empty, len(fp))
                assert 0.0 <= got[key] <= 1.0 + 1e-12
    # same via a sparse reference matrix
    y = sp.lil_matrix((n, n_labels))
    for i, r in enumerate(refs):
        for l in r:
            y[i, l] = 1.0
    assert xc_metrics(preds, y.tocsr(), ks=ks, inv_propensity=w) == pytest.approx(
        brute_force(preds, refs, ks, w, [], False)
    )


@pytest.mark.parametrize("chunk", [None, 17], ids=["one-block", "small-blocks"])
@pytest.mark.parametrize("seed", range(4))
def test_top_k_matches_brute_force(seed, chunk, monkeypatch):
    if chunk is not None:  # force the multi-block code paths (dense row chunks, padded sparse blocks)
        monkeypatch.setattr(xc_module, "_TOPK_CHUNK_ELEMENTS", chunk)
    rng = np.random.default_rng(100 + seed)
    n, n_labels, k = 25, 30, 7
    scores = rng.integers(0, 5, size=(n, n_labels)).astype(np.float64)  # many ties
    present = rng.random((n, n_labels)) < 0.3
    excl = sp.csr_matrix(rng.random((n, n_labels)) < 0.2)
    sparse = sp.coo_matrix((scores[present], np.nonzero(present)), shape=(n, n_labels))

    def expected(candidates):
        out = np.full((n, k), -1)
        for i in range(n):
            cand = [l for l in range(n_labels) if candidates[i, l] and not excl[i, l]]
            ranked = sorted(cand, key=lambda l: (-scores[i, l], l))[:k]
            out[i, : len(ranked)] = ranked
        return out

    np.testing.assert_array_equal(top_k(scores, k, exclude=excl), expected(np.ones((n, n_labels), bool)))
    np.testing.assert_array_equal(top_k(sparse, k, exclude=excl), expected(present))
    np.testing.assert_array_equal(top_k(torch.tensor(scores), k, exclude=excl), expected(np.ones((n, n_labels), bool)))
    # k = 1 and k above the longest row
    np.testing.assert_array_equal(top_k(sparse, 1), top_k(sparse, n_labels + 3)[:, :1])
    assert (top_k(sparse, n_labels + 3) >= 0).sum() == present.sum()
    np.testing.assert_array_equal(top_k(sparse, 3)[:, :3], top_k(sparse, 12)[:, :3])


# ---------------------------------------------------------------------------------------------------------
# evaluate modules
# ---------------------------------------------------------------------------------------------------------
def test_metric_names_and_paths():
    assert METRIC_NAMES == ("precision_at_k", "ndcg_at_k", "psp_at_k", "psndcg_at_k")
    for name in METRIC_NAMES:
        assert metric_path(name).endswith(name)
    with pytest.raises(ValueError, match="unknown"):
        metric_path("recall_at_k")


@pytest.mark.parametrize(
    "name,prefix", [("precision_at_k", "P@"), ("ndcg_at_k", "nDCG@"), ("psp_at_k", "PSP@"), ("psndcg_at_k", "PSnDCG@")]
)
def test_evaluate_modules_match_xc_metrics(name, prefix, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    metric = load_metric(name)
    assert "Extreme" in metric.citation or "extreme" in metric.citation
    ps = name.startswith("ps")
    kw = {"inv_propensity": W.tolist()} if ps else {}
    # two batches, the second with a point without labels and a short prediction row
    preds = PREDS.tolist() + [[0, 1]]
    refs = REFS + [[]]
    metric.add_batch(predictions=preds[:2], references=refs[:2])
    metric.add_batch(predictions=preds[2:], references=refs[2:])
    got = metric.compute(k=[1, 3, 5], **kw)
    full = xc_metrics(preds, refs, ks=(1, 3, 5), num_labels=6, **({"inv_propensity": W} if ps else {}))
    assert got == {key: v for key, v in full.items() if key.startswith(prefix)}
    # int k, filter pairs, and the one-shot compute
    got = metric.compute(predictions=preds, references=refs, k=1, filter_pairs=[[0, 0]], **kw)
    full = xc_metrics(preds, refs, ks=1, num_labels=6, filter_pairs=[[0, 0]], **({"inv_propensity": W} if ps else {}))
    assert got == {key: v for key, v in full.items() if key.startswith(prefix)}
    if ps:
        # the same numbers on the 3-point example, and propensities from training counts
        got = metric.compute(predictions=PREDS.tolist(), references=REFS, k=[1, 3, 5], inv_propensity=W)
        assert_close(got, {key: v for key, v in EXPECTED_PS.items() if key.startswith(prefix)})
        counts = [5, 1, 0, 2, 9, 3]
        got = metric.compute(
            predictions=PREDS.tolist(), references=REFS, k=3, train_label_counts=counts, num_train_points=20
        )
        w = inverse_propensity(np.array(counts), num_points=20)
        full = xc_metrics(PREDS, REFS, ks=3, inv_propensity=w)
        assert got == {key: v for key, v in full.items() if key.startswith(prefix)}
        with pytest.raises(ValueError, match="inv_propensity"):
            metric.compute(predictions=PREDS.tolist(), references=REFS, k=3)
    else:
        got = metric.compute(predictions=PREDS.tolist(), references=REFS, k=[1, 3, 5])
        assert_close(got, {key: v for key, v in EXPECTED_PLAIN.items() if key.startswith(prefix)})
        got = metric.compute(predictions=[[0], [1]], references=[[0], []], k=1, ignore_empty=True)
        assert got == {f"{prefix}1": 1.0}


def test_label_vectors_with_points_by_hand():
    from hf_compress.ramen.predict import label_vectors_with_points

    text = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    points = np.array([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    # label 0 has points 0 and 1 (value 3 counts as present), label 1 has point 2, label 2 has none
    labels = sp.csr_matrix(np.array([[3, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float32))
    got = label_vectors_with_points(text, points, labels, text_weight=2.0)
    raw0 = 2.0 * np.array([1.0, 0.0]) + np.array([0.5, 0.5])
    raw1 = 2.0 * np.array([0.0, 1.0]) + np.array([0.6, 0.8])
    expected = np.stack([raw0 / np.linalg.norm(raw0), raw1 / np.linalg.norm(raw1), [0.6, 0.8]])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert got.dtype == np.float32 and labels.data.tolist() == [3.0, 1.0, 1.0]  # the caller's matrix is untouched
    # text_weight 0: the label vector is the direction of its points' mean
    np.testing.assert_allclose(label_vectors_with_points(text, points, labels, text_weight=0.0)[0], [2 ** -0.5, 2 ** -0.5],
                               atol=1e-6)
    with pytest.raises(ValueError, match="does not match"):
        label_vectors_with_points(text, points[:2], labels)
    with pytest.raises(ValueError, match="text_weight"):
        label_vectors_with_points(text, points, labels, text_weight=-1.0)
