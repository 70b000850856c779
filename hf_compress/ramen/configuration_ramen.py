"""Config of a RAMEN sentence encoder: any Hugging Face encoder backbone plus pooling."""

from __future__ import annotations

from transformers import AutoConfig, PretrainedConfig

POOLING_MODES = ("mean", "cls", "max")


class RamenConfig(PretrainedConfig):
    """A sentence-embedding encoder for extreme classification.

    ``backbone_config`` is the full config (as a dict) of the transformer that embeds both points and labels
    (siamese); ``pooling`` turns its token states into one vector, ``normalize`` puts it on the unit sphere so
    inner product = cosine (what the ANN index and the triplet loss assume). The metadata graphs used while
    training are not part of the config: the saved model is the same with or without them.
    """

    model_type = "ramen"

    def __init__(
        self,
        backbone_config: dict | PretrainedConfig | None = None,
        pooling: str = "mean",
        normalize: bool = True,
        max_seq_length: int = 32,
        **kwargs,
    ) -> None:
        if isinstance(backbone_config, PretrainedConfig):
            backbone_config = backbone_config.to_dict()
        backbone_config = dict(backbone_config or {"model_type": "bert"})
        if "model_type" not in backbone_config:
            raise ValueError(
                "RamenConfig: backbone_config has no 'model_type'; pass the backbone's config (e.g. "
                "AutoConfig.from_pretrained(path)) or a dict that names its model_type."
            )
        if pooling not in POOLING_MODES:
            raise ValueError(f"RamenConfig: pooling must be one of {POOLING_MODES}, got {pooling!r}.")
        if max_seq_length < 1:
            raise ValueError(f"RamenConfig: max_seq_length must be positive, got {max_seq_length}.")
        self.backbone_config = backbone_config
        self.pooling = pooling
        self.normalize = normalize
        self.max_seq_length = max_seq_length
        super().__init__(**kwargs)

    def backbone(self) -> PretrainedConfig:
        """The backbone's own config object (``BertConfig``, ``RobertaConfig``, ...)."""
        settings = {k: v for k, v in self.backbone_config.items() if k not in ("model_type", "transformers_version")}
        return AutoConfig.for_model(self.backbone_config["model_type"], **settings)

    @property
    def hidden_size(self) -> int:
        """Embedding width (the backbone's hidden size)."""
        return int(self.backbone_config.get("hidden_size", self.backbone_config.get("dim", 0)))
