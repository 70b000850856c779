"""RAMEN sentence encoder: a backbone transformer plus pooling, saved as a sentence-transformers model too.

The same encoder embeds points (e.g. paper titles) and labels (e.g. tag names). Inference is this encoder
and a nearest-neighbour search; the metadata graphs only shape the training loss, so nothing here knows
about them (zero extra inference cost).
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_ramen import RamenConfig

# sentence-transformers module names understood by its 2.x-6.x releases (6.x maps the old paths).
_ST_MODULES = (
    ("sentence_transformers.models.Transformer", ""),
    ("sentence_transformers.models.Pooling", "1_Pooling"),
    ("sentence_transformers.models.Normalize", "2_Normalize"),
)


def pool(token_states_bld: torch.Tensor, attention_mask_bl: torch.Tensor | None, mode: str) -> torch.Tensor:
    """One vector per sequence from token states [batch, length, dim] (padding excluded)."""
    if attention_mask_bl is None:
        attention_mask_bl = torch.ones(token_states_bld.shape[:2], device=token_states_bld.device)
    mask_bl1 = attention_mask_bl.unsqueeze(-1).to(token_states_bld.dtype)
    if mode == "cls":
        return token_states_bld[:, 0]
    if mode == "max":
        return token_states_bld.masked_fill(mask_bl1 == 0, torch.finfo(token_states_bld.dtype).min).amax(dim=1)
    return (token_states_bld * mask_bl1).sum(dim=1) / mask_bl1.sum(dim=1).clamp(min=1.0)


class RamenPreTrainedModel(PreTrainedModel):
    config_class = RamenConfig
    base_model_prefix = "backbone"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        # Only reached for modules the checkpoint did not fill; the backbone initialises its own kinds.
        backbone = getattr(self, "backbone", None)
        if backbone is not None and module is not self and hasattr(backbone, "_init_weights"):
            backbone._init_weights(module)


class RamenEncoder(RamenPreTrainedModel):
    """Sentence embeddings for points and labels: ``backbone`` token states -> pooling -> (unit) vector.

    ``forward`` returns ``last_hidden_state`` (the token states, what sentence-transformers pools) and
    ``pooler_output`` (the sentence embedding). ``save_pretrained`` also writes the sentence-transformers
    module files, so ``SentenceTransformer(saved_dir)`` loads it (after ``import hf_compress``).
    """

    def __init__(self, config: RamenConfig, backbone: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        self.backbone = backbone if backbone is not None else AutoModel.from_config(config.backbone())
        # signature() follows transformers' forward decorators (__code__ would see only the wrapper's *args)
        self._backbone_inputs = set(inspect.signature(self.backbone.forward).parameters)
        self.post_init()

    @classmethod
    def from_backbone(
        cls,
        name_or_path: str | os.PathLike,
        pooling: str = "mean",
        normalize: bool = True,
        max_seq_length: int = 32,
        **kwargs,
    ) -> "RamenEncoder":
        """Start from a pretrained encoder folder (e.g. the offline MiniLM); its weights are kept as they are."""
        if not Path(name_or_path).exists() and os.environ.get("HF_HUB_OFFLINE") == "1":
            raise FileNotFoundError(
                f"Backbone {name_or_path!r} is not a local folder and the Hub is offline (HF_HUB_OFFLINE=1); "
                "pass the path of a downloaded encoder, e.g. hf_compress.data.minilm_path()."
            )
        backbone_config = AutoConfig.from_pretrained(name_or_path)
        if getattr(backbone_config, "is_encoder_decoder", False):
            raise ValueError(
                f"{name_or_path}: RAMEN needs an encoder-only backbone (BERT, RoBERTa, DistilBERT, MiniLM, ...), "
                f"got the encoder-decoder model type {backbone_config.model_type!r}."
            )
        backbone = AutoModel.from_pretrained(name_or_path, **kwargs)
        backbone_config = backbone.config
        config = RamenConfig(
            backbone_config=backbone_config.to_dict(), pooling=pooling, normalize=normalize, max_seq_length=max_seq_length
        )
        return cls(config, backbone=backbone)

    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        backbone_inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None and "token_type_ids" in self._backbone_inputs:
            backbone_inputs["token_type_ids"] = token_type_ids
        backbone_inputs.update({k: v for k, v in kwargs.items() if k in ("inputs_embeds", "position_ids")})
        token_states_bld = self.backbone(**backbone_inputs).last_hidden_state
        embedding_bd = pool(token_states_bld, attention_mask, self.config.pooling)
        if self.config.normalize:
            embedding_bd = F.normalize(embedding_bd, dim=-1)
        return BaseModelOutputWithPooling(last_hidden_state=token_states_bld, pooler_output=embedding_bd)

    @torch.inference_mode()
    def encode(
        self,
        texts: list[str],
        tokenizer,
        batch_size: int = 256,
        show_progress: bool = False,
        max_length: int | None = None,
    ) -> np.ndarray:
        """Embeddings [len(texts), dim] float32 of raw texts, in order (batched by length for speed)."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device

        def embed(batch) -> np.ndarray:
            return self(**{k: v.to(device) for k, v in batch.items()}).pooler_output.float().cpu().numpy()

        try:
            return encode_in_length_order(texts, tokenizer, embed, self.config.hidden_size, batch_size,
                                          max_length or self.config.max_seq_length, show_progress, return_tensors="pt")
        finally:
            self.train(was_training)

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        super().save_pretrained(save_directory, *args, **kwargs)
        write_sentence_transformers_files(save_directory, self.config)


def encode_in_length_order(
    texts: list[str],
    tokenizer,
    embed,
    dim: int,
    batch_size: int,
    max_length: int,
    show_progress: bool = False,
    return_tensors: str = "pt",
) -> np.ndarray:
    """``embed(tokenized batch) -> [b, dim]`` over ``texts`` sorted by length (less padding), rows back in input
    order. Shared by the PyTorch encoder and the onnxruntime one so both batch the same way."""
    from tqdm.auto import tqdm

    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for start in tqdm(range(0, len(texts), batch_size), desc="encode", disable=not show_progress, unit="batch"):
        rows = order[start : start + batch_size]
        batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=max_length,
                          return_tensors=return_tensors)
        out[rows] = embed(batch)
    return out


def write_sentence_transformers_files(save_directory: str | os.PathLike, config: RamenConfig) -> None:
    """modules.json + module configs so sentence-transformers builds Transformer -> Pooling -> Normalize."""
    folder = Path(save_directory)
    modules = _ST_MODULES if config.normalize else _ST_MODULES[:2]
    entries = [{"idx": i, "name": str(i), "path": path, "type": kind} for i, (kind, path) in enumerate(modules)]
    (folder / "modules.json").write_text(json.dumps(entries, indent=2) + "\n")
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": config.max_seq_length, "do_lower_case": False}, indent=2) + "\n"
    )
    pooling = {
        "word_embedding_dimension": config.hidden_size,
        "pooling_mode_cls_token": config.pooling == "cls",
        "pooling_mode_mean_tokens": config.pooling == "mean",
        "pooling_mode_max_tokens": config.pooling == "max",
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2) + "\n")
    if config.normalize:
        (folder / "2_Normalize").mkdir(exist_ok=True)
