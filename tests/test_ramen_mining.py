"""ANN index, balanced clustering, cluster batch sampler and negative mining of hf_compress.ramen.mining."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from hf_compress.ramen.mining import (
    ClusterBatchSampler,
    EmbeddingIndex,
    balanced_clusters,
    hard_negatives,
    shortlist,
)

HAS_HNSWLIB = importlib.util.find_spec("hnswlib") is not None
HAS_FAISS = importlib.util.find_spec("faiss") is not None


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def blobs(n: int, dim: int, centers: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around ``centers`` random directions, and each point's blob."""
    rng = np.random.default_rng(seed)
    middle = unit(rng.standard_normal((centers, dim)))
    assign = rng.integers(0, centers, size=n)
    return unit(middle[assign] + noise * rng.standard_normal((n, dim)) / np.sqrt(dim)), assign


def brute_force(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ base.T
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, ids, axis=1), ids


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


@pytest.fixture(scope="module")
def clustered():
    base, _ = blobs(5000, 32, centers=40, noise=1.0, seed=1)
    queries, _ = blobs(200, 32, centers=40, noise=1.0, seed=1)  # same centers (same seed), fresh noise below
    rng = np.random.default_rng(2)
    queries = unit(queries + 0.3 * rng.standard_normal(queries.shape) / np.sqrt(32))
    return base, queries


# ----------------------------------------------------------------------------------------------------------
# EmbeddingIndex
# ----------------------------------------------------------------------------------------------------------
def test_exact_matches_brute_force():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((3000, 24)).astype(np.float32)  # not normalised: raw inner product
    queries = rng.standard_normal((70, 24)).astype(np.float32)
    index = EmbeddingIndex(24, backend="exact", chunk_bytes=4 * 3000 * 16)  # forces several query chunks
    index.add(base[:1000])
    index.add(base[1000:])  # ids continue in insertion order
    assert len(index) == 3000 and index.backend == "exact" and index.dim == 24
    scores, ids = index.search(queries, 7)
    ref_scores, ref_ids = brute_force(base, queries, 7)
    assert scores.dtype == np.float32 and ids.dtype == np.int64 and scores.shape == ids.shape == (70, 7)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_padding_and_cosine_metric():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((4, 8)).astype(np.float32) * 5
    index = EmbeddingIndex(8, backend="exact", metric="cos")
    index.add(base)
    scores, ids = index.search(base[0], 6)  # 1-D query is one query; k > size pads
    assert ids.shape == (1, 6) and ids[0, 0] == 0 and np.isclose(scores[0, 0], 1.0, atol=1e-5)
    assert (ids[0, 4:] == -1).all() and np.isneginf(scores[0, 4:]).all() and (ids[0, :4] >= 0).all()
    empty = EmbeddingIndex(8, backend="exact")
    assert (empty.search(base, 3)[1] == -1).all()


def test_auto_picks_exact_for_small_indexes(clustered):
    base, queries = clustered
    index = EmbeddingIndex(32)  # "auto"
    index.add(base)
    assert index.backend == "exact"
    np.testing.assert_array_equal(index.search(queries, 5)[1], brute_force(base, queries, 5)[1])
    assert EmbeddingIndex(32, expected_size=10).backend == "exact"
    with pytest.raises(ValueError):
        EmbeddingIndex(32, backend="exact", M=16)  # parameters of another backend are refused when explicit
    with pytest.raises(ValueError):
        EmbeddingIndex(32, ef_serch=10)  # and typos always


def test_auto_rule_prefers_hnswlib_then_faiss_then_exact(monkeypatch):
    from hf_compress.ramen import mining

    base, _ = blobs(500, 8, centers=4, noise=1.0)
    monkeypatch.setattr(mining, "AUTO_EXACT_BELOW", 100)
    index = EmbeddingIndex(8, M=8)  # parameters for backends "auto" does not pick are ignored
    index.add(base)
    expected = "hnswlib" if HAS_HNSWLIB else "faiss" if HAS_FAISS else "exact"
    assert index.backend == expected
    if expected == "hnswlib":
        assert index.params["M"] == 8 and index.params["ef_search"] == mining.DEFAULTS["hnswlib"]["ef_search"]
    monkeypatch.setattr(mining, "_package_available", lambda name: False)
    fallback = EmbeddingIndex(8)
    fallback.add(base)
    assert fallback.backend == "exact"


def test_set_search_params():
    base, _ = blobs(300, 8, centers=4, noise=1.0)
    index = EmbeddingIndex(8, backend="exact")
    index.add(base)
    index.set_search_params(num_threads=1)
    assert index.params["num_threads"] == 1
    with pytest.raises(ValueError):
        index.set_search_params(ef_search=10)
    with pytest.raises(ValueError):
        EmbeddingIndex(8).set_search_params(num_threads=1)  # "auto" before add(): backend unknown yet


ANN_BACKENDS = [
    pytest.param("hnswlib", {}, marks=pytest.mark.skipif(not HAS_HNSWLIB, reason="hnswlib not installed")),
    pytest.param("faiss", {"index_type": "hnsw"}, marks=pytest.mark.skipif(not HAS_FAISS, reason="faiss not installed")),
    pytest.param("faiss", {"index_type": "ivf", "nprobe": 16}, marks=pytest.mark.skipif(not HAS_FAISS, reason="faiss not installed")),
]


@pytest.mark.parametrize("backend,params", ANN_BACKENDS)
def test_ann_recall_and_save_load(backend, params, clustered, tmp_path):
    base, queries = clustered
    index = EmbeddingIndex(32, backend=backend, num_threads=1, **params)
    index.add(base)
    scores, ids = index.search(queries, 5)
    _, truth = brute_force(base, queries, 5)
    assert recall(ids, truth) >= 0.95
    # the scores are the true inner products of the returned ids, in descending order
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", queries, base[ids]), rtol=1e-4, atol=1e-4)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)

    # a wider search (all IVF lists / a beam as large as the index) is at least as good
    key = "nprobe" if params.get("index_type") == "ivf" else "ef_search"
    setting = index.params[key]
    index.set_search_params(**{key: index.params["nlist"] if key == "nprobe" else len(base)})
    assert recall(index.search(queries, 5)[1], truth) >= recall(ids, truth)
    index.set_search_params(**{key: setting})
    index.save(tmp_path / "index")
    assert not any(p.suffix in (".pkl", ".pickle") for p in (tmp_path / "index").iterdir())
    loaded = EmbeddingIndex.load(tmp_path / "index")
    assert (loaded.backend, loaded.dim, len(loaded), loaded.params) == (backend, 32, len(base), index.params)
    loaded_scores, loaded_ids = loaded.search(queries, 5)
    np.testing.assert_array_equal(loaded_ids, ids)
    np.testing.assert_allclose(loaded_scores, scores, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", ["exact", pytest.param("hnswlib", marks=pytest.mark.skipif(not HAS_HNSWLIB, reason="no hnswlib"))])
def test_incremental_add_after_load(backend, tmp_path):
    base, _ = blobs(600, 16, centers=5, noise=1.0)
    index = EmbeddingIndex(16, backend=backend)
    index.add(base[:300])
    index.save(tmp_path)
    loaded = EmbeddingIndex.load(tmp_path)
    loaded.add(base[300:])
    assert len(loaded) == 600
    _, ids = loaded.search(base[450:460], 1)
    np.testing.assert_array_equal(ids[:, 0], np.arange(450, 460))  # each vector finds itself, new ids appended


def test_exact_save_load_roundtrip(clustered, tmp_path):
    base, queries = clustered
    index = EmbeddingIndex(32, backend="exact", metric="cos")
    index.add(base)
    index.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json", "vectors.npy"]
    loaded = EmbeddingIndex.load(tmp_path)
    assert loaded.metric == "cos"
    for a, b in zip(index.search(queries, 5), loaded.search(queries, 5)):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------------------------------------
# Clustering and the batch sampler
# ----------------------------------------------------------------------------------------------------------
def test_balanced_clusters_cover_and_group_planted_blobs():
    x, blob = blobs(2048, 16, centers=8, noise=0.3, seed=3)
    clusters = balanced_clusters(x * 3.0, cluster_size=64, seed=0)  # scale must not matter (normalised)
    everything = np.concatenate(clusters)
    assert len(everything) == len(x) and np.array_equal(np.sort(everything), np.arange(len(x)))
    sizes = np.array([len(c) for c in clusters])
    assert sizes.max() <= 64 and sizes.min() > 32
    purity = np.mean([np.bincount(blob[c]).max() / len(c) for c in clusters])
    assert purity >= 0.9
    again = balanced_clusters(x, cluster_size=64, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(clusters, again))  # deterministic per seed
    assert balanced_clusters(x[:10], cluster_size=64)[0].tolist() == list(range(10))
    assert balanced_clusters(np.empty((0, 4)), 8) == []
    odd = balanced_clusters(x[:1001], cluster_size=1)
    assert len(odd) == 1001


def test_sampler_random_before_refresh_and_epochs():
    sampler = ClusterBatchSampler(103, batch_size=10, seed=5)
    assert len(sampler) == 11
    sampler.set_epoch(0)
    first = list(sampler)
    assert [len(b) for b in first] == [10] * 10 + [3]
    assert sorted(i for b in first for i in b) == list(range(103))
    assert list(sampler) == first  # same epoch -> same batches
    sampler.set_epoch(1)
    assert list(sampler) != first
    dropped = ClusterBatchSampler(103, batch_size=10, seed=5, drop_last=True)
    assert len(dropped) == 10 and all(len(b) == 10 for b in dropped)
    # without set_epoch every iteration is a new (deterministic) epoch
    auto = ClusterBatchSampler(103, batch_size=10, seed=5)
    assert list(auto) == first and list(auto) != first


def test_sampler_after_refresh_batches_near_neighbours():
    x, blob = blobs(1200, 16, centers=30, noise=0.8, seed=4)
    sampler = ClusterBatchSampler(list(range(1200)), batch_size=40, cluster_size=20, seed=1)
    sampler.set_epoch(0)
    random_batches = list(sampler)
    sampler.refresh(torch.from_numpy(x))
    sampler.set_epoch(0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 30
    assert sorted(i for b in batches for i in b) == list(range(1200))

    def mean_intra_cosine(batches):
        return np.mean([(x[b] @ x[b].T)[~np.eye(len(b), dtype=bool)].mean() for b in batches])

    assert mean_intra_cosine(batches) > mean_intra_cosine(random_batches) + 0.15  # ~0.21 vs ~0.01
    sampler.set_epoch(0)
    assert list(sampler) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches
    # same seed + same embeddings -> same batches in another process / rank
    other = ClusterBatchSampler(1200, batch_size=40, cluster_size=20, seed=1)
    other.refresh(x)
    other.set_epoch(0)
    assert list(other) == batches
    with pytest.raises(ValueError):
        sampler.refresh(x[:10])


@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_distributed_split(drop_last):
    x, _ = blobs(250, 8, centers=5, noise=0.5)
    full = ClusterBatchSampler(250, batch_size=16, cluster_size=8, drop_last=drop_last, seed=2)
    full.refresh(x)
    full.set_epoch(3)
    global_batches = [b.tolist() for b in full.global_batches(3)]
    ranks = []
    for rank in range(3):
        sampler = ClusterBatchSampler(250, batch_size=16, cluster_size=8, drop_last=drop_last, seed=2, num_replicas=3, rank=rank)
        sampler.refresh(x)
        sampler.set_epoch(3)
        ranks.append(list(sampler))
        assert len(ranks[-1]) == len(sampler)
    assert len({len(r) for r in ranks}) == 1  # every rank the same number of steps
    interleaved = [ranks[i % 3][i // 3] for i in range(3 * len(ranks[0]))]
    assert interleaved == (global_batches + global_batches)[: len(interleaved)]  # rank r takes r, r+3, ...
    covered = {i for r in ranks for b in r for i in b}
    if drop_last:
        assert len(covered) == 16 * 3 * len(ranks[0])  # whole batches only, none repeated
    else:
        assert covered == set(range(250))


def test_sampler_works_in_dataloader():
    data = torch.arange(50)
    sampler = ClusterBatchSampler(data, batch_size=8, seed=0)
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler)
    seen = torch.cat(list(loader))
    assert sorted(seen.tolist()) == list(range(50)) and len(loader) == 7


# ----------------------------------------------------------------------------------------------------------
# Mining and shortlists
# ----------------------------------------------------------------------------------------------------------
def test_hard_negatives_never_returns_positives():
    x, _ = blobs(800, 16, centers=10, noise=0.6, seed=5)
    queries = x[:120]
    rng = np.random.default_rng(0)
    # positives: the point itself, its 3 nearest neighbours (the hardest candidates) and a few random ones
    _, near = brute_force(x, queries, 4)
    rows = np.repeat(np.arange(120), 7)
    cols = np.concatenate([near, rng.integers(0, 800, size=(120, 3))], axis=1).ravel()
    positives = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(120, 800))
    positives.sum_duplicates()
    negatives, scores = hard_negatives(queries, x, positives, k=10, return_scores=True, chunk_size=50)
    assert negatives.shape == (120, 10) and negatives.dtype == np.int64 and (negatives >= 0).all()
    for q in range(120):
        assert not set(negatives[q]) & set(positives[q].indices)
    # they are the top-10 of the non-positives, in order
    all_scores = queries @ x.T
    all_scores[positives.toarray() > 0] = -np.inf
    np.testing.assert_array_equal(negatives, np.argsort(-all_scores, axis=1, kind="stable")[:, :10])
    np.testing.assert_allclose(scores, np.take_along_axis(all_scores, negatives, axis=1), rtol=1e-5, atol=1e-5)
    # given an index instead of a matrix; explicit zeros in positives are not positives
    index = EmbeddingIndex(16, backend="exact")
    index.add(x)
    np.testing.assert_array_equal(hard_negatives(queries, index, positives, k=10), negatives)
    few = hard_negatives(x[:2], x[:5], sp.csr_matrix(np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]])), k=4)
    assert sorted(few[0][:2].tolist()) == [3, 4] and (few[0][2:] == -1).all() and (few[1] >= 0).all()


def test_shortlist_shape_and_values(clustered):
    base, queries = clustered
    index = EmbeddingIndex(32, backend="exact")
    index.add(base)
    matrix = shortlist(index, queries, 5)
    assert isinstance(matrix, sp.csr_matrix) and matrix.shape == (len(queries), len(base)) and matrix.dtype == np.float32
    assert (np.diff(matrix.indptr) == 5).all()
    scores, ids = brute_force(base, queries, 5)
    for q in range(len(queries)):
        row = matrix[q]
        assert set(row.indices) == set(ids[q])
        np.testing.assert_allclose(np.sort(row.data)[::-1], scores[q], rtol=1e-5, atol=1e-5)
    small = EmbeddingIndex(32, backend="exact")
    small.add(base[:3])
    padded = shortlist(small, queries[:4], 5, num_items=10)
    assert padded.shape == (4, 10) and padded.nnz == 12
