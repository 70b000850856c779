"""Graph re-weighting (cosine, D^-1/2 W D^-1/2, pruning) on hand-made matrices, and weighted anchor sampling in
the RAMEN collator: frequencies follow the weights, zero-weight edges are never drawn, seeded runs repeat."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from transformers import BertTokenizerFast

from hf_compress.ramen.collator import RamenCollator
from hf_compress.ramen.graph_weights import edge_cosines, normalise_bipartite, reweight_graph

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(40)]


@pytest.fixture
def tokenizer():
    return BertTokenizerFast(vocab={word: i for i, word in enumerate(WORDS)}, do_lower_case=False)


def test_normalise_bipartite_exact_values():
    # row degrees 3, 4; column degrees 1, 4, 2
    weights = sp.csr_matrix(np.array([[1.0, 2.0, 0.0], [0.0, 2.0, 2.0]]))
    normalised = normalise_bipartite(weights).toarray()
    expected = np.array([
        [1 / math.sqrt(3 * 1), 2 / math.sqrt(3 * 4), 0.0],
        [0.0, 2 / math.sqrt(4 * 4), 2 / math.sqrt(4 * 2)],
    ])
    np.testing.assert_allclose(normalised, expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(normalised, [[3 ** -0.5, 3 ** -0.5, 0], [0, 0.5, 2 ** -0.5]], atol=1e-15)
    # an all-zero row / column stays zero instead of dividing by zero
    empty = normalise_bipartite(sp.csr_matrix(np.array([[0.0, 0.0], [0.0, 4.0]]))).toarray()
    np.testing.assert_array_equal(empty, [[0.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="non-negative"):
        normalise_bipartite(sp.csr_matrix(np.array([[-1.0]])))


def test_reweight_uses_cosines_not_the_original_weights_and_prunes():
    s = 1 / math.sqrt(2)
    points = np.array([[2.0, 0.0], [0.0, 3.0]])  # not unit length: cosines are taken anyway
    anchors = np.array([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    # edges p0-a0 (cos 1), p0-a1 (cos s), p0-a2 (cos -1), p1-a1 (cos s); original weights are ignored
    graph = sp.csr_matrix(np.array([[5.0, 7.0, 1.0], [0.0, 2.0, 0.0]]))
    np.testing.assert_allclose(edge_cosines(graph, points, anchors), [1.0, s, -1.0, s], atol=1e-12)
    reweighted = reweight_graph(graph, points, anchors)
    assert reweighted.dtype == np.float32 and reweighted.shape == graph.shape
    # W = [[1, s, 0], [0, s, 0]]: point degrees 1 + s, s; anchor degrees 1, 2s, 0
    expected = np.array([
        [1 / math.sqrt(1 + s), s / math.sqrt((1 + s) * 2 * s), 0.0],
        [0.0, s / math.sqrt(s * 2 * s), 0.0],
    ])
    np.testing.assert_allclose(reweighted.toarray(), expected, rtol=1e-6)
    assert reweighted.nnz == 3  # the negative-cosine edge is gone, not stored as 0
    pruned = reweight_graph(graph, points, anchors, min_weight=0.6)  # drops p0-a1 (0.455)
    assert sorted(zip(*pruned.nonzero())) == [(0, 0), (1, 1)]
    np.testing.assert_allclose(pruned.data, [expected[0, 0], expected[1, 1]], rtol=1e-6)
    with pytest.raises(ValueError, match="min_weight"):
        reweight_graph(graph, points, anchors, min_weight=-0.1)
    with pytest.raises(ValueError, match="anchor embeddings"):
        reweight_graph(graph, points, anchors[:2])


def test_threshold_drops_edges_at_the_threshold():
    same = np.array([[1.0, 0.0], [1.0, 0.0]])
    full = sp.csr_matrix(np.ones((2, 2)))  # every cosine is 1 -> every normalised weight is 1 / sqrt(2 * 2)
    np.testing.assert_array_equal(reweight_graph(full, same, same).toarray(), np.full((2, 2), 0.5))
    assert reweight_graph(full, same, same, min_weight=0.5).nnz == 0
    assert reweight_graph(full, same, same, min_weight=0.49).nnz == 4


def _sampling_collator(tokenizer, graph, seed=0, weighted=True, anchors_per_point=1):
    n, m = graph.shape
    labels = sp.csr_matrix(np.ones((n, 1), dtype=np.float32))
    return RamenCollator(tokenizer, [f"w{i}" for i in range(n)], labels, ["w39"],
                         graphs={"g": (graph, [f"w{20 + a}" for a in range(m)])},
                         anchors_per_point=anchors_per_point, seed=seed,
                         weighted_graphs={"g"} if weighted else set())


def test_weighted_sampling_follows_edge_weights_and_never_draws_zero_weights(tokenizer):
    # point 0: anchors 0..3 with weights 0.6, 0.3, 0.1 and an explicitly stored 0
    graph = sp.csr_matrix((np.array([0.6, 0.3, 0.1, 0.0]), np.array([0, 1, 2, 3]), np.array([0, 4])), shape=(1, 4))
    assert graph.nnz == 4  # the zero is a stored edge
    collator = _sampling_collator(tokenizer, graph)
    draws = np.asarray(collator._sample_neighbours(collator.graphs["g"][0], np.zeros(20000, np.int64), 1, weighted=True))
    frequencies = np.bincount(draws, minlength=4) / len(draws)
    assert frequencies[3] == 0.0
    np.testing.assert_allclose(frequencies[:3], [0.6, 0.3, 0.1], atol=0.015)
    # two anchors per point: drawn without replacement, still never the zero-weight edge
    pairs = collator._sample_neighbours(collator.graphs["g"][0], np.zeros(2000, np.int64), 2, weighted=True)
    pairs = np.asarray(pairs).reshape(-1, 2)
    assert (pairs[:, 0] != pairs[:, 1]).all() and not (pairs == 3).any()
    # asking for more anchors than there are positive weights returns the positive ones only
    assert sorted(collator._sample_neighbours(collator.graphs["g"][0], np.zeros(1, np.int64), 4, weighted=True)) == [0, 1, 2]
    # through __call__: the sampled anchor text is never the zero-weight one
    zero_token = tokenizer.convert_tokens_to_ids("w23")
    for _ in range(200):
        batch = collator([{"point_id": 0}])
        assert batch["segment_sizes"].tolist() == [1, 1, 1]
        assert zero_token not in batch["input_ids"][2].tolist()


def test_unweighted_graphs_keep_uniform_sampling(tokenizer):
    graph = sp.csr_matrix(np.array([[0.6, 0.3, 0.1]]))
    collator = _sampling_collator(tokenizer, graph, weighted=False)
    draws = np.asarray(collator._sample_neighbours(collator.graphs["g"][0], np.zeros(20000, np.int64), 1))
    np.testing.assert_allclose(np.bincount(draws, minlength=3) / len(draws), [1 / 3] * 3, atol=0.015)
    # the uniform path draws exactly what it drew before weighted sampling existed
    rng = np.random.default_rng(5)
    collator._rng = np.random.default_rng(5)
    expected = [int(rng.choice(np.array([0, 1, 2]), size=1, replace=False)[0]) for _ in range(50)]
    assert collator._sample_neighbours(collator.graphs["g"][0], np.zeros(50, np.int64), 1) == expected


def test_seeded_weighted_sampling_is_reproducible(tokenizer):
    rng = np.random.default_rng(0)
    graph = sp.random(8, 12, density=0.5, format="csr", random_state=1, data_rvs=lambda k: rng.uniform(0.1, 1.0, k))
    features = [{"point_id": i} for i in range(8)]

    def run(seed):
        collator = _sampling_collator(tokenizer, graph, seed=seed, anchors_per_point=2)
        return [collator(features)["input_ids"].tolist() for _ in range(5)]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_set_graph_swaps_in_a_pruned_matrix_for_sampling_and_the_linked_mask(tokenizer):
    # both points are linked to anchor 0 in the original graph
    original = sp.csr_matrix(np.array([[1.0, 0.0], [1.0, 1.0]]))
    collator = _sampling_collator(tokenizer, original, weighted=False)
    assert collator.weighted_graphs == set()
    pruned = sp.csr_matrix(np.array([[0.7, 0.0], [0.0, 0.5]]))  # point 1 lost its edge to anchor 0
    collator.set_graph("g", pruned)
    assert collator.weighted_graphs == {"g"}
    for _ in range(20):
        batch = collator([{"point_id": 0}, {"point_id": 1}])
        # anchors 0 (from point 0) and 1 (from point 1) are in the batch; only the kept edges are positives
        assert batch["segment_sizes"].tolist()[2] == 2
        assert batch["graph_g_linked"].tolist() == [[True, False], [False, True]]
    with pytest.raises(ValueError, match="2 x 2"):
        collator.set_graph("g", sp.csr_matrix((2, 3)))
    with pytest.raises(ValueError, match=">= 0"):
        collator.set_graph("g", sp.csr_matrix(np.array([[-1.0, 0.0], [0.0, 1.0]])))
    with pytest.raises(KeyError, match="no graph 'h'"):
        collator.set_graph("h", pruned)
    collator.set_graph("g", original, weighted=False)
    assert collator.weighted_graphs == set()
    with pytest.raises(ValueError, match="weighted_graphs"):
        RamenCollator(tokenizer, ["w1", "w2"], sp.csr_matrix((2, 1)), ["w3"], graphs={"g": (original, ["w4", "w5"])},
                      weighted_graphs={"h"})
