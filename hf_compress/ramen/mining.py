"""Nearest-neighbour search and NGAME-style negative mining for RAMEN.

RAMEN trains a siamese encoder with in-batch negatives; the negatives are only *hard* when a batch holds
points that the current encoder already finds similar. NGAME gets such batches cheaply by clustering the
training points with their current embeddings and making batches of whole clusters, refreshed every few
epochs (:func:`balanced_clusters`, :class:`ClusterBatchSampler`). At inference, and for the classifier
stage's shortlist, labels are retrieved by maximum inner product search (:class:`EmbeddingIndex`,
:func:`shortlist`); :func:`hard_negatives` mines explicit negatives from the same index.

Backends of :class:`EmbeddingIndex` (all optional packages are imported lazily):

- ``"exact"``: chunked torch matmul + top-k, always available, exact;
- ``"hnswlib"``: HNSW graph (``pip install hnswlib``);
- ``"faiss"``: ``index_type="hnsw"`` (IndexHNSWFlat) or ``"ivf"`` (IndexIVFFlat, spherical k-means
  coarse quantizer) (``pip install faiss-cpu``);
- ``"auto"``: chosen at the first :meth:`EmbeddingIndex.add` from the number of vectors (or ``expected_size``),
  by the rule measured with ``benchmarks/ramen_ann.py`` (numbers below :data:`AUTO_EXACT_BELOW`): exact
  below 20k vectors, else hnswlib (M 16, ef_construction 100, ef_search 128), else faiss HNSW, else exact.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sized
from pathlib import Path

import numpy as np
import torch

__all__ = ["EmbeddingIndex", "balanced_clusters", "ClusterBatchSampler", "hard_negatives", "shortlist"]

FORMAT = "hf_compress.ramen.EmbeddingIndex"
FORMAT_VERSION = 1
BACKENDS = ("exact", "hnswlib", "faiss")
METRICS = ("ip", "cos")

# ---------------------------------------------------------------------------------------------------------
# The "auto" rule, from benchmarks/results/ramen_ann.json (benchmarks/ramen_ann.py; this shared 2-core AMD EPYC
# with other jobs running, load 3-8; dim 384; recall@5 vs exact; latency = median of single queries, 1 thread):
#
#   data                      index (build)                         setting     recall@5   latency
#   real MiniLM labels 199k   exact                                 -           1          32 ms
#                             hnswlib M16/efc100 (50-95 s)          ef 64/128/256  .910/.965/.986   .32/.58/1.08 ms
#                             hnswlib M32/efc200 (275 s)            ef 32/64/128   .922/.975/.993   .36/.56/.96 ms
#                             faiss HNSW M32/efc100 (119 s)         ef 64/128/256  .945/.980/.992   .43/.78/1.49 ms
#                             faiss IVF-Flat nlist 1784 (25 s)      nprobe 32/64/128 .885/.916/.944 .37/.66/1.31 ms
#   clustered (mixture) 1M    exact                                 -           1          160-320 ms
#                             hnswlib M16/efc100 (755 s)            ef 64/128/256  .884/.964/.988   .30/.40/.53 ms
#                             faiss HNSW M32/efc100 (584 s)         ef 64/128   .955/.991      .31/.44 ms
#                             faiss IVF-Flat nlist 4000 (178 s)     nprobe 8/32 1.0/1.0        .24/.63 ms
#   uniform (N(0,I)) 1M       hnswlib M16/efc100 (759 s)            ef 256      .038       2.2 ms
#                             faiss IVF-Flat nlist 4000 (144 s)     nprobe 128  .169       2.8 ms
#   clustered 100k            exact 17-25 ms; hnswlib M100/efc300 (the paper's) builds in 233 s vs 42 s for M16/efc100
#                             (5.5x; ~70 min at 1M here, not attempted) for .994 vs .928 recall at ef 16, both 1.0 at ef 128.
#
# Every ANN index is far under the 10 ms/query target at 1M; what separates them is recall on real embeddings and
# build time. IVF wins on mixture data (its lists match the mixture) but is the worst per ms on the real MiniLM
# label embeddings, so graphs it is: hnswlib M16/efc100 builds 2-4x faster than faiss HNSW M32/efc100 and 3-5x
# faster than M32/efc200, and at ef_search 128 keeps recall@5 >= .96 on both real and mixture data at < 0.6 ms.
# Below 20k vectors exact search costs <= ~4-7 ms a query, needs no build and is exact.
# ---------------------------------------------------------------------------------------------------------
AUTO_EXACT_BELOW = 20_000
AUTO_PREFERENCE = ("hnswlib", "faiss")

# Per-backend defaults (the "auto" choice uses these too). ef_search 256 buys ~.99 recall for ~2x the latency.
DEFAULTS = {
    "exact": {"num_threads": None, "chunk_bytes": 256 << 20},
    "hnswlib": {"M": 16, "ef_construction": 100, "ef_search": 128, "num_threads": None, "seed": 100},
    "faiss": {"index_type": "hnsw", "M": 32, "ef_construction": 100, "ef_search": 128, "nlist": None,
              "nprobe": 64, "train_size": None, "kmeans_iterations": 10, "num_threads": None, "seed": 1234},
}
SEARCH_PARAMS = {"exact": ("num_threads", "chunk_bytes"), "hnswlib": ("ef_search", "num_threads"),
                 "faiss": ("ef_search", "nprobe", "num_threads")}


def _package_available(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def _auto_backend(size: int) -> str:
    """The backend "auto" uses for an index of ``size`` vectors (see the numbers above)."""
    if size < AUTO_EXACT_BELOW:
        return "exact"
    for backend in AUTO_PREFERENCE:
        if _package_available(backend):
            return backend
    return "exact"


def _as_matrix(vectors, dim: int | None = None) -> np.ndarray:
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().float().cpu().numpy()
    array = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or (dim is not None and array.shape[1] != dim):
        raise ValueError(f"Expected vectors of shape [n, {dim if dim is not None else 'dim'}], got {array.shape}.")
    return array


def _normalise(array: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return np.ascontiguousarray(array / np.maximum(norms, 1e-12), dtype=np.float32)


class _Threads:
    """Temporarily set the torch / faiss OpenMP thread count (both are process-global)."""

    def __init__(self, count: int | None, faiss_module=None):
        self.count, self.faiss = count, faiss_module

    def __enter__(self):
        if self.count:
            self.torch_prev = torch.get_num_threads()
            torch.set_num_threads(self.count)
            if self.faiss is not None:
                self.faiss_prev = self.faiss.omp_get_max_threads()
                self.faiss.omp_set_num_threads(self.count)
        return self

    def __exit__(self, *exc):
        if self.count:
            torch.set_num_threads(self.torch_prev)
            if self.faiss is not None:
                self.faiss.omp_set_num_threads(self.faiss_prev)


class EmbeddingIndex:
    """Maximum-inner-product (cosine on normalised vectors) nearest-neighbour index over label/point embeddings.

    ``metric="ip"`` scores by the raw inner product (give L2-normalised vectors for cosine, as the RAMEN
    encoder produces); ``metric="cos"`` normalises added vectors and queries itself. ``params`` override
    the backend's :data:`DEFAULTS` (e.g. ``M``, ``ef_construction``, ``ef_search`` for HNSW; ``index_type``,
    ``nlist``, ``nprobe`` for faiss; ``num_threads`` for all). Vector ids are ``0..n-1`` in insertion order;
    several :meth:`add` calls append (an IVF index is trained on the first call only, and ``"auto"`` picks
    its backend at the first call, from that call's size or from ``expected_size`` when given).
    """

    def __init__(self, dim: int, backend: str = "auto", metric: str = "ip", **params):
        if backend not in BACKENDS + ("auto",):
            raise ValueError(f"Unknown backend {backend!r}; choose from {BACKENDS + ('auto',)}.")
        if metric not in METRICS:
            raise ValueError(f"Unknown metric {metric!r}; choose from {METRICS}.")
        self.dim = int(dim)
        self.metric = metric
        self.expected_size = params.pop("expected_size", None)
        self._user_params = dict(params)
        self.backend = backend
        self.params: dict = {}
        self._count = 0
        self._impl = None  # exact: np.ndarray of vectors; hnswlib / faiss: the library's index
        known = set().union(*(DEFAULTS[b] for b in BACKENDS))
        if set(params) - known:
            raise ValueError(f"Unknown parameter(s) {sorted(set(params) - known)}; known: {sorted(known)}.")
        if backend != "auto":
            self._resolve(backend)
        elif self.expected_size is not None:
            self._resolve(_auto_backend(int(self.expected_size)))

    # -- construction -------------------------------------------------------------------------------------
    def _resolve(self, backend: str) -> None:
        unknown = set(self._user_params) - set(DEFAULTS[backend])
        if unknown and self.backend != "auto":
            raise ValueError(f"Unknown parameter(s) {sorted(unknown)} for backend {backend!r}; known: {sorted(DEFAULTS[backend])}.")
        self.backend = backend
        # "auto" may receive parameters meant for another backend: keep only those that apply.
        self.params = {**DEFAULTS[backend], **{k: v for k, v in self._user_params.items() if k in DEFAULTS[backend]}}
        if backend == "faiss" and self.params["index_type"] not in ("hnsw", "ivf"):
            raise ValueError(f"faiss index_type must be 'hnsw' or 'ivf', got {self.params['index_type']!r}.")

    def __len__(self) -> int:
        return self._count

    def set_search_params(self, **params) -> None:
        """Change search-time settings (``ef_search``, ``nprobe``, ``num_threads``, ``chunk_bytes``) of a built
        index, e.g. a lower ``ef_search`` for bulk negative mining, a higher one for evaluation."""
        if self.backend == "auto":
            raise ValueError("The backend of an 'auto' index is chosen at its first add(); set parameters after that.")
        unknown = set(params) - set(SEARCH_PARAMS[self.backend])
        if unknown:
            raise ValueError(f"{sorted(unknown)} are not search parameters of {self.backend!r}: {SEARCH_PARAMS[self.backend]}.")
        self.params.update(params)

    def __repr__(self) -> str:
        return f"EmbeddingIndex(dim={self.dim}, backend={self.backend!r}, metric={self.metric!r}, size={self._count}, params={self.params})"

    def add(self, vectors: np.ndarray) -> None:
        """Append float32 ``[n, dim]`` vectors; they get ids ``len(self) .. len(self) + n - 1``."""
        vectors = _as_matrix(vectors, self.dim)
        if self.metric == "cos":
            vectors = _normalise(vectors)
        if self.backend == "auto":
            self._resolve(_auto_backend(len(vectors)))
        if len(vectors) == 0:
            return
        getattr(self, f"_add_{self.backend}")(vectors)
        self._count += len(vectors)

    def _add_exact(self, vectors: np.ndarray) -> None:
        self._impl = vectors.copy() if self._impl is None else np.concatenate([self._impl, vectors])

    def _add_hnswlib(self, vectors: np.ndarray) -> None:
        import hnswlib

        p = self.params
        total = self._count + len(vectors)
        if self._impl is None:
            self._impl = hnswlib.Index(space="ip", dim=self.dim)
            self._impl.init_index(max_elements=total, ef_construction=int(p["ef_construction"]), M=int(p["M"]),
                                  random_seed=int(p["seed"]))
        elif self._impl.get_max_elements() < total:
            self._impl.resize_index(total)
        ids = np.arange(self._count, total, dtype=np.int64)
        self._impl.add_items(vectors, ids, num_threads=int(p["num_threads"] or -1))

    def _faiss_nlist(self, size: int) -> int:
        nlist = self.params["nlist"] or int(round(4 * math.sqrt(size)))
        return max(1, min(int(nlist), size // 39 if size >= 39 else 1))  # faiss wants >= 39 points per list

    def _add_faiss(self, vectors: np.ndarray) -> None:
        import faiss

        p = self.params
        with _Threads(p["num_threads"], faiss):
            if self._impl is None:
                if p["index_type"] == "hnsw":
                    index = faiss.IndexHNSWFlat(self.dim, int(p["M"]), faiss.METRIC_INNER_PRODUCT)
                    index.hnsw.efConstruction = int(p["ef_construction"])
                else:
                    nlist = self._faiss_nlist(len(vectors))
                    self.params["nlist"] = nlist
                    quantizer = faiss.IndexFlatIP(self.dim)
                    index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
                    index.cp.spherical = True  # centroids on the unit sphere: cosine k-means
                    index.cp.niter = int(p["kmeans_iterations"])
                    index.cp.seed = int(p["seed"])
                    train_size = int(p["train_size"] or 64 * nlist)
                    if train_size < len(vectors):
                        rows = np.sort(np.random.default_rng(int(p["seed"])).choice(len(vectors), train_size, replace=False))
                        sample = vectors[rows]
                    else:
                        sample = vectors
                    index.cp.max_points_per_centroid = max(1, -(-len(sample) // nlist))  # no silent resampling
                    index.train(sample)
                self._impl = index
            self._impl.add(vectors)

    # -- search ---------------------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by inner product: ``(scores [q, k] float32 descending, ids [q, k] int64)``; where fewer
        than ``k`` vectors are found, ids are -1 and scores -inf."""
        queries = _as_matrix(queries, self.dim)
        if self.metric == "cos":
            queries = _normalise(queries)
        q, k = len(queries), int(k)
        scores = np.full((q, max(k, 0)), -np.inf, dtype=np.float32)
        ids = np.full((q, max(k, 0)), -1, dtype=np.int64)
        kk = min(k, self._count)
        if kk <= 0 or q == 0:
            return scores, ids
        found_scores, found_ids = getattr(self, f"_search_{self.backend}")(queries, kk)
        missing = found_ids < 0
        found_scores[missing] = -np.inf
        scores[:, :kk], ids[:, :kk] = found_scores, found_ids
        return scores, ids

    def _search_exact(self, queries: np.ndarray, k: int):
        database = torch.from_numpy(self._impl)
        rows_per_chunk = max(1, int(self.params["chunk_bytes"]) // (4 * max(self._count, 1)))
        out_scores = np.empty((len(queries), k), dtype=np.float32)
        out_ids = np.empty((len(queries), k), dtype=np.int64)
        with torch.inference_mode(), _Threads(self.params["num_threads"]):
            for start in range(0, len(queries), rows_per_chunk):
                block = torch.from_numpy(queries[start:start + rows_per_chunk]) @ database.T
                top = torch.topk(block, k, dim=1, largest=True, sorted=True)
                out_scores[start:start + len(block)] = top.values.numpy()
                out_ids[start:start + len(block)] = top.indices.numpy()
        return out_scores, out_ids

    def _search_hnswlib(self, queries: np.ndarray, k: int):
        p = self.params
        ef = max(int(p["ef_search"]), k)
        while True:
            self._impl.set_ef(ef)
            try:
                labels, distances = self._impl.knn_query(queries, k=k, num_threads=int(p["num_threads"] or -1))
                break
            except RuntimeError:  # hnswlib found fewer than k for some query: widen the beam and retry
                if ef >= self._count:
                    raise
                ef = min(self._count, 2 * ef)
        return (1.0 - distances).astype(np.float32), labels.astype(np.int64)

    def _search_faiss(self, queries: np.ndarray, k: int):
        import faiss

        p = self.params
        if p["index_type"] == "hnsw":
            self._impl.hnsw.efSearch = max(int(p["ef_search"]), k)
        else:
            self._impl.nprobe = int(p["nprobe"])
        with _Threads(p["num_threads"], faiss):
            scores, ids = self._impl.search(queries, k)
        return scores.astype(np.float32, copy=False), ids.astype(np.int64, copy=False)

    # -- persistence ------------------------------------------------------------------------------------------
    _FILES = {"exact": "vectors.npy", "hnswlib": "index.hnswlib", "faiss": "index.faiss"}

    def save(self, folder) -> None:
        """Write ``index.json`` (backend, metric, params, size) plus the backend's own file (no pickles)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "backend": self.backend, "dim": self.dim,
                "metric": self.metric, "size": self._count, "params": self.params if self.backend != "auto" else self._user_params}
        if self._impl is not None:
            meta["file"] = self._FILES[self.backend]
            path = str(folder / meta["file"])
            if self.backend == "exact":
                np.save(path, self._impl, allow_pickle=False)
            elif self.backend == "hnswlib":
                self._impl.save_index(path)
            else:
                import faiss

                faiss.write_index(self._impl, path)
        (folder / "index.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, folder) -> "EmbeddingIndex":
        """Inverse of :meth:`save`."""
        folder = Path(folder)
        meta = json.loads((folder / "index.json").read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{folder}: not an EmbeddingIndex folder (format {meta.get('format')!r}).")
        if meta.get("version", 0) > FORMAT_VERSION:
            raise ValueError(f"{folder}: index format version {meta['version']} is newer than this code ({FORMAT_VERSION}).")
        index = cls(meta["dim"], backend=meta["backend"], metric=meta["metric"], **meta["params"])
        if "file" in meta:
            path = str(folder / meta["file"])
            if index.backend == "exact":
                index._impl = np.ascontiguousarray(np.load(path, allow_pickle=False), dtype=np.float32)
            elif index.backend == "hnswlib":
                import hnswlib

                index._impl = hnswlib.Index(space="ip", dim=index.dim)
                index._impl.load_index(path, max_elements=int(meta["size"]))
            else:
                import faiss

                index._impl = faiss.read_index(path)
            index._count = int(meta["size"])
        return index


# -------------------------------------------------------------------------------------------------------------
# Clustering and batch sampling
# -------------------------------------------------------------------------------------------------------------
def _balanced_split(x: np.ndarray, rng: np.random.Generator, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Split rows of unit vectors ``x`` into two halves (sizes ceil/floor) by balanced spherical 2-means."""
    n = len(x)
    first = n - n // 2  # n >= 2 here, so 1 <= first < n
    centroids = x[rng.choice(n, size=2, replace=False)].copy()
    total = x.sum(axis=0)
    left = None
    for _ in range(max(1, iterations)):
        # sim(x, c0) - sim(x, c1) = x . (c0 - c1): one matrix-vector product
        diff = x @ (centroids[0] - centroids[1])
        # the `first` points that prefer centroid 0 the most go left: balanced by construction
        new_left = np.zeros(n, dtype=bool)
        new_left[np.argpartition(diff, n - first)[n - first:]] = True
        if left is not None and np.array_equal(new_left, left):
            break
        left = new_left
        left_sum = left.astype(np.float32) @ x  # no copy of the selected rows
        for side, mean in enumerate((left_sum, total - left_sum)):
            norm = np.linalg.norm(mean)
            if norm > 1e-12:
                centroids[side] = mean / norm
    return np.flatnonzero(left), np.flatnonzero(~left)


def balanced_clusters(embeddings: np.ndarray, cluster_size: int, seed: int = 0, iterations: int = 5) -> list[np.ndarray]:
    """NGAME-style clusters: recursive balanced 2-means on L2-normalised ``embeddings``.

    Every node is split into two equal halves (a few Lloyd iterations with cosine similarity, points
    assigned by the sorted difference of their similarities to the two centroids) until nodes have
    ``<= cluster_size`` points; the leaves (sizes in ``(cluster_size / 2, cluster_size]`` once anything was
    split) are returned as int64 index arrays covering every point exactly once. Balanced halves keep the
    batches built from clusters equally sized and the cost O(n·dim·iterations·log(n / cluster_size)).
    """
    if cluster_size < 1:
        raise ValueError(f"cluster_size must be >= 1, got {cluster_size}.")
    x = _normalise(_as_matrix(embeddings))
    n = len(x)
    if n == 0:
        return []
    rng = np.random.default_rng(seed)
    leaves: list[np.ndarray] = []
    stack = [np.arange(n, dtype=np.int64)]
    while stack:
        rows = stack.pop()
        if len(rows) <= cluster_size:
            leaves.append(rows)
            continue
        left, right = _balanced_split(x[rows], rng, iterations)
        stack.append(rows[right])
        stack.append(rows[left])
    return leaves


class ClusterBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of similar points for in-batch hard negatives (NGAME), as a ``batch_sampler``.

    Before the first :meth:`refresh` it is a seeded random batch sampler. ``refresh(embeddings)`` (the
    trainer calls it every few epochs with the current encoder's embeddings of all ``num_samples`` points)
    rebuilds :func:`balanced_clusters` of ``cluster_size`` points; each epoch then shuffles the cluster
    order (and the points inside each cluster) with a generator seeded by ``(seed, epoch)``, concatenates
    the clusters and cuts the sequence into batches of ``batch_size``: a batch is made of whole clusters
    except where a cluster straddles two batches. The batch count does not depend on the clusters, so
    ``len()`` is stable for schedulers: ``ceil(n / batch_size)`` (``floor`` with ``drop_last``).

    ``set_epoch(epoch)`` selects the epoch's order (if it is never called, each ``iter()`` advances an
    internal epoch counter). Clusters depend only on (embeddings, seed, number of refreshes), so ranks
    that refresh with the same (all-gathered) embeddings agree; :meth:`set_clusters` takes clusters
    computed elsewhere (e.g. on rank 0 and broadcast).

    Distributed use: with a plain DDP loop pass ``num_replicas`` (world size) and ``rank``: every rank
    builds the same global batch list and takes batches ``rank, rank + num_replicas, ...`` (padded by
    repeating the first batches, or truncated with ``drop_last``, so all ranks get the same count).
    Under ``accelerate`` / the HF ``Trainer`` keep ``num_replicas=1``: accelerate already shards a batch
    sampler the same way (``BatchSamplerShard``); ``set_epoch`` is forwarded to it.
    """

    def __init__(self, data_source_or_num_samples: Sized | int, batch_size: int, cluster_size: int | None = None,
                 drop_last: bool = False, seed: int = 0, num_replicas: int = 1, rank: int = 0):
        super().__init__()
        n = data_source_or_num_samples if isinstance(data_source_or_num_samples, int) else len(data_source_or_num_samples)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"Need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas}, {rank}.")
        self.num_samples = int(n)
        self.batch_size = int(batch_size)
        # several clusters per batch: the hardest negatives come from the same cluster, the rest from
        # nearby clusters of the shuffled order
        self.cluster_size = int(cluster_size) if cluster_size else max(1, self.batch_size // 4)
        self.drop_last = bool(drop_last)
        self.seed = int(seed)
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.clusters: list[np.ndarray] | None = None
        self.num_refreshes = 0
        self._epoch: int | None = None
        self._iterations = 0

    def refresh(self, embeddings) -> None:
        """Re-cluster from the current embeddings ``[num_samples, dim]`` (numpy or torch)."""
        embeddings = _as_matrix(embeddings)
        if len(embeddings) != self.num_samples:
            raise ValueError(f"refresh() got {len(embeddings)} embeddings for {self.num_samples} samples.")
        seed = int(np.random.SeedSequence([self.seed, self.num_refreshes]).generate_state(1)[0])
        self.set_clusters(balanced_clusters(embeddings, self.cluster_size, seed=seed))

    def set_clusters(self, clusters) -> None:
        """Use given clusters (index arrays covering ``0..num_samples-1`` exactly once)."""
        clusters = [np.asarray(c, dtype=np.int64) for c in clusters]
        covered = np.concatenate(clusters) if clusters else np.empty(0, dtype=np.int64)
        if len(covered) != self.num_samples or not np.array_equal(np.sort(covered), np.arange(self.num_samples)):
            raise ValueError("clusters must cover every sample index exactly once.")
        self.clusters = clusters
        self.num_refreshes += 1

    def set_epoch(self, epoch: int) -> None:
        self._epoch = int(epoch)

    def _num_global_batches(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def __len__(self) -> int:
        total = self._num_global_batches()
        if self.num_replicas == 1:
            return total
        return total // self.num_replicas if self.drop_last else -(-total // self.num_replicas)

    def global_batches(self, epoch: int) -> list[np.ndarray]:
        """All ranks' batches of ``epoch``, in order."""
        rng = np.random.default_rng([self.seed, epoch])
        if self.clusters is None:
            order = rng.permutation(self.num_samples)
        else:
            order = np.concatenate([rng.permutation(self.clusters[c]) for c in rng.permutation(len(self.clusters))]
                                   or [np.empty(0, dtype=np.int64)])
        batches = [order[start:start + self.batch_size] for start in range(0, self.num_samples, self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches

    def __iter__(self):
        epoch = self._epoch if self._epoch is not None else self._iterations
        self._iterations += 1
        batches = self.global_batches(epoch)
        if self.num_replicas > 1:
            if self.drop_last:
                batches = batches[: len(batches) - len(batches) % self.num_replicas]
            elif batches:
                pad = -len(batches) % self.num_replicas
                batches = batches + [batches[i % len(batches)] for i in range(pad)]
            batches = batches[self.rank::self.num_replicas]
        for batch in batches:
            yield batch.tolist()


# -------------------------------------------------------------------------------------------------------------
# Mining and shortlists
# -------------------------------------------------------------------------------------------------------------
def _as_index(candidates) -> EmbeddingIndex:
    if isinstance(candidates, EmbeddingIndex):
        return candidates
    matrix = _as_matrix(candidates)
    index = EmbeddingIndex(matrix.shape[1], backend="exact")
    index.add(matrix)
    return index


def hard_negatives(query_embeddings, candidate_index_or_embeddings, positives, k: int, search_k: int | None = None,
                   return_scores: bool = False, chunk_size: int = 4096):
    """``[q, k]`` int64 ids of the highest-scoring candidates that are NOT positives of that query (-1 padding).

    ``positives`` is a ``[q, num_candidates]`` sparse matrix whose stored non-zeros mark each query's
    positives (for point-to-point mining, put the point itself there too). Candidates come from an
    :class:`EmbeddingIndex` or, given a matrix, from an exact index over it. Each chunk of queries searches
    ``k + max positives per row`` candidates (or ``search_k``), enough to leave ``k`` non-positives for an
    exact index; an approximate index can return fewer (padded with -1). ``return_scores=True`` also
    returns their scores (``-inf`` padding).
    """
    import scipy.sparse as sp

    index = _as_index(candidate_index_or_embeddings)
    queries = _as_matrix(query_embeddings, index.dim)
    positives = sp.csr_matrix(positives)
    if positives.shape[0] != len(queries):
        raise ValueError(f"positives has {positives.shape[0]} rows for {len(queries)} queries.")
    if positives.nnz and (positives.data == 0).any():
        positives = positives.copy()
        positives.eliminate_zeros()
    k = int(k)
    out_ids = np.full((len(queries), max(k, 0)), -1, dtype=np.int64)
    out_scores = np.full((len(queries), max(k, 0)), -np.inf, dtype=np.float32)
    if k <= 0:
        return (out_ids, out_scores) if return_scores else out_ids
    width = np.int64(max(positives.shape[1], len(index)) + 1)
    for start in range(0, len(queries), chunk_size):
        stop = min(start + chunk_size, len(queries))
        block = positives[start:stop]
        per_row = np.diff(block.indptr)
        wanted = search_k if search_k is not None else k + (int(per_row.max()) if len(per_row) else 0)
        scores, ids = index.search(queries[start:stop], min(max(int(wanted), k), len(index)))
        rows = np.repeat(np.arange(stop - start, dtype=np.int64), per_row)
        positive_keys = rows * width + block.indices.astype(np.int64)
        keys = np.arange(stop - start, dtype=np.int64)[:, None] * width + ids
        keep = (ids >= 0) & ~np.isin(keys, positive_keys)
        rank = np.cumsum(keep, axis=1)
        r, c = np.nonzero(keep & (rank <= k))
        out_ids[start + r, rank[r, c] - 1] = ids[r, c]
        out_scores[start + r, rank[r, c] - 1] = scores[r, c]
    return (out_ids, out_scores) if return_scores else out_ids


def shortlist(index: EmbeddingIndex, query_embeddings, k: int, num_items: int | None = None):
    """``[q, num_items]`` CSR float32 with the scores of each query's top-``k`` candidates (for fusing the
    encoder's scores with a classifier's on the shortlist); ``num_items`` defaults to ``len(index)``."""
    import scipy.sparse as sp

    scores, ids = index.search(query_embeddings, k)
    valid = ids >= 0
    indptr = np.concatenate([[0], np.cumsum(valid.sum(axis=1))]).astype(np.int64)
    matrix = sp.csr_matrix((scores[valid].astype(np.float32), ids[valid], indptr),
                           shape=(len(ids), int(num_items) if num_items is not None else len(index)))
    matrix.sort_indices()
    return matrix
