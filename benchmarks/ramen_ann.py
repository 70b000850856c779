"""Nearest-neighbour backends of ``hf_compress.ramen.mining.EmbeddingIndex`` side by side (sets its "auto" rule).

For each data set (``clustered``: a Gaussian mixture with a power-law noise spectrum, effective dimension
~26, closer to sentence embeddings; ``uniform``: normalised N(0, I), the worst case for graph indexes;
``file``: real embeddings from ``--embeddings``, e.g. the MiniLM label embeddings ramen_scale.py caches)
and each size N, every backend configuration is built in its own subprocess (so peak RSS is its own) and
measured: build time (all threads), single-query latency (one query per call, median / p95 over
``--latency_queries`` queries, 1 and 2 threads), batch throughput (all queries in one call, all threads),
recall@5 against exact search, peak RSS and on-disk size.

    nice -n 10 python benchmarks/ramen_ann.py                                  # 100k and 1M, default configs
    python benchmarks/ramen_ann.py --sizes 20000 --datasets clustered --quick  # smoke run
    nice -n 10 python benchmarks/ramen_ann.py --datasets file --append \
        --embeddings /tmp/ramen_scale_cache/labels_200000_0_16.npy              # real MiniLM label embeddings

Configurations are strings ``backend[:key=value,...]``, e.g. ``hnswlib:M=16,ef_construction=100``,
``faiss:index_type=ivf``; search settings (``ef_search`` / ``nprobe``) are swept inside one build.
Results go to ``benchmarks/results/ramen_ann.json`` (rewritten after every measurement) and a log.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
DIM = 384
GT_K = 10

DEFAULT_CONFIGS = {
    100_000: ["exact", "hnswlib:M=16,ef_construction=100", "hnswlib:M=32,ef_construction=200",
              "hnswlib:M=100,ef_construction=300", "faiss:index_type=hnsw,M=32,ef_construction=100",
              "faiss:index_type=ivf"],
    1_000_000: ["exact", "hnswlib:M=16,ef_construction=100", "hnswlib:M=32,ef_construction=200", "faiss:index_type=ivf"],
}
EF_SEARCH = [16, 32, 64, 128, 256]
NPROBE = [4, 8, 16, 32, 64, 128]


def memory_kb() -> dict:
    """Current and peak resident set size of this process (kB), from /proc (C++ allocations included)."""
    out = {}
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1])
    except OSError:
        import resource

        out["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return out


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------
def make_data(kind: str, n: int, num_queries: int, dim: int = DIM, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, n, 0 if kind == "uniform" else 1])
    total = n + num_queries
    if kind == "uniform":
        x = rng.standard_normal((total, dim), dtype=np.float32)
    elif kind == "clustered":
        components = max(10, int(2 * math.sqrt(n)))  # 632 at 100k, 2000 at 1M
        centers = rng.standard_normal((components, dim), dtype=np.float32)
        centers /= np.linalg.norm(centers, axis=1, keepdims=True)
        # anisotropic noise: std_j ~ (j+1)^-1/2 on a random orthonormal basis, total norm = spread
        basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        spectrum = (1.0 / np.sqrt(np.arange(1, dim + 1))).astype(np.float32)
        spectrum /= np.linalg.norm(spectrum)
        mixing = (spectrum[:, None] * basis.T.astype(np.float32))
        spread = rng.uniform(0.6, 1.0, size=components).astype(np.float32)
        x = np.empty((total, dim), dtype=np.float32)
        for start in range(0, total, 200_000):
            stop = min(start + 200_000, total)
            assign = rng.integers(0, components, size=stop - start)
            noise = rng.standard_normal((stop - start, dim), dtype=np.float32) @ mixing
            x[start:stop] = centers[assign] + spread[assign, None] * noise
    else:
        raise ValueError(kind)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x[:n]), np.ascontiguousarray(x[n:])


def split_file(path: str, num_queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Real embeddings (e.g. MiniLM label embeddings cached by ramen_scale.py): hold out ``num_queries`` rows."""
    x = np.load(path).astype(np.float32, copy=False)
    held = np.zeros(len(x), dtype=bool)
    held[np.random.default_rng(seed).choice(len(x), num_queries, replace=False)] = True
    return np.ascontiguousarray(x[~held]), np.ascontiguousarray(x[held])


def prepare(kind: str, n: int, num_queries: int, cache: str, embeddings: str | None = None) -> dict:
    """Base/queries/ground truth as .npy files in ``cache`` (made once)."""
    from hf_compress.ramen.mining import EmbeddingIndex

    tag = kind if embeddings is None else f"{kind}-{os.path.splitext(os.path.basename(embeddings))[0]}"
    stem = os.path.join(cache, f"{tag}_{n}_{num_queries}")
    paths = {"base": stem + "_base.npy", "queries": stem + "_queries.npy", "gt": stem + "_gt.npy"}
    if not all(os.path.exists(p) for p in paths.values()):
        start = time.perf_counter()
        base, queries = make_data(kind, n, num_queries) if embeddings is None else split_file(embeddings, num_queries)
        index = EmbeddingIndex(DIM, backend="exact")
        index.add(base)
        _, gt = index.search(queries, GT_K)
        for key, value in (("base", base), ("queries", queries), ("gt", gt)):
            np.save(paths[key], value)
        log(f"  data {kind} N={n}: generated + exact ground truth in {time.perf_counter() - start:.1f} s")
    return paths


# ---------------------------------------------------------------------------------------------------------------
# Worker: one build + all its search settings
# ---------------------------------------------------------------------------------------------------------------
def parse_config(config: str) -> tuple[str, dict]:
    backend, _, rest = config.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        try:
            params[key] = int(value)
        except ValueError:
            params[key] = value
    return backend, params


def search_settings(backend: str, params: dict, quick: bool) -> list[dict]:
    if backend == "exact":
        return [{}]
    if backend == "hnswlib" or params.get("index_type", "hnsw") == "hnsw":
        return [{"ef_search": ef} for ef in (EF_SEARCH[1:4] if quick else EF_SEARCH)]
    return [{"nprobe": p} for p in (NPROBE[1:4] if quick else NPROBE)]


def recall_at(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(f[:k]) & set(t[:k])) / k for f, t in zip(found, truth)]))


def worker(spec: dict) -> dict:
    from hf_compress.ramen.mining import EmbeddingIndex

    base = np.load(spec["base"])
    queries = np.load(spec["queries"])
    gt = np.load(spec["gt"])
    backend, params = parse_config(spec["config"])
    threads = os.cpu_count() or 1
    mem_before = memory_kb()
    index = EmbeddingIndex(DIM, backend=backend, metric="ip", num_threads=threads, **params)
    load_start = os.getloadavg()[0]
    start = time.perf_counter()
    index.add(base)
    build_s = time.perf_counter() - start
    mem_built = memory_kb()
    del base
    folder = tempfile.mkdtemp(prefix="ramen_ann_", dir=spec.get("tmp"))
    try:
        index.save(folder)
        disk = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result = {"config": spec["config"], "backend": backend, "params": dict(index.params), "build_s": build_s,
              "rss_before_build_mb": mem_before.get("VmRSS", 0) / 1024, "rss_after_build_mb": mem_built.get("VmRSS", 0) / 1024,
              "peak_rss_mb": mem_built.get("VmHWM", 0) / 1024, "disk_mb": disk / 2**20, "loadavg_1m_start": load_start,
              "searches": []}
    result["index_rss_mb"] = result["rss_after_build_mb"] - result["rss_before_build_mb"]
    k = 5
    latency_queries = queries[: spec["latency_queries"]]
    for setting in search_settings(backend, params, spec["quick"]):
        index.params.update(setting)
        row = dict(setting)
        index.params["num_threads"] = threads
        index.search(queries[:50], k)  # warm-up
        start = time.perf_counter()
        _, ids = index.search(queries, k)
        row["batch_qps"] = len(queries) / (time.perf_counter() - start)
        row["recall@5"] = recall_at(ids, gt, k)
        for t in sorted({1, min(2, threads)}):
            index.params["num_threads"] = t
            for q in latency_queries[:10]:
                index.search(q[None], k)
            times = []
            for q in latency_queries:
                t0 = time.perf_counter()
                index.search(q[None], k)
                times.append(time.perf_counter() - t0)
            row[f"latency_ms_{t}t"] = {"median": 1e3 * float(np.median(times)), "p95": 1e3 * float(np.percentile(times, 95))}
        result["searches"].append(row)
    result["peak_rss_mb"] = memory_kb().get("VmHWM", 0) / 1024
    result["loadavg_1m_end"] = os.getloadavg()[0]  # other jobs share this CPU: context for the timings
    return result


# ---------------------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------------------
LOG = None


def log(message: str) -> None:
    print(message, flush=True)
    if LOG:
        with open(LOG, "a") as handle:
            handle.write(message + "\n")


def summary_line(kind: str, n: int, result: dict) -> list[str]:
    lines = [f"{kind:9s} N={n:>8,d} {result['config']:45s} build {result['build_s']:8.1f} s  index RSS "
             f"{result['index_rss_mb']:7.0f} MB  peak RSS {result['peak_rss_mb']:7.0f} MB  disk {result['disk_mb']:7.0f} MB"]
    for row in result["searches"]:
        setting = ",".join(f"{k}={v}" for k, v in row.items() if k in ("ef_search", "nprobe")) or "-"
        lat1, lat2 = row.get("latency_ms_1t", {}), row.get("latency_ms_2t", {})
        lines.append(f"    {setting:14s} recall@5 {row['recall@5']:.4f}  1q/1t {lat1.get('median', float('nan')):8.3f} ms "
                     f"(p95 {lat1.get('p95', float('nan')):8.3f})  1q/2t {lat2.get('median', float('nan')):8.3f} ms  "
                     f"batch {row['batch_qps']:9.0f} q/s")
    return lines


def main() -> None:
    global LOG
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--datasets", nargs="+", default=["clustered", "uniform"], choices=["clustered", "uniform", "file"],
                   help="'file': the real embeddings of --embeddings (N = its rows - num_queries; --sizes is ignored)")
    p.add_argument("--embeddings", default=None, help=".npy of real unit embeddings for --datasets file")
    p.add_argument("--configs", nargs="+", default=None, help="override the configurations for every size")
    p.add_argument("--num_queries", type=int, default=1000)
    p.add_argument("--latency_queries", type=int, default=300)
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "ramen_ann_cache"))
    p.add_argument("--output", default=os.path.join(RESULTS, "ramen_ann.json"))
    p.add_argument("--append", action="store_true", help="add to an existing output instead of replacing it")
    p.add_argument("--quick", action="store_true", help="fewer search settings")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per build+measure subprocess")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
        return

    os.makedirs(args.cache, exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    LOG = os.path.splitext(args.output)[0] + ".log"
    report = {"runs": []}
    if args.append and os.path.exists(args.output):
        with open(args.output) as handle:
            report = json.load(handle)
    import faiss
    import hnswlib
    import torch

    report["machine"] = {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
                         "python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
                         "faiss": faiss.__version__, "hnswlib": getattr(hnswlib, "__version__", "0.8.0")}
    report["dim"] = DIM
    report["protocol"] = ("build with all threads; latency = one query per search() call, median/p95 over "
                          f"{args.latency_queries} queries after 10 warm-up; batch = all {args.num_queries} queries in one call; "
                          "recall@5 vs exact top-5; RSS from /proc/self/status (index RSS = VmRSS after build - before)")
    log(f"# ramen_ann {time.strftime('%Y-%m-%d %H:%M:%S')}  sizes={args.sizes} datasets={args.datasets}")
    file_done = False
    for n in args.sizes:
        for kind in args.datasets:
            if kind == "file":
                if file_done:  # its size is the file's, not --sizes: measure it once
                    continue
                file_done = True
                if not args.embeddings:
                    raise SystemExit("--datasets file needs --embeddings PATH.npy")
                n = len(np.load(args.embeddings, mmap_mode="r")) - args.num_queries
                kind = "minilm-labels"
                paths = prepare(kind, n, args.num_queries, args.cache, embeddings=args.embeddings)
            else:
                paths = prepare(kind, n, args.num_queries, args.cache)
            for config in args.configs or DEFAULT_CONFIGS.get(n, DEFAULT_CONFIGS[100_000]):
                spec = {**paths, "config": config, "latency_queries": args.latency_queries, "quick": args.quick}
                start = time.perf_counter()
                try:
                    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
                                          capture_output=True, text=True, timeout=args.timeout)
                except subprocess.TimeoutExpired:
                    log(f"{kind:9s} N={n:>8,d} {config:45s} TIMED OUT after {args.timeout:.0f} s")
                    report["runs"].append({"dataset": kind, "n": n, "config": config, "error": f"timeout {args.timeout} s"})
                    continue
                lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
                if proc.returncode != 0 or not lines:
                    log(f"{kind:9s} N={n:>8,d} {config:45s} FAILED rc={proc.returncode}: {proc.stderr[-2000:]}")
                    report["runs"].append({"dataset": kind, "n": n, "config": config, "error": proc.stderr[-2000:]})
                    continue
                result = {"dataset": kind, "n": n, **json.loads(lines[-1][len("RESULT "):]),
                          "wall_s": time.perf_counter() - start}
                report["runs"] = [r for r in report["runs"] if not (r["dataset"] == kind and r["n"] == n and r["config"] == config)]
                report["runs"].append(result)
                for line in summary_line(kind, n, result):
                    log(line)
                with open(args.output, "w") as handle:
                    json.dump(report, handle, indent=1)
    log(f"# done {time.strftime('%Y-%m-%d %H:%M:%S')}")


if __name__ == "__main__":
    main()
