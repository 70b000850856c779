"""Config of a network derived by DCA-NAS: the search space, the genotype and the network skeleton."""

from __future__ import annotations

from transformers import PretrainedConfig

from .spaces import DARTS, DEFAULT_GENOTYPES, NB201, DartsGenotype, NB201Genotype, get_space, parse_genotype


class DCANASConfig(PretrainedConfig):
    """A cell-based image classifier from the NAS-Bench-201 or the DARTS space.

    NAS-Bench-201 (``search_space="nb201"``): stem conv 3x3 -> ``cells_per_stage`` cells at ``init_channels``
    -> residual reduction block -> N cells at 2C -> residual block -> N cells at 4C -> BN-ReLU -> global
    average pool -> linear. DARTS (``"darts"``): stem conv 3x3 to ``stem_multiplier * C`` -> ``num_layers``
    cells, reduction cells (channels doubled, stride 2) at ``num_layers // 3`` and ``2 * num_layers // 3``
    -> global average pool -> linear; optional auxiliary head after the second reduction (CIFAR layout: it
    expects an 8x8 feature map there).

    Defaults (``None``) come from the space's evaluation network: NB201 C=16, N=5; DARTS C=36, 20 cells.
    ``genotype`` is stored as its canonical string; a genotype object or either string form is accepted.
    ``num_classes`` is an alias for ``num_labels``.
    """

    model_type = "dcanas"

    def __init__(
        self,
        search_space: str = NB201,
        genotype: str | NB201Genotype | DartsGenotype | None = None,
        init_channels: int | None = None,
        cells_per_stage: int | None = None,
        num_layers: int | None = None,
        stem_multiplier: int | None = None,
        image_size: int = 32,
        num_channels: int = 3,
        use_auxiliary_head: bool = False,
        auxiliary_weight: float = 0.4,
        drop_path_prob: float = 0.0,
        num_classes: int | None = None,
        **kwargs,
    ) -> None:
        space = get_space(search_space)
        if genotype is None:
            genotype = DEFAULT_GENOTYPES[space.name]
        try:
            parsed = parse_genotype(genotype, space)
        except ValueError as err:
            raise ValueError(f"DCANASConfig: invalid genotype for search_space={space.name!r}: {err}") from None
        init_channels = space.init_channels if init_channels is None else init_channels
        if space.name == NB201:
            if num_layers is not None:
                raise ValueError(
                    "DCANASConfig: num_layers applies to the DARTS space; a NAS-Bench-201 network is sized by "
                    "cells_per_stage (N cells in each of 3 stages)."
                )
            cells_per_stage = space.cells_per_stage if cells_per_stage is None else cells_per_stage
            if stem_multiplier not in (None, 1):
                raise ValueError("DCANASConfig: a NAS-Bench-201 stem has init_channels outputs (stem_multiplier=1).")
            stem_multiplier = 1
            if use_auxiliary_head:
                raise ValueError("DCANASConfig: the auxiliary head exists only for the DARTS space.")
        else:
            if cells_per_stage is not None:
                raise ValueError(
                    "DCANASConfig: cells_per_stage applies to the NAS-Bench-201 space; a DARTS network is sized "
                    "by num_layers (total cells)."
                )
            num_layers = space.num_layers if num_layers is None else num_layers
            stem_multiplier = space.stem_multiplier if stem_multiplier is None else stem_multiplier
        for name, value, low in (
            ("init_channels", init_channels, 2), ("cells_per_stage", cells_per_stage, 1),
            ("num_layers", num_layers, 1), ("stem_multiplier", stem_multiplier, 1),
            ("image_size", image_size, 4), ("num_channels", num_channels, 1),
        ):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
                raise ValueError(f"DCANASConfig: {name} must be an integer >= {low}, got {value!r}.")
        if image_size % 4:
            raise ValueError(
                f"DCANASConfig: image_size must be divisible by 4 (the network halves it twice), got {image_size}."
            )
        if space.name == DARTS and use_auxiliary_head and image_size // 4 != 8:
            raise ValueError(
                "DCANASConfig: the DARTS auxiliary head is the CIFAR one and needs an 8x8 map after the second "
                f"reduction, i.e. image_size=32 (got {image_size}); set use_auxiliary_head=False."
            )
        if not 0.0 <= float(drop_path_prob) < 1.0:
            raise ValueError(f"DCANASConfig: drop_path_prob must be in [0, 1), got {drop_path_prob}.")
        if num_classes is not None and "num_labels" not in kwargs and "id2label" not in kwargs:
            kwargs["num_labels"] = num_classes
        if "num_labels" not in kwargs and "id2label" not in kwargs:
            kwargs["num_labels"] = 10
        self.search_space = space.name
        self.genotype = parsed.to_string()
        self.init_channels = init_channels
        self.cells_per_stage = cells_per_stage
        self.num_layers = num_layers
        self.stem_multiplier = stem_multiplier
        self.image_size = image_size
        self.num_channels = num_channels
        self.use_auxiliary_head = bool(use_auxiliary_head)
        self.auxiliary_weight = float(auxiliary_weight)
        self.drop_path_prob = float(drop_path_prob)
        super().__init__(**kwargs)
        if self.num_labels < 1:
            raise ValueError(f"DCANASConfig: num_labels (num_classes) must be >= 1, got {self.num_labels}.")

    @property
    def num_classes(self) -> int:
        return self.num_labels

    @property
    def parsed_genotype(self) -> NB201Genotype | DartsGenotype:
        return parse_genotype(self.genotype, self.search_space)

    @property
    def space(self):
        return get_space(self.search_space)

    @property
    def reduction_layers(self) -> tuple[int, ...]:
        """DARTS: indices of the reduction cells; NB201: empty (its reductions are residual blocks)."""
        return self.space.reduction_layers(self.num_layers) if self.search_space == DARTS else ()
