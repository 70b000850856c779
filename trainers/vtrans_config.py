"""Options of VTrans pruning, as a ``TrainingArguments`` subclass (flags, JSON or YAML via HfArgumentParser)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from transformers import TrainingArguments

from hf_compress.vtrans.gates import GATE_GROUPS

VARIANTS = ("vtrans", "fast", "faster")
GATE_INITS = ("constant", "taylor")
_DEFAULT_DATA_FRACTION = {"vtrans": 1.0, "fast": 0.03, "faster": 0.025}
# Faster-VTrans's recovery fine-tune sees at least this much of the data: its frozen-weight gates are learnt from a
# small slice, but the materialized model recovers better from more sentences (MiniLM + SST-2, three seeds: 2.5%
# gates with a 12% fine-tune slice were within 0.9 / 2.0 points of VTrans at 50 / 70% and 10.2-10.3x faster timed
# beside it; 3% gates with a 9% slice were 1.7 / 2.2 points below).
_FASTER_MIN_FINETUNE_DATA_FRACTION = 0.12
# Faster-VTrans's weights train only in its short recovery fine-tune (about a hundred steps), so by default it takes
# a larger step than a fine-tune that follows weight training: learning_rate x 6 (3e-4 from 5e-5). MiniLM + SST-2,
# three seeds at sparsity 0.9: 0.8337 against 0.7986 in the same run time; see benchmarks/README.md.
_FASTER_FINETUNE_LR_FACTOR = 6.0


@dataclass
class VTransTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus the budget, the variant and the VIB / distillation knobs.

    Gate defaults were tuned on MiniLM + SST-2: the gate learning rate is ``gate_travel / pruning steps`` (a gate
    travelling ~4 log-alpha units kept FFN widths spread across layers; ~8 let late FFNs collapse and cost
    accuracy); gates start at log sigma^2 = -4 with a
    soft expected-kept estimate (k = 1) so the budget term has a gradient from the first step. KL weights:
    hidden dims x30 (as TVA-Prune weighs embeddings), heads x64 (a head costs ~64 FFN neurons), whole
    sub-layers x1 (they are removed when their units are, not pushed out first).

    ``num_train_epochs`` / ``max_steps`` size the pruning phase; ``finetune_epochs`` the fine-tuning of the
    materialized model that follows inside ``train()``.
    """

    # -- budget (state exactly one) -------------------------------------------------------------------
    target_sparsity: float | None = field(
        default=None,
        metadata={"help": "Fraction of the transformer layers' parameters to remove (CoFi convention), e.g. 0.5."},
    )
    target_params: int | None = field(default=None, metadata={"help": "Total parameter count of the pruned model."})
    target_flops: float | None = field(
        default=None, metadata={"help": "Forward FLOPs per sequence of flops_seq_len tokens of the pruned model."}
    )
    flops_seq_len: int = field(default=128, metadata={"help": "Sequence length at which FLOPs are counted."})
    round_to: int | None = field(
        default=None, metadata={"help": "Round kept hidden size and FFN widths to a multiple of this (e.g. 8 or 64)."}
    )

    uniform: bool = field(
        default=False,
        metadata={"help": "Decoder LMs: keep the same shape in every layer; LLaMA-layout models are then saved with "
                  "their family's own config (stock transformers loads them without hf-compress)."},
    )
    fill_to_budget: bool = field(
        default=True,
        metadata={"help": "Re-admit the best-scoring pruned units while they fit, so the budget is used, not undershot."},
    )

    # -- variant --------------------------------------------------------------------------------------
    variant: str = field(
        default="vtrans",
        metadata={
            "help": "vtrans: train weights and gates on all data, then fine-tune; fast: the same on data_fraction "
            "of the data; faster: freeze every weight and train only the gates, then a short fine-tune.",
            "choices": list(VARIANTS),
        },
    )
    data_fraction: float | None = field(
        default=None,
        metadata={"help": "Fraction of train_dataset the pruning phase uses (default: 1.0 vtrans, 0.03 fast, "
                  "0.025 faster)."},
    )
    finetune_epochs: float | None = field(
        default=None,
        metadata={"help": "Epochs of fine-tuning the materialized model (default: num_train_epochs; 1 for faster)."},
    )
    finetune_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the fine-tuning phase (default: learning_rate; for faster, whose weights "
                  "train only in this short phase, 6 x learning_rate)."},
    )
    finetune_data_fraction: float | None = field(
        default=None,
        metadata={"help": "Fraction of train_dataset the fine-tuning phase uses (default: the pruning phase's slice, "
                  "data_fraction; for faster at least 0.12). The slices are nested (same seed), so a larger one "
                  "holds the pruning slice: Faster's gates are learnt from 2.5%% while the recovery sees 12%%."},
    )
    finetune_dropout: bool = field(
        default=True,
        metadata={"help": "Keep the model's dropout on during the fine-tuning phase. False turns it off there: a heavily "
                  "pruned model underfits rather than overfits, and on CPU the dropout masks are a large share of its "
                  "step."},
    )
    finetune_freeze_embeddings: bool = field(
        default=False,
        metadata={"help": "Keep the input embeddings fixed during the fine-tuning phase. They are most of a heavily "
                  "pruned encoder's parameters (MiniLM at sparsity 0.9: 11.7M of 13.1M), so their optimizer update "
                  "costs more than the layers' own step; they are not pruned when the hidden size is kept."},
    )
    finetune_batch_size: int | None = field(
        default=None,
        metadata={"help": "Per-device batch size of the fine-tuning phase (default: per_device_train_batch_size). "
                  "Lets the gate phase run at a large batch (fewer steps: on a GPU a step of a small model costs "
                  "about the same at any batch) while the fine-tune keeps a smaller one."},
    )

    # -- gates ----------------------------------------------------------------------------------------
    gate_groups: list[str] | None = field(
        default=None,
        metadata={"help": f"Structures to prune, any of {', '.join(GATE_GROUPS)}. Default: the architecture's "
                  "own choice - encoders hidden, heads, ffn while the weights train (the whole-sub-layer gates mha / "
                  "ffn_layer cost accuracy there on MiniLM + SST-2; a sub-layer still goes when all its units do) and "
                  "heads, ffn, mha, ffn_layer for variant='faster' (frozen weights, which cope badly with a narrower "
                  "hidden size); decoders all of them."},
    )
    gate_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the VIB gate parameters (default: gate_travel / pruning steps, "
                  "within [0.002, 0.05])."},
    )
    gate_travel: float = field(
        default=4.0,
        metadata={"help": "How far (in log-alpha units) an unopposed gate may move over the pruning phase; sets the "
                  "default gate learning rate. Longer travel lets whole late FFNs collapse (measured worse)."},
    )
    lagrangian_learning_rate: float = field(
        default=0.01, metadata={"help": "Learning rate of the Lagrange multipliers (gradient ascent)."}
    )
    gate_noise: str = field(
        default="absolute",
        metadata={
            "help": "absolute: noise sigma independent of mu (VIBNet); relative: noise proportional to mu, so a gate "
            "that shrinks while the following weights grow is not pruned for it.",
            "choices": ["absolute", "relative"],
        },
    )
    gate_init_mu: float = field(default=1.0, metadata={"help": "Initial gate mean."})
    gate_init_log_sigma2: float = field(default=-4.0, metadata={"help": "Initial gate log-variance."})
    gate_init: str = field(
        default="constant",
        metadata={"help": "constant: every gate starts at gate_init_log_sigma2; taylor: before the pruning phase, a "
                  "first-order Taylor score |z dL/dz| over gate_init_batches training batches spreads each group's "
                  "initial log-alpha by rank over gate_init_spread units (least important nearest the threshold).",
                  "choices": list(GATE_INITS)},
    )
    gate_init_spread: float = field(
        default=4.0, metadata={"help": "gate_init='taylor': log-alpha range between a group's least and most "
                               "important unit at the start."}
    )
    gate_init_batches: int = field(
        default=16, metadata={"help": "gate_init='taylor': training batches the Taylor score is summed over."}
    )
    gate_phase_dropout: bool = field(
        default=True,
        metadata={"help": "Keep the model's dropout on while the gates train. False, for faster (frozen weights, where "
                  "dropout only adds noise to the gates' gradient), makes a gate step about a fifth cheaper on CPU "
                  "(MiniLM + SST-2, Faster's default gates: within 0.5 points of dropout on at sparsity 0.5, 0.7 and 0.9). "
                  "The gates keep sampling, and the fine-tuning phase always keeps its dropout."},
    )
    expected_keep_temperature: float = field(
        default=1.0, metadata={"help": "k in the expected-kept estimate sigmoid(-k * log_alpha)."}
    )
    kl_weight: float = field(default=1e-6, metadata={"help": "Overall weight of the VIB KL term."})
    kl_weight_hidden: float = field(default=30.0, metadata={"help": "Relative KL weight of hidden dimensions."})
    kl_weight_heads: float = field(default=64.0, metadata={"help": "Relative KL weight of attention heads."})
    kl_weight_kv_groups: float = field(
        default=128.0, metadata={"help": "Relative KL weight of whole KV groups (grouped-query attention)."}
    )
    kl_weight_ffn: float = field(default=1.0, metadata={"help": "Relative KL weight of FFN neurons."})
    kl_weight_sublayers: float = field(default=1.0, metadata={"help": "Relative KL weight of whole sub-layers."})
    sparsity_warmup_ratio: float = field(
        default=0.5, metadata={"help": "Fraction of the pruning steps over which the target goes from dense to the budget."}
    )

    # -- distillation from the dense fine-tuned teacher ---------------------------------------------------
    task_loss_weight: float = field(default=0.5, metadata={"help": "Weight of the task loss (labels)."})
    distill_logits_weight: float = field(default=0.5, metadata={"help": "Weight of the logits KL to the teacher."})
    distill_hidden_weight: float = field(
        default=0.1, metadata={"help": "Weight of the layer-mapped hidden-state MSE to the teacher."}
    )
    distill_temperature: float = field(default=2.0, metadata={"help": "Temperature of the logits distillation."})
    teacher_cache_mb: float = field(
        default=1024.0,
        metadata={"help": "Keep each example's teacher logits and hidden states (on the teacher's device) so the "
                  "frozen teacher runs once per example, not once per step, over all epochs of pruning and "
                  "fine-tuning; above this many MB the cache is dropped and the teacher runs every step. 0: off."},
    )

    def __post_init__(self) -> None:
        if self.ddp_find_unused_parameters is None:
            # every trainable parameter gets a gradient each step; the Lagrange multipliers only outside
            # forward(), which DDP's unused-parameter search would wrongly mark as ready early
            self.ddp_find_unused_parameters = False
        super().__post_init__()
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}.")
        unknown = set(self.gate_groups or ()) - set(GATE_GROUPS)
        if unknown:
            raise ValueError(f"Unknown gate_groups {sorted(unknown)}; choose from {GATE_GROUPS}.")
        budgets = [x for x in (self.target_sparsity, self.target_params, self.target_flops) if x is not None]
        if len(budgets) != 1:
            raise ValueError(
                "State exactly one budget: target_sparsity (e.g. 0.5), target_params or target_flops "
                f"(got {len(budgets)})."
            )
        if self.gate_noise not in ("absolute", "relative"):
            raise ValueError(f"gate_noise must be 'absolute' or 'relative', got {self.gate_noise!r}.")
        if self.data_fraction is not None and not 0.0 < self.data_fraction <= 1.0:
            raise ValueError(f"data_fraction must be in (0, 1], got {self.data_fraction}.")
        if self.finetune_data_fraction is not None and not 0.0 < self.finetune_data_fraction <= 1.0:
            raise ValueError(f"finetune_data_fraction must be in (0, 1], got {self.finetune_data_fraction}.")
        if self.round_to is not None and self.round_to < 1:
            raise ValueError(f"round_to must be a positive integer, got {self.round_to}.")
        if self.gate_groups is not None and not self.gate_groups:
            raise ValueError("gate_groups is empty: name at least one of " + ", ".join(GATE_GROUPS)
                             + ", or leave it unset for the architecture's default.")
        if self.gate_init not in GATE_INITS:
            raise ValueError(f"gate_init must be one of {GATE_INITS}, got {self.gate_init!r}.")
        if self.gate_init_spread < 0 or self.gate_init_batches < 1:
            raise ValueError("gate_init_spread must be >= 0 and gate_init_batches >= 1 (got "
                             f"{self.gate_init_spread}, {self.gate_init_batches}).")
        if self.teacher_cache_mb < 0:
            raise ValueError(f"teacher_cache_mb must be >= 0 (0 switches the cache off), got {self.teacher_cache_mb}.")
        if self.finetune_batch_size is not None and self.finetune_batch_size < 1:
            raise ValueError(f"finetune_batch_size must be a positive integer, got {self.finetune_batch_size}.")

    def gate_lr_for(self, pruning_steps: int) -> float:
        if self.gate_learning_rate is not None:
            return self.gate_learning_rate
        return min(0.05, max(0.002, self.gate_travel / max(1, pruning_steps)))

    @property
    def effective_data_fraction(self) -> float:
        return self.data_fraction if self.data_fraction is not None else _DEFAULT_DATA_FRACTION[self.variant]

    @property
    def effective_finetune_data_fraction(self) -> float:
        if self.finetune_data_fraction is not None:
            return self.finetune_data_fraction
        if self.variant == "faster":
            return max(self.effective_data_fraction, _FASTER_MIN_FINETUNE_DATA_FRACTION)
        return self.effective_data_fraction

    @property
    def effective_finetune_learning_rate(self) -> float:
        if self.finetune_learning_rate is not None:
            return self.finetune_learning_rate
        if self.variant == "faster":
            return self.learning_rate * _FASTER_FINETUNE_LR_FACTOR
        return self.learning_rate

    @property
    def effective_finetune_epochs(self) -> float:
        if self.finetune_epochs is not None:
            return self.finetune_epochs
        return 1.0 if self.variant == "faster" else self.num_train_epochs

    def kl_group_weights(self) -> dict[str, float]:
        return {
            "hidden": self.kl_weight * self.kl_weight_hidden,
            "heads": self.kl_weight * self.kl_weight_heads,
            "kv_groups": self.kl_weight * self.kl_weight_kv_groups,
            "ffn": self.kl_weight * self.kl_weight_ffn,
            "mha": self.kl_weight * self.kl_weight_sublayers,
            "ffn_layer": self.kl_weight * self.kl_weight_sublayers,
        }


@dataclass
class LoRARecoveryArguments(TrainingArguments):
    """``TrainingArguments`` of post-pruning LoRA recovery (:func:`hf_compress.vtrans.recovery.recover_with_lora`).

    Defaults follow TVA-Prune's recovery of a pruned LLM: LoRA on every attention / FFN projection, trained with
    the causal-LM loss plus a light logits KL to the dense teacher (T = 2, weight 0.01) and a strong hidden-state
    distillation (0.9) on the kept hidden dims, which pulls the pruned residual stream back to the dense one.
    The LoRA fields are named as in trl's ``ModelConfig`` (``lora_r``, ``lora_alpha``, ``lora_dropout``,
    ``lora_target_modules``); pass a full ``peft.LoraConfig`` to ``recover_with_lora`` to override them all.
    """

    learning_rate: float = field(
        default=1e-4, metadata={"help": "Learning rate of the LoRA weights (LLM-Pruner's LoRA recovery uses 1e-4)."}
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha (the update is scaled by alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch input."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Module names to adapt (default: every attention and FFN projection the pruned model kept, "
                  "found from its structure by hf_compress.vtrans.recovery.lora_target_modules)."},
    )
    adapter_dir: str | None = field(
        default=None,
        metadata={"help": "Where the adapter alone is saved before merging (default: output_dir/adapter)."},
    )
    task_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the causal-LM loss (labels)."})
    distill_logits_weight: float = field(default=0.01, metadata={"help": "Weight of the logits KL to the teacher."})
    distill_hidden_weight: float = field(
        default=0.9, metadata={"help": "Weight of the layer-mapped hidden-state MSE to the teacher (kept dims)."}
    )
    distill_temperature: float = field(default=2.0, metadata={"help": "Temperature of the logits distillation."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lora_r < 1:
            raise ValueError(f"lora_r must be a positive integer, got {self.lora_r}.")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}.")
        if self.distill_temperature <= 0:
            raise ValueError(f"distill_temperature must be positive, got {self.distill_temperature}.")
        weights = {"task_loss_weight": self.task_loss_weight, "distill_logits_weight": self.distill_logits_weight,
                   "distill_hidden_weight": self.distill_hidden_weight}
        negative = [name for name, value in weights.items() if value < 0]
        if negative:
            raise ValueError(f"Loss weights must be >= 0 (got negative {', '.join(negative)}).")

    @property
    def resolved_adapter_dir(self) -> str:
        return self.adapter_dir or os.path.join(self.output_dir, "adapter")
