"""Plain helpers shared by the test modules (importable as ``helpers`` because ``tests/`` has no
``__init__.py`` and pytest puts it on ``sys.path``; ``conftest.py`` also exposes them as fixtures).

Everything here builds *tiny random* models (vocab 100, hidden 32, 3 layers, 4 heads, FFN 64): tests check
shapes, counts and equivalences, never quality.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    DistilBertForTokenClassification,
    DistilBertModel,
    PretrainedConfig,
    PreTrainedModel,
    RobertaConfig,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
    RobertaModel,
)

FAMILIES = ("bert", "roberta", "distilbert")
TASKS = ("seq-cls", "token-cls", "base")

VOCAB_SIZE = 100
HIDDEN_SIZE = 32
NUM_LAYERS = 3
NUM_HEADS = 4
INTERMEDIATE_SIZE = 64
MAX_POSITIONS = 64

MODEL_CLASSES = {
    "bert": {"seq-cls": BertForSequenceClassification, "token-cls": BertForTokenClassification, "base": BertModel},
    "roberta": {
        "seq-cls": RobertaForSequenceClassification,
        "token-cls": RobertaForTokenClassification,
        "base": RobertaModel,
    },
    "distilbert": {
        "seq-cls": DistilBertForSequenceClassification,
        "token-cls": DistilBertForTokenClassification,
        "base": DistilBertModel,
    },
}


def tiny_config(family: str, **overrides) -> PretrainedConfig:
    """A tiny random config of ``family`` ('bert', 'roberta' or 'distilbert'); ``overrides`` win.

    Common size names (``hidden_size``, ``num_hidden_layers``, ``num_attention_heads``, ``intermediate_size``)
    are accepted for DistilBERT too and mapped onto ``dim`` / ``n_layers`` / ``n_heads`` / ``hidden_dim``.
    """
    if family == "bert":
        kwargs = dict(
            vocab_size=VOCAB_SIZE, hidden_size=HIDDEN_SIZE, num_hidden_layers=NUM_LAYERS,
            num_attention_heads=NUM_HEADS, intermediate_size=INTERMEDIATE_SIZE,
            max_position_embeddings=MAX_POSITIONS, type_vocab_size=2, pad_token_id=0,
        )
        kwargs.update(overrides)
        return BertConfig(**kwargs)
    if family == "roberta":
        kwargs = dict(
            vocab_size=VOCAB_SIZE, hidden_size=HIDDEN_SIZE, num_hidden_layers=NUM_LAYERS,
            num_attention_heads=NUM_HEADS, intermediate_size=INTERMEDIATE_SIZE,
            # RoBERTa positions start after padding_idx (=1): two more rows than usable positions
            max_position_embeddings=MAX_POSITIONS + 2, type_vocab_size=1, pad_token_id=1, bos_token_id=0,
            eos_token_id=2,
        )
        kwargs.update(overrides)
        return RobertaConfig(**kwargs)
    if family == "distilbert":
        aliases = {
            "hidden_size": "dim", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads",
            "intermediate_size": "hidden_dim",
        }
        overrides = {aliases.get(k, k): v for k, v in overrides.items()}
        kwargs = dict(
            vocab_size=VOCAB_SIZE, dim=HIDDEN_SIZE, n_layers=NUM_LAYERS, n_heads=NUM_HEADS,
            hidden_dim=INTERMEDIATE_SIZE, max_position_embeddings=MAX_POSITIONS, pad_token_id=0,
        )
        kwargs.update(overrides)
        return DistilBertConfig(**kwargs)
    raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")


def tiny_model(
    family: str, task: str = "seq-cls", seed: int = 0, num_labels: int | None = None, train: bool = False, **overrides
) -> PreTrainedModel:
    """A freshly initialised tiny ``family`` model for ``task`` ('seq-cls', 'token-cls', 'base').

    Seeded with ``torch.manual_seed(seed)``; returned in eval mode unless ``train=True``. Task models get
    ``num_labels`` labels (default: 2 for seq-cls, 3 for token-cls).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
    if task != "base":
        overrides.setdefault("num_labels", num_labels or (2 if task == "seq-cls" else 3))
    config = tiny_config(family, **overrides)
    torch.manual_seed(seed)
    model = MODEL_CLASSES[family][task](config)
    return model.train() if train else model.eval()


@torch.no_grad()
def randomize_biases_and_norms_(model: torch.nn.Module, std: float = 0.1, seed: int = 0) -> torch.nn.Module:
    """Give every bias a random value and every LayerNorm a random gain around 1 (in place).

    ``transformers`` initialises biases to 0 and LayerNorms to (1, 0), which hides mistakes in how biases and
    norms are sliced or scaled; tests of weight surgery should call this first.
    """
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.weight.copy_(1.0 + std * torch.randn(module.weight.shape, generator=gen))
            module.bias.copy_(std * torch.randn(module.bias.shape, generator=gen))
        elif isinstance(module, torch.nn.Linear) and module.bias is not None:
            module.bias.copy_(std * torch.randn(module.bias.shape, generator=gen))
    return model


def pad_token_id(family: str) -> int:
    return 1 if family == "roberta" else 0


def tiny_batch(
    family: str,
    batch_size: int = 2,
    seq_len: int = 12,
    pad_last: int = 0,
    seed: int = 0,
    task: str | None = None,
    num_labels: int = 2,
) -> dict[str, torch.Tensor]:
    """Random ``input_ids`` / ``attention_mask`` (and ``labels`` when ``task`` is given).

    Ids avoid the special ids 0..3; the last row's final ``pad_last`` positions are padding (pad id and
    attention_mask 0), so a non-zero ``pad_last`` exercises the mask.
    """
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(4, VOCAB_SIZE, (batch_size, seq_len), generator=gen)
    attention_mask = torch.ones_like(input_ids)
    if pad_last:
        input_ids[-1, seq_len - pad_last :] = pad_token_id(family)
        attention_mask[-1, seq_len - pad_last :] = 0
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if task == "seq-cls":
        batch["labels"] = torch.randint(0, num_labels, (batch_size,), generator=gen)
    elif task == "token-cls":
        labels = torch.randint(0, num_labels, (batch_size, seq_len), generator=gen)
        batch["labels"] = labels.masked_fill(attention_mask == 0, -100)
    return batch


def model_output(model, **inputs) -> torch.Tensor:
    """Logits of a task model, last hidden state of a base model."""
    out = model(**inputs)
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


def num_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def pruned_shape(pruned_model, dense_shape):
    """The ``EncoderShape`` a materialized (``PrunedEncoder*``) model actually has, read from its config."""
    config = pruned_model.config
    return replace(
        dense_shape,
        hidden_size=config.hidden_size,
        num_heads=list(config.num_attention_heads_per_layer),
        intermediate_sizes=list(config.intermediate_size_per_layer),
    )


HUB_CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hub_client_script.py")


def hub_env(hub, home, token: str | None = "hf_test_token") -> dict[str, str]:
    """Environment of a client process talking to the local Hub ``hub`` with its own HF_HOME (online)."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def run_client(hub, home, *args, script: str = HUB_CLIENT, token: str | None = "hf_test_token") -> dict:
    """Run a client script against the local Hub with its own HF_HOME; returns the JSON line it printed last."""
    done = subprocess.run([sys.executable, script, *map(str, args)], capture_output=True, text=True,
                          env=hub_env(hub, home, token), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, (done.stdout[-2000:], done.stderr[-2000:])
    return json.loads(lines[-1])
