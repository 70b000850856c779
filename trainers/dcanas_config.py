"""Options of a DCA-NAS search, as a ``TrainingArguments`` subclass (flags, JSON or YAML via HfArgumentParser).

The ``TrainingArguments`` fields drive the *weight* step (optimizer, ``learning_rate``, epochs / max_steps,
batch size, logging); the fields below size the supernet and the final network, set the budget, and drive
the architecture (alpha) and Lagrange multiplier (lambda) steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

BUDGET_TYPES = ("params", "flops", "macs", "latency")
DERIVATIONS = ("alpha", "perturbation", "naswot")


@dataclass
class DCANASTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus the search space, the device budget and the search-time techniques.

    Budget: ``budget`` in the unit of ``budget_type`` (parameters, FLOPs = multiply-accumulates as the NAS
    papers count them, or milliseconds of onnxruntime latency from ``latency_table``), or ``budget_ratio``
    times the cost of the largest architecture of the space. The cost is that of the *final* network
    (``final_*`` fields; default: the space's evaluation network, NB201 C=16 N=5, DARTS C=36 20 cells).
    ``constrained=False`` searches without the budget term (plain DARTS).
    """

    # -- space and networks ---------------------------------------------------------------------------
    search_space: str = field(default="nb201", metadata={"help": "nb201 or darts."})
    search_init_channels: int | None = field(
        default=None, metadata={"help": "Supernet width C (default: the space's search width, 16)."}
    )
    search_cells_per_stage: int | None = field(
        default=None, metadata={"help": "NB201 supernet: cells per stage (default 5)."}
    )
    search_num_layers: int | None = field(default=None, metadata={"help": "DARTS supernet: number of cells (default 8)."})
    final_init_channels: int | None = field(
        default=None, metadata={"help": "Final network width C the budget refers to (default: 16 NB201, 36 DARTS)."}
    )
    final_cells_per_stage: int | None = field(default=None, metadata={"help": "Final NB201 network: cells per stage (5)."})
    final_num_layers: int | None = field(default=None, metadata={"help": "Final DARTS network: number of cells (20)."})
    image_size: int = field(default=32, metadata={"help": "Input resolution of the search (square)."})
    final_image_size: int | None = field(
        default=None, metadata={"help": "Input resolution of the final network the budget refers to (default: image_size)."}
    )
    num_channels: int = field(default=3, metadata={"help": "Input channels."})
    num_labels: int = field(default=10, metadata={"help": "Number of classes."})

    # -- budget ---------------------------------------------------------------------------------------
    budget_type: str = field(
        default="params", metadata={"help": "params | flops (multiply-accumulates) | latency (ms).", "choices": list(BUDGET_TYPES)}
    )
    budget: float | None = field(default=None, metadata={"help": "Device budget K_d in the unit of budget_type."})
    budget_ratio: float | None = field(
        default=None, metadata={"help": "Device budget as a fraction of the largest architecture's cost (e.g. 0.5)."}
    )
    constrained: bool = field(default=True, metadata={"help": "Add lambda (k_s(alpha) - LUG(K_d)); False: plain DARTS."})
    lug: str | None = field(
        default=None, metadata={"help": "Look-up graph JSON mapping the device budget to the search budget (default: identity)."}
    )
    latency_table: str | None = field(
        default=None, metadata={"help": "Per-op latency table JSON measured on the target device (latency budgets)."}
    )
    latency_backend: str = field(
        default="onnxruntime", metadata={"help": "Backend of the latency table to use.", "choices": ["onnxruntime", "torch"]}
    )
    enforce_budget: bool = field(
        default=True,
        metadata={"help": "derive(): if the argmax genotype exceeds the device budget, move the edges that lose the "
                  "least alpha mass per unit of cost to cheaper ops until it fits (reported as repaired)."},
    )
    fill_budget: bool = field(
        default=False,
        metadata={"help": "derive(): after any repair, move edges to costlier ops while the network stays within the "
                  "device budget (least alpha mass lost per unit of cost added): for budgets that are targets, e.g. "
                  "a latency to come close to (reported as fill_moves)."},
    )
    derivation: str = field(
        default="alpha",
        metadata={"help": "How derive() picks the cell: alpha (argmax, DCA-NAS), perturbation (held-out "
                  "accuracy lost without each op, edge by edge; hf_compress.nas.perturbation; budget repair / fill "
                  "rank their moves by the same scores) or naswot (NAS-Bench-201: alpha's naswot_top_k most probable "
                  "cells within the budget, the one whose untrained final network scores highest by NASWOT; "
                  "hf_compress.nas.proxy; no repair or fill needed).", "choices": list(DERIVATIONS)},
    )
    naswot_top_k: int = field(
        default=30, metadata={"help": "derivation=naswot: how many of alpha's most probable cells are scored."}
    )
    naswot_images: int = field(
        default=64, metadata={"help": "derivation=naswot: held-out (alpha split) images in the scoring batch."}
    )
    perturbation_images: int = field(
        default=1024, metadata={"help": "derivation=perturbation: held-out (alpha split) images scored per op."}
    )
    perturbation_temperature: float = field(
        default=0.01, metadata={"help": "derivation=perturbation: pseudo-probabilities softmax(score / T)."}
    )
    latency_fit: bool = field(
        default=False,
        metadata={"help": "derive() with a latency budget, run on the device the table was measured on: measure the "
                  "derived network with latency_backend and, while it is outside [(1 - latency_tolerance) x budget, "
                  "budget] (narrowed by latency_tolerance / 5 on each side for measurement noise), rescale the table "
                  "budget by measured / estimated and derive again (repair + fill)."},
    )
    latency_tolerance: float = field(
        default=0.1, metadata={"help": "latency_fit: how far under the budget a measured latency may be (fraction)."}
    )
    latency_overshoot: float = field(
        default=0.0,
        metadata={"help": "latency_fit: how far over the budget (fraction) a measured latency may be when no "
                  "candidate lands within latency_tolerance under it (0: the budget is a ceiling; 0.1: a target, "
                  "answers up to 0.1 less the noise margin over it). Over-budget answers are logged with a warning."},
    )
    latency_fit_rounds: int = field(default=10, metadata={"help": "latency_fit: most candidates measured."})
    latency_fit_repeats: int = field(
        default=100, metadata={"help": "latency_fit: timed runs per candidate (median, best of 3 rounds)."}
    )

    # -- architecture and multiplier steps ---------------------------------------------------------------
    arch_learning_rate: float = field(default=3e-4, metadata={"help": "Adam learning rate of alpha (DARTS: 3e-4)."})
    arch_weight_decay: float = field(default=1e-3, metadata={"help": "Weight decay of alpha (DARTS: 1e-3)."})
    arch_beta1: float = field(default=0.5, metadata={"help": "Adam beta1 of alpha (DARTS: 0.5)."})
    arch_warmup_ratio: float = field(
        default=0.0, metadata={"help": "Fraction of the steps that train only the weights before alpha starts."}
    )
    lambda_learning_rate: float = field(
        default=0.1, metadata={"help": "Gradient-ascent step of lambda per unit of relative budget violation."}
    )
    lambda_init: float = field(default=0.0, metadata={"help": "Initial lambda."})
    budget_mode: str = field(
        default="upper",
        metadata={"help": "upper: the budget is a ceiling (lambda >= 0, the paper); target: lambda may go negative so "
                  "the search also moves up to the budget (derive() still enforces the ceiling).",
                  "choices": ["upper", "target"]},
    )
    lambda_signal: str = field(
        default="expected",
        metadata={"help": "What lambda ascends on: expected (k_s(alpha) / K_s - 1, the paper) or derived (the larger of "
                  "that and the current genotype's exact cost / K_s - 1; with budget_mode=target the genotype's "
                  "alone).", "choices": ["expected", "derived"]},
    )
    alpha_init_std: float = field(default=1e-3, metadata={"help": "alpha ~ N(0, std^2) at the start (DARTS: 1e-3)."})
    exclude_none: bool = field(
        default=True,
        metadata={"help": "NB201: derive the top-weighted non-none op per edge (DCA-NAS); False: plain argmax "
                  "(none can be chosen). DARTS never chooses none."},
    )
    unrolled: bool = field(default=False, metadata={"help": "Second-order DARTS step (not implemented: first-order only)."})
    val_fraction: float = field(
        default=0.5, metadata={"help": "Fraction of train_dataset held out for the alpha step (DARTS: 0.5)."}
    )

    # -- speed-ups ------------------------------------------------------------------------------------
    channel_bottleneck: int = field(
        default=4, metadata={"help": "Shrink factor of the channels the candidate ops run on (1 = off)."}
    )
    bottleneck_scope: str = field(
        default="cell",
        metadata={"help": "What the channel bottleneck shrinks. 'cell': the cell's input and output (every path, "
                  "skip_connect included, passes two 1x1 convs). 'ops' (NAS-Bench-201): only the ops with weights; "
                  "skip and pooling act on the full-width node states, so a skip stays an identity path as in the "
                  "derived network."},
    )
    weight_sharing: bool = field(
        default=True, metadata={"help": "The same op from the same source node shares weights across target nodes."}
    )
    derived_cells: bool = field(
        default=True, metadata={"help": "Only the first cell of each type computes the mixture; the others run the current genotype."}
    )
    derived_sampling: bool = field(
        default=True,
        metadata={"help": "While training, derived cells draw their genotype from softmax(alpha) (argmax at eval), "
                  "so every op of a derived cell gets trained instead of the initial genotype's only."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        from hf_compress.nas.spaces import get_space
        from hf_compress.nas.supernet import BOTTLENECK_SCOPES

        self.search_space = get_space(self.search_space).name
        if self.budget_type not in BUDGET_TYPES:
            raise ValueError(f"budget_type must be one of {BUDGET_TYPES}, got {self.budget_type!r}.")
        if self.constrained and (self.budget is None) == (self.budget_ratio is None):
            raise ValueError(
                "State exactly one budget: budget (in the unit of budget_type) or budget_ratio (fraction of the "
                "largest architecture), or pass constrained=False for an unconstrained search."
            )
        if self.budget_ratio is not None and not 0.0 < self.budget_ratio <= 1.0:
            raise ValueError(f"budget_ratio must be in (0, 1], got {self.budget_ratio}.")
        if self.unrolled:
            raise ValueError(
                "unrolled=True (second-order DARTS) is not implemented; DCA-NAS uses the first-order step "
                "(unrolled=False)."
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}.")
        if not 0.0 <= self.arch_warmup_ratio < 1.0:
            raise ValueError(f"arch_warmup_ratio must be in [0, 1), got {self.arch_warmup_ratio}.")
        if self.channel_bottleneck < 1:
            raise ValueError(f"channel_bottleneck is a shrink factor >= 1 (1 = off), got {self.channel_bottleneck}.")
        if self.bottleneck_scope not in BOTTLENECK_SCOPES:
            raise ValueError(f"bottleneck_scope must be one of {BOTTLENECK_SCOPES}, got {self.bottleneck_scope!r}.")
        if self.budget_type == "latency" and self.latency_table is None:
            raise ValueError(
                "budget_type='latency' needs latency_table=<json> measured on the target device "
                "(hf-compress nas lut --output latency.json)."
            )
        if self.derivation not in DERIVATIONS:
            raise ValueError(f"derivation must be one of {DERIVATIONS}, got {self.derivation!r}.")
        if self.derivation == "naswot":
            from hf_compress.nas.spaces import NB201, get_space

            if get_space(self.search_space).name != NB201:
                raise ValueError("derivation='naswot' ranks whole NAS-Bench-201 cells (the space is enumerated); "
                                 "use derivation='alpha' or 'perturbation' for the DARTS space.")
            if self.latency_fit:
                raise ValueError("derivation='naswot' picks among cells by score, latency_fit by measurement; "
                                 "use one of them.")
            if self.naswot_top_k < 1 or self.naswot_images < 2:
                raise ValueError("naswot_top_k must be >= 1 and naswot_images >= 2.")
        if self.perturbation_images < 1 or self.perturbation_temperature <= 0:
            raise ValueError("perturbation_images must be >= 1 and perturbation_temperature > 0.")
        if self.latency_fit and self.budget_type != "latency":
            raise ValueError(
                "latency_fit measures derived networks against a latency budget; set budget_type='latency' (with "
                "latency_table) or turn latency_fit off."
            )
        if not 0.0 < self.latency_tolerance < 1.0:
            raise ValueError(f"latency_tolerance must be in (0, 1), got {self.latency_tolerance}.")
        if not 0.0 <= self.latency_overshoot < 1.0:
            raise ValueError(f"latency_overshoot must be in [0, 1) (a fraction of the budget, e.g. 0.1), got "
                             f"{self.latency_overshoot}.")
        if self.latency_fit_rounds < 1 or self.latency_fit_repeats < 1:
            raise ValueError("latency_fit_rounds and latency_fit_repeats must be >= 1.")
        if self.budget_mode not in ("upper", "target"):
            raise ValueError(f"budget_mode must be 'upper' or 'target', got {self.budget_mode!r}.")
        if self.lambda_signal not in ("expected", "derived"):
            raise ValueError(f"lambda_signal must be 'expected' or 'derived', got {self.lambda_signal!r}.")
        if self.lambda_learning_rate < 0 or self.arch_learning_rate < 0:
            raise ValueError("arch_learning_rate and lambda_learning_rate must be >= 0.")

    @property
    def metric(self) -> str:
        from hf_compress.nas.constraint import resolve_metric

        return resolve_metric(self.budget_type)

    def supernet_kwargs(self) -> dict:
        return dict(
            search_space=self.search_space, init_channels=self.search_init_channels,
            cells_per_stage=self.search_cells_per_stage, num_layers=self.search_num_layers,
            num_classes=self.num_labels, image_size=self.image_size, num_channels=self.num_channels,
            channel_bottleneck=self.channel_bottleneck, weight_sharing=self.weight_sharing,
            derived_cells=self.derived_cells, alpha_init_std=self.alpha_init_std, exclude_none=self.exclude_none,
            derived_sampling=self.derived_sampling, bottleneck_scope=self.bottleneck_scope,
        )

    def final_config_kwargs(self) -> dict:
        kwargs = dict(init_channels=self.final_init_channels, image_size=self.final_image_size or self.image_size,
                      num_channels=self.num_channels, num_classes=self.num_labels)
        from hf_compress.nas.spaces import NB201, get_space

        if get_space(self.search_space).name == NB201:
            kwargs["cells_per_stage"] = self.final_cells_per_stage
        else:
            kwargs["num_layers"] = self.final_num_layers
        return kwargs
