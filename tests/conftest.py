"""Shared fixtures: tiny random BERT / RoBERTa / DistilBERT configs and models, offline.

The plain functions live in ``tests/helpers.py`` (``from helpers import tiny_config, tiny_model, ...``);
the fixtures below hand out the same factories so a test can also write ``def test_x(tiny_model): ...``.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import helpers  # noqa: E402

# Tiny models are dominated by per-op overhead: on a small shared CPU, intra-op threads only add contention
# (a 2x12x32 linear took ~15 ms with 2 busy threads and ~10 us with one). Tests marked ``slow`` (real models)
# keep torch's default; HF_COMPRESS_TEST_THREADS overrides the count for the others.
TINY_MODEL_THREADS = int(os.environ.get("HF_COMPRESS_TEST_THREADS", "1"))


@pytest.fixture(autouse=True)
def _tiny_model_threads(request):
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(TINY_MODEL_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture
def tiny_config():
    """Factory: ``tiny_config(family, **overrides)`` -> a tiny config of 'bert', 'roberta' or 'distilbert'."""
    return helpers.tiny_config


@pytest.fixture
def tiny_model():
    """Factory: ``tiny_model(family, task='seq-cls', seed=0, num_labels=None, train=False, **overrides)``."""
    return helpers.tiny_model


@pytest.fixture
def tiny_batch():
    """Factory: ``tiny_batch(family, batch_size=2, seq_len=12, pad_last=0, seed=0, task=None, num_labels=2)``."""
    return helpers.tiny_batch


@pytest.fixture
def bert_config():
    return helpers.tiny_config("bert")


@pytest.fixture
def roberta_config():
    return helpers.tiny_config("roberta")


@pytest.fixture
def distilbert_config():
    return helpers.tiny_config("distilbert")


@pytest.fixture
def hf_compress_registered():
    """``import hf_compress`` (registers the pruned-model classes with the Auto classes) and return it."""
    import hf_compress

    return hf_compress


@pytest.fixture
def hub(tmp_path):
    """A local Hub-compatible server (``hf_compress.testing.LocalHub``) storing its repos under ``tmp_path``."""
    from hf_compress.testing import LocalHub

    with LocalHub(tmp_path / "hub-data") as server:
        yield server
