"""RAMEN inference at label scale on this CPU: encode N label texts with MiniLM, index them, top-5 search.

Label texts are 2-6 words drawn (seeded, weight ~ sqrt(frequency)) from the vocabulary of the CiteULike-a
paper titles (real English / scientific words). They are encoded with the offline all-MiniLM-L6-v2
(``transformers.AutoModel`` + ``AutoTokenizer``, mean pooling over the attention mask, L2 normalised,
max_length 16, batches of 512, float32, ``torch.inference_mode``), indexed with
``hf_compress.ramen.mining.EmbeddingIndex`` ("auto" unless ``--backend``), then 1,000 query texts (label
texts with one word replaced, so that real neighbours exist) are searched one at a time: latency with and
without encoding the query, recall@5 of the index against exact search, encode and build times, peak RSS
and index size on disk. The query encoding is timed with PyTorch and with the encoder exported to ONNX and run
by onnxruntime (``--query_encoders``); both search the same index of PyTorch-encoded labels.

    python benchmarks/ramen_scale.py --num_labels 20000 --output /tmp/scale_20k.json     # check
    nice -n 10 python benchmarks/ramen_scale.py                                           # 1,000,000 labels
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


def memory_kb() -> dict:
    out = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


def log(message: str, path: str | None = None) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {message}"
    print(line, flush=True)
    if path:
        with open(path, "a") as handle:
            handle.write(line + "\n")


def vocabulary(path: str) -> tuple[list[str], np.ndarray]:
    counts = Counter()
    with open(path, encoding="utf-8", errors="ignore") as handle:
        for line in handle:
            counts.update(w for w in re.findall(r"[a-z]+", line.lower()) if len(w) >= 3)
    words = sorted(w for w, c in counts.items() if c >= 2)  # drop one-off typos / fragments
    weights = np.sqrt(np.array([counts[w] for w in words], dtype=np.float64))
    return words, weights / weights.sum()


def make_texts(words: list[str], probs: np.ndarray, n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 7, size=n)
    picks = rng.choice(len(words), size=int(lengths.sum()), p=probs)
    out, position = [], 0
    for length in lengths:
        out.append(" ".join(words[i] for i in picks[position:position + length]))
        position += length
    return out


def make_queries(labels: list[str], words: list[str], probs: np.ndarray, n: int, seed: int) -> list[str]:
    """Label texts with one word replaced by a random vocabulary word."""
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.choice(len(labels), size=n, replace=False):
        tokens = labels[i].split()
        tokens[rng.integers(len(tokens))] = words[rng.choice(len(words), p=probs)]
        out.append(" ".join(tokens))
    return out


class Encoder:
    def __init__(self, folder: str, max_length: int):
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
        self.max_length = max_length

    @torch.inference_mode()
    def __call__(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()


class OnnxEncoder:
    """The same mean-pooled, normalised MiniLM embedding through onnxruntime (``hf_compress.ramen.onnx_encoder``)."""

    def __init__(self, folder: str, max_length: int, threads: int):
        from transformers import AutoTokenizer

        from hf_compress.ramen import RamenEncoder
        from hf_compress.ramen.onnx_encoder import OnnxRamenEncoder, export_encoder_onnx

        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.max_length = max_length
        encoder = RamenEncoder.from_backbone(folder, pooling="mean", normalize=True, max_seq_length=max_length)
        self.folder = tempfile.mkdtemp(prefix="ramen_scale_onnx_")
        start = time.perf_counter()
        path = export_encoder_onnx(encoder, self.tokenizer, self.folder)
        self.export_s = time.perf_counter() - start
        self.report = json.loads((Path(path).parent / "encoder_export.json").read_text()) | {"export_s": self.export_s}
        self.model = OnnxRamenEncoder(path, encoder.config, num_threads=threads)

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, self.tokenizer, batch_size=256, max_length=self.max_length)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num_labels", type=int, default=1_000_000)
    p.add_argument("--num_queries", type=int, default=1000)
    p.add_argument("--batch_size", type=int, default=512)
    p.add_argument("--max_length", type=int, default=16)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads for the label encoding, index threads")
    p.add_argument("--query_threads", type=int, default=1,
                   help="torch threads while encoding one query: on this shared 2-core CPU two OpenMP threads wait on each "
                        "other when another job holds a core (one short sentence took ~620 ms with 2 threads vs ~33 ms with 1)")
    p.add_argument("--query_encoders", nargs="+", default=["torch", "onnxruntime"], choices=["torch", "onnxruntime"],
                   help="time the query encoding with each (onnxruntime: the encoder exported by hf_compress.ramen.onnx_encoder)")
    p.add_argument("--backend", default="auto", help="EmbeddingIndex backend (default: the measured auto rule)")
    p.add_argument("--index_params", default="{}", help="JSON of EmbeddingIndex parameters, e.g. '{\"ef_search\": 128}'")
    p.add_argument("--model", default=None, help="encoder folder (default: hf_compress.data.minilm_path())")
    p.add_argument("--titles", default=None, help="text file whose words make the vocabulary (default: CiteULike-a titles)")
    p.add_argument("--cache_dir", default=os.path.join(tempfile.gettempdir(), "ramen_scale_cache"),
                   help="label embeddings are kept here and reused by a rerun with the same N/seed/length")
    p.add_argument("--no_cache", action="store_true")
    p.add_argument("--sort_by_length", action=argparse.BooleanOptionalAction, default=True,
                   help="encode labels in token-length order (less padding; the embeddings are the same)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=os.path.join(RESULTS, "ramen_scale.json"))
    args = p.parse_args()

    from hf_compress.data import data_dir, minilm_path
    from hf_compress.ramen.mining import EmbeddingIndex

    torch.set_num_threads(args.threads)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    log_path = os.path.splitext(args.output)[0] + ".log"
    result = {"args": vars(args), "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                                              "torch": torch.__version__, "numpy": np.__version__}}

    def save():
        result["peak_rss_mb"] = memory_kb()["VmHWM"] / 1024
        with open(args.output, "w") as handle:
            json.dump(result, handle, indent=1)

    log(f"ramen_scale: {args.num_labels:,} labels, {args.num_queries} queries, threads={args.threads}", log_path)
    titles = args.titles or str(data_dir("citeulike-a") / "citeulike-a" / "citeutitles.txt")
    words, probs = vocabulary(titles)
    labels = make_texts(words, probs, args.num_labels, args.seed)
    queries = make_queries(labels, words, probs, args.num_queries, args.seed + 1)
    result["vocabulary_size"] = len(words)
    result["examples"] = {"labels": labels[:5], "queries": queries[:5]}
    log(f"vocabulary {len(words):,} words; label e.g. {labels[0]!r}; query e.g. {queries[0]!r}", log_path)

    encoder = Encoder(args.model or minilm_path(), args.max_length)
    result["rss_after_model_mb"] = memory_kb()["VmRSS"] / 1024

    # ---- encode the labels ------------------------------------------------------------------------------------
    cache = os.path.join(args.cache_dir, f"labels_{args.num_labels}_{args.seed}_{args.max_length}.npy")
    if not args.no_cache and os.path.exists(cache):
        embeddings = np.load(cache)
        log(f"label embeddings reused from {cache}", log_path)
        result["encode"] = {"reused_from_cache": cache}
        if os.path.exists(cache + ".json"):  # the timing of the run that encoded them
            with open(cache + ".json") as handle:
                result["encode"].update(json.load(handle))
    else:
        embeddings = np.empty((args.num_labels, encoder.model.config.hidden_size), dtype=np.float32)
        start = last = time.perf_counter()
        if args.sort_by_length:  # length bucketing: batches of similar token counts pad less (same embeddings)
            lengths = [len(ids) for ids in encoder.tokenizer(labels, truncation=True, max_length=args.max_length)["input_ids"]]
            order = np.argsort(lengths, kind="stable")
        else:
            order = np.arange(args.num_labels)
        for first in range(0, args.num_labels, args.batch_size):
            rows = order[first:first + args.batch_size]
            chunk = [labels[i] for i in rows]
            embeddings[rows] = encoder(chunk)
            now = time.perf_counter()
            done = first + len(chunk)
            if now - last > 60 or done == args.num_labels:
                rate = done / (now - start)
                log(f"  encoded {done:,}/{args.num_labels:,} ({rate:.0f} texts/s, ETA {(args.num_labels - done) / rate / 60:.1f} min)", log_path)
                last = now
        encode_s = time.perf_counter() - start
        result["encode"] = {"seconds": encode_s, "texts_per_s": args.num_labels / encode_s, "batch_size": args.batch_size,
                            "max_length": args.max_length, "sorted_by_length": args.sort_by_length,
                            "loadavg_after": os.getloadavg()}
        if not args.no_cache:
            os.makedirs(args.cache_dir, exist_ok=True)
            np.save(cache, embeddings)
            with open(cache + ".json", "w") as handle:
                json.dump(result["encode"], handle)
    result["rss_after_encode_mb"] = memory_kb()["VmRSS"] / 1024
    save()

    # ---- build the index --------------------------------------------------------------------------------------
    params = json.loads(args.index_params)
    index = EmbeddingIndex(embeddings.shape[1], backend=args.backend, num_threads=args.threads, **params)
    rss_before = memory_kb()["VmRSS"]
    start = time.perf_counter()
    index.add(embeddings)
    build_s = time.perf_counter() - start
    index_rss = (memory_kb()["VmRSS"] - rss_before) / 1024
    folder = tempfile.mkdtemp(prefix="ramen_scale_index_")
    try:
        start = time.perf_counter()
        index.save(folder)
        save_s = time.perf_counter() - start
        disk = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
        start = time.perf_counter()
        EmbeddingIndex.load(folder)
        load_s = time.perf_counter() - start
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result["index"] = {"backend": index.backend, "params": dict(index.params), "build_s": build_s, "rss_mb": index_rss,
                       "disk_mb": disk / 2**20, "save_s": save_s, "load_s": load_s}
    log(f"index {index!r}: build {build_s:.1f} s, +{index_rss:.0f} MB RSS, {disk / 2**20:.0f} MB on disk", log_path)
    save()

    # ---- queries, one at a time -------------------------------------------------------------------------------
    k = 5

    def stats(values):
        return {"median": float(np.median(values)), "p95": float(np.percentile(values, 95)), "mean": float(np.mean(values))}

    torch.set_num_threads(args.threads)
    query_vectors = np.concatenate([encoder(queries[i:i + 256]) for i in range(0, len(queries), 256)])
    exact = EmbeddingIndex(embeddings.shape[1], backend="exact", num_threads=args.threads)
    exact.add(embeddings)
    _, truth = exact.search(query_vectors, k)
    del exact

    encoders = {"torch": encoder}
    if "onnxruntime" in args.query_encoders:
        encoders["onnxruntime"] = OnnxEncoder(args.model or minilm_path(), args.max_length, args.query_threads)
        result["onnx_export"] = encoders["onnxruntime"].report
        gap = float(np.abs(encoders["onnxruntime"](queries[:256]) - query_vectors[:256]).max())
        result["onnx_export"]["max_abs_diff_vs_torch_on_256_queries"] = gap
        log(f"onnxruntime query encoder: exported in {encoders['onnxruntime'].export_s:.1f} s, max abs diff vs torch {gap:.1e}", log_path)
    for name in args.query_encoders:
        encode = encoders[name]
        torch.set_num_threads(args.query_threads)
        for text in queries[:10]:  # warm-up
            index.search(encode([text]), k)
        encode_ms, search_ms, total_ms, found = [], [], [], []
        for text in queries:
            t0 = time.perf_counter()
            vector = encode([text])
            t1 = time.perf_counter()
            _, ids = index.search(vector, k)
            t2 = time.perf_counter()
            encode_ms.append(1e3 * (t1 - t0))
            search_ms.append(1e3 * (t2 - t1))
            total_ms.append(1e3 * (t2 - t0))
            found.append(ids[0])
        recall = float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth)]))
        key = "queries" if name == "torch" else f"queries_{name}"
        result[key] = {"query_encoder": name, "count": len(queries), "k": k, "recall@5_vs_exact": recall,
                       "latency_ms_with_encoding": stats(total_ms), "latency_ms_search_only": stats(search_ms),
                       "latency_ms_query_encoding": stats(encode_ms),
                       "example": {"query": queries[0], "top5": [labels[i] for i in found[0] if i >= 0]}}
        save()
        log(f"queries ({name} encoder): recall@5 {recall:.4f}; per query median {np.median(total_ms):.2f} ms with encoding "
            f"(p95 {np.percentile(total_ms, 95):.2f}; encoding {np.median(encode_ms):.2f}), search only {np.median(search_ms):.3f} ms "
            f"(p95 {np.percentile(search_ms, 95):.3f}); peak RSS {result['peak_rss_mb']:.0f} MB", log_path)
    torch.set_num_threads(args.threads)
    # search-only latency with one index thread too
    index.params["num_threads"] = 1
    single = []
    for vector in query_vectors[:300]:
        t0 = time.perf_counter()
        index.search(vector[None], k)
        single.append(1e3 * (time.perf_counter() - t0))
    result["latency_ms_search_only_1thread"] = stats(single)
    result["loadavg"] = os.getloadavg()
    save()


if __name__ == "__main__":
    main()
