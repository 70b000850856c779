"""``VTransTrainer``: VIB-gated pruning to a budget, materialization, then fine-tuning of the pruned model."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Subset
from transformers import PreTrainedModel, Trainer

from hf_compress.vtrans.adapters import get_adapter
from hf_compress.vtrans.baselines import gate_taylor_scores
from hf_compress.vtrans.budget import LagrangianTerm, expected_size, measure, resolve_budget
from hf_compress.vtrans.masking import attach_gates, dense_shape, get_gates
from hf_compress.vtrans.materialize import materialize as materialize_model
from hf_compress.vtrans.decoder_budget import DecoderShape
from hf_compress.vtrans.decoder_materialize import select_decoder_units
from hf_compress.vtrans.materialize import gate_decisions, select_units

from .teacher_cache import TeacherOutputCache
from .vtrans_config import VTransTrainingArguments

logger = logging.getLogger(__name__)


def subsample(dataset, fraction: float, seed: int):
    """A seeded random ``fraction`` of a dataset (``datasets.Dataset`` or any torch map-style dataset)."""
    if dataset is None or fraction >= 1.0:
        return dataset
    n = max(1, int(round(len(dataset) * fraction)))
    order = np.random.default_rng(seed).permutation(len(dataset))[:n]
    if hasattr(dataset, "select"):
        return dataset.select(sorted(order.tolist()))
    return Subset(dataset, sorted(order.tolist()))


def gate_groups_for(model: PreTrainedModel, args: VTransTrainingArguments) -> tuple[str, ...]:
    """The gate groups to attach: the user's, else the architecture adapter's default for the variant
    (``frozen_weights_gate_groups`` for Faster-VTrans, ``default_gate_groups`` otherwise)."""
    if args.gate_groups is not None:
        return tuple(args.gate_groups)
    adapter = get_adapter(model)
    groups = adapter.frozen_weights_gate_groups if args.variant == "faster" else adapter.default_gate_groups
    logger.info("VTrans gates over %s (the %s default for variant %r; set gate_groups to change)", ", ".join(groups),
                model.config.model_type, args.variant)
    return groups


def check_teacher(student: PreTrainedModel, teacher: PreTrainedModel | None, hidden_weight: float) -> None:
    """A teacher must predict the same labels as the student (and share its width for hidden distillation)."""
    if teacher is None:
        return
    s, t = student.config, teacher.config
    if getattr(s, "num_labels", None) != getattr(t, "num_labels", None) or (
        s.id2label and t.id2label and {int(k): v for k, v in s.id2label.items()} != {int(k): v for k, v in t.id2label.items()}
    ):
        raise ValueError(
            f"The teacher predicts different labels than the student (teacher num_labels={t.num_labels}, "
            f"id2label={t.id2label}; student num_labels={s.num_labels}, id2label={s.id2label}). Use the dense "
            f"model fine-tuned on this task as teacher, or load the student from it."
        )
    t_hidden = getattr(t, "hidden_size", getattr(t, "dim", None))
    s_hidden = getattr(s, "hidden_size", getattr(s, "dim", None))
    if hidden_weight > 0 and t_hidden != s_hidden:
        raise ValueError(
            f"Hidden-state distillation needs teacher and student of the same width (teacher {t_hidden}, student "
            f"{s_hidden}); set distill_hidden_weight=0 or use the student's own dense fine-tuned model as teacher."
        )


def closest_student_layers(
    student_hidden: list[torch.Tensor], teacher_hidden: list[torch.Tensor], tokens: torch.Tensor,
    chunk: int = 1 << 16,
) -> torch.Tensor:
    """For each teacher layer, the index (into ``student_hidden``) of the student layer with the smallest masked
    squared distance to it: the CoFi layer mapping.

    All ``len(student) x len(teacher)`` distances come from one Gram matrix, ``|s|^2 + |t|^2 - 2 s.t`` over the
    token-masked, flattened states: float32 products over chunks of ``chunk`` elements, summed in float64. A
    30-layer decoder needs 900 distances per step; one pair at a time they cost 900 kernel chains and a device
    sync per teacher layer (5x slower on one CPU thread for SmolLM2-135M's 30 layers). ``tokens`` is the 0/1
    token mask, broadcastable to the states. No gradient flows through the mapping.
    """
    with torch.no_grad():
        s = torch.stack([(h * tokens).reshape(-1) for h in student_hidden])  # [Ls, M]
        t = torch.stack([(h * tokens).reshape(-1) for h in teacher_hidden])  # [Lt, M]
        gram = torch.zeros(s.shape[0], t.shape[0], dtype=torch.float64, device=s.device)
        s_sq = torch.zeros(s.shape[0], dtype=torch.float64, device=s.device)
        t_sq = torch.zeros(t.shape[0], dtype=torch.float64, device=s.device)
        for start in range(0, s.shape[1], chunk):
            s_c, t_c = s[:, start:start + chunk].float(), t[:, start:start + chunk].float()
            gram += (s_c @ t_c.T).double()
            s_sq += s_c.pow(2).sum(1).double()
            t_sq += t_c.pow(2).sum(1).double()
        distances = s_sq[:, None] + t_sq[None, :] - 2.0 * gram  # [Ls, Lt]
        return distances.argmin(dim=0)


def _without_hidden_states(outputs):
    """Outputs as the model gives them without distillation's hidden states (so predictions are logits)."""
    return outputs.__class__(**{k: v for k, v in outputs.items() if k != "hidden_states"})


def _is_decoder(model) -> bool:
    if model is None:
        return False
    try:
        return get_adapter(model).kind == "decoder"
    except ValueError:  # an unsupported teacher architecture: plain MSE
        return False


def _no_cache(model) -> dict:
    """Training forward passes of decoder LMs need no KV cache."""
    config = getattr(getattr(model, "module", model), "config", None)
    return {"use_cache": False} if getattr(config, "use_cache", None) is not None else {}


def backbone_dropout_off(model: torch.nn.Module, keep_training: torch.nn.Module | None = None) -> None:
    """Put every submodule of ``model`` in eval mode except ``keep_training`` (the gates, which must keep
    sampling) and the model object itself, so dropout, however a module implements it (``nn.Dropout``,
    attention kernels reading their own ``training`` flag), is off for this forward pass. Layers with
    gradient checkpointing switched on keep their flag: they only read it to decide whether to checkpoint.
    ``Trainer`` calls ``model.train()`` before every step, which undoes this."""
    spared = set() if keep_training is None else {id(m) for m in keep_training.modules()}
    for module in model.modules():
        if module is model or id(module) in spared or getattr(module, "gradient_checkpointing", False) is True:
            continue
        module.training = False


def _length(dataset) -> int | None:
    """len(dataset), or None for None and for streamed datasets without a length."""
    try:
        return None if dataset is None else len(dataset)
    except TypeError:
        return None


def _constant(step: int) -> float:
    return 1.0


class DistillationMixin:
    """Logits KL and layer-mapped hidden-state MSE against a frozen dense teacher."""

    teacher_model: PreTrainedModel | None
    args: VTransTrainingArguments

    def _prepare_teacher(self, teacher: PreTrainedModel | None) -> None:
        self.teacher_model = teacher
        self._relative_hidden_mse = _is_decoder(teacher)
        self.teacher_cache = None
        if teacher is not None:
            teacher.eval().requires_grad_(False)
            teacher.to(self.args.device)
            cache_mb = getattr(self.args, "teacher_cache_mb", 0) or 0
            if cache_mb > 0:
                # the examples the teacher will see: the training set, or VTransTrainer's larger fine-tune slice
                datasets = (getattr(self, "train_dataset", None), getattr(self, "_finetune_dataset", None))
                sizes = [n for n in map(_length, datasets) if n is not None]
                self.teacher_cache = TeacherOutputCache(
                    int(cache_mb * 2**20), keep_hidden=self.args.distill_hidden_weight > 0,
                    expected_examples=max(sizes) if sizes else None,
                )

    def _teacher_outputs(self, inputs: dict) -> object:
        teacher_inputs = {k: v for k, v in inputs.items() if k != "labels"}

        def run_teacher(batch: dict):
            with torch.no_grad():
                return self.teacher_model(**batch, **_no_cache(self.teacher_model), output_hidden_states=True)

        if self.teacher_cache is None:
            return run_teacher(teacher_inputs)
        return self.teacher_cache.fetch(teacher_inputs, run_teacher)

    def distillation_terms(
        self,
        student_out,
        teacher_out,
        attention_mask: torch.Tensor | None,
        hidden_index: torch.Tensor | None,
        alive_layers: list[int],
    ) -> dict[str, torch.Tensor]:
        terms = {}
        args, T = self.args, self.args.distill_temperature
        if args.distill_logits_weight > 0:
            s, t = student_out.logits, teacher_out.logits
            if s.shape[-1] == 1:
                kd = F.mse_loss(s, t)
            elif s.dim() == 3:  # per-token logits (LMs, token classification): mean KL over real tokens
                per_token = F.kl_div(F.log_softmax(s.float() / T, -1), F.log_softmax(t.float() / T, -1),
                                     reduction="none", log_target=True).sum(-1)
                if attention_mask is not None:
                    mask = attention_mask.to(per_token.dtype)
                    kd = (per_token * mask).sum() / mask.sum().clamp_min(1.0) * T * T
                else:
                    kd = per_token.mean() * T * T
            else:
                kd = F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean") * T * T
            terms["distill_logits"] = args.distill_logits_weight * kd
        if args.distill_hidden_weight > 0 and student_out.hidden_states is not None and alive_layers:
            teacher_hidden = teacher_out.hidden_states[1:]
            student_hidden = student_out.hidden_states
            tokens = (
                attention_mask.unsqueeze(-1).to(student_hidden[0].dtype)
                if attention_mask is not None
                else torch.ones_like(student_hidden[0][..., :1])
            )
            denom = tokens.sum().clamp_min(1.0)
            losses = []
            def pair_loss(s_h, t_h):
                """MSE; for decoder LMs relative to the teacher's mean square, because pre-norm residual
                streams carry outlier dims in the hundreds that would otherwise swamp every other term."""
                if s_h.shape[-1] != t_h.shape[-1]:
                    s_h = s_h.index_select(-1, hidden_index)
                mse = ((s_h - t_h).pow(2) * tokens).sum() / (denom * t_h.shape[-1])
                if not self._relative_hidden_mse:
                    return mse
                scale = ((t_h.detach().float().pow(2) * tokens).sum() / (denom * t_h.shape[-1])).clamp_min(1e-6)
                return mse / scale

            if hidden_index is not None:
                teacher_hidden = [t_h.index_select(-1, hidden_index) for t_h in teacher_hidden]
            candidates = [student_hidden[i + 1] for i in alive_layers]
            if hidden_index is not None and candidates[0].shape[-1] != teacher_hidden[0].shape[-1]:
                candidates = [s_h.index_select(-1, hidden_index) for s_h in candidates]
            # closest student layer per teacher layer (CoFi mapping), chosen without a graph; only the chosen
            # pairs' losses are kept for backward
            best = closest_student_layers(candidates, teacher_hidden, tokens).tolist()
            for t_h, b in zip(teacher_hidden, best):
                losses.append(pair_loss(student_hidden[alive_layers[b] + 1], t_h))
            terms["distill_hidden"] = args.distill_hidden_weight * torch.stack(losses).mean()
        return terms


class VTransTrainer(DistillationMixin, Trainer):
    """Prune a transformer to a budget with VIB gates, materialize it, then fine-tune the pruned model.

    ``train()`` runs the pruning phase (task loss + distillation + KL + Lagrangian; the gates and the
    multipliers are parameters of the model, so checkpoints and ``resume_from_checkpoint`` restore them),
    materializes the model at the budget and fine-tunes it (``finetune_epochs``) with the same
    distillation; the pruned model and tokenizer are saved in ``output_dir``. ``materialize()`` returns it.
    """

    def __init__(
        self,
        model: PreTrainedModel | None = None,
        teacher_model: PreTrainedModel | None = None,
        args: VTransTrainingArguments | None = None,
        train_dataset=None,
        eval_dataset=None,
        **kwargs,
    ) -> None:
        if not isinstance(args, VTransTrainingArguments):
            raise TypeError("VTransTrainer needs args=VTransTrainingArguments(...) (it holds the budget and variant).")
        if model is None:
            raise ValueError("VTransTrainer needs the model to prune (model=...).")
        self.dense_shape = dense_shape(model)  # raises UnsupportedModelError with the supported list
        self.budget = resolve_budget(
            self.dense_shape,
            target_sparsity=args.target_sparsity,
            target_params=args.target_params,
            target_flops=args.target_flops,
            seq_len=args.flops_seq_len,
            min_hidden=args.round_to or 1,
        )
        check_teacher(model, teacher_model, args.distill_hidden_weight)
        full_dataset, train_dataset = train_dataset, subsample(train_dataset, args.effective_data_fraction, args.seed)
        self._finetune_dataset = (  # nested: the same seed's permutation, cut longer
            train_dataset if args.effective_finetune_data_fraction == args.effective_data_fraction
            else subsample(full_dataset, args.effective_finetune_data_fraction, args.seed)
        )
        gates = get_gates(model) or attach_gates(
            model,
            groups=gate_groups_for(model, args),
            init_mu=args.gate_init_mu,
            init_log_sigma2=args.gate_init_log_sigma2,
            temperature=args.expected_keep_temperature,
            relative=args.gate_noise == "relative",
        )
        if args.variant == "faster":  # Faster-VTrans: only the gates (and the multipliers) learn
            for name, param in model.named_parameters():
                if not name.startswith("vtrans_gates."):  # (gates frozen on purpose, e.g. decoder hidden mu, stay so)
                    param.requires_grad_(False)
        super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset, **kwargs)
        self._prepare_teacher(teacher_model)
        self.lagrangian = LagrangianTerm(self.budget)
        self._gates = gates
        self._extra_logs: dict[str, list[torch.Tensor | float]] = defaultdict(list)
        self.pruned_model: PreTrainedModel | None = None
        self.compression_seconds: float | None = None
        self.teacher_cache_stats: dict | None = None
        logger.info("VTrans (%s) budget: %s", args.variant, self.budget.description)

    # -- optimizer: weights, gates and multipliers in their own groups ----------------------------------
    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        groups = {"decay": [], "no_decay": [], "gates": [], "lagrangian": []}
        for name, param in opt_model.named_parameters():
            if not param.requires_grad:
                continue
            if name.startswith("vtrans_gates.lambda_"):
                groups["lagrangian"].append(param)
            elif name.startswith("vtrans_gates."):
                groups["gates"].append(param)
            else:
                groups["decay" if name in decay else "no_decay"].append(param)
        param_groups = [
            {"params": groups["decay"], "weight_decay": self.args.weight_decay},
            {"params": groups["no_decay"], "weight_decay": 0.0},
            {"params": groups["gates"], "weight_decay": 0.0, "lr": self.args.gate_lr_for(self.state.max_steps or 0)},
            {"params": groups["lagrangian"], "weight_decay": 0.0, "lr": self.args.lagrangian_learning_rate},
        ]
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls([g for g in param_groups if g["params"]], **optimizer_kwargs)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """The weights follow ``lr_scheduler_type``; gates and multipliers keep a constant learning rate so
        they can still move (and hold the budget) late in the pruning phase."""
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
            opt = optimizer or self.optimizer
            names = {id(p): n for n, p in self.model.named_parameters() if n.startswith("vtrans_gates.")}
            gate_lr = self.args.gate_lr_for(num_training_steps)  # the pruning length is known here
            for i, group in enumerate(opt.param_groups):
                name = names.get(id(group["params"][0])) if group["params"] else None
                if name is None:
                    continue
                scheduler.lr_lambdas[i] = _constant
                if not name.startswith("vtrans_gates.lambda_"):
                    scheduler.base_lrs[i] = group["initial_lr"] = gate_lr
                group["lr"] = scheduler.base_lrs[i]
        return scheduler

    # -- objective -----------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training and not self.args.gate_phase_dropout:
            backbone_dropout_off(model, self._gates)
        need_hidden = self.teacher_model is not None and self.args.distill_hidden_weight > 0
        outputs = model(**inputs, output_hidden_states=need_hidden, **_no_cache(model))
        terms: dict[str, torch.Tensor] = {}
        if outputs.loss is not None:
            terms["task"] = self.args.task_loss_weight * outputs.loss if self.teacher_model is not None else outputs.loss
        if self.teacher_model is not None:
            with torch.no_grad():
                current = self._gates.deterministic()  # distil only what the thresholded model keeps
            keep_hidden = current.get("hidden")
            hidden_index = None if keep_hidden is None else torch.nonzero(keep_hidden != 0).squeeze(-1)
            terms.update(
                self.distillation_terms(
                    outputs, self._teacher_outputs(inputs), inputs.get("attention_mask"), hidden_index,
                    self._alive_layers(current),
                )
            )
        if model.training:
            terms.update(self._pruning_terms())
        loss = sum(terms.values())
        if model.training:
            for name, value in terms.items():
                self._extra_logs[f"loss_{name}"].append(value.detach())  # read at log time: no device sync per step
        return (loss, _without_hidden_states(outputs)) if return_outputs else loss

    def _alive_layers(self, z: dict[str, torch.Tensor]) -> list[int]:
        """Layers that still compute something (both sub-layers removed -> no longer a distillation target)."""
        n = self.dense_shape.num_layers
        mha = z.get("mha", torch.ones(n)) != 0
        ffn = z.get("ffn_layer", torch.ones(n)) != 0
        alive = [i for i in range(n) if bool(mha[i]) or bool(ffn[i])]
        return alive or list(range(n))

    def _pruning_terms(self) -> dict[str, torch.Tensor]:
        gates = self._gates
        kl = sum(gates.kl(self.args.kl_group_weights()).values())
        warmup = int(self.args.sparsity_warmup_ratio * max(1, self.state.max_steps))
        self.lagrangian.warmup_steps = warmup
        expected = expected_size(self.dense_shape, gates, self.budget.metric, self.budget.seq_len)
        lagrangian, relative = self.lagrangian(expected, gates.lambda_1, gates.lambda_2, self.state.global_step)
        self._extra_logs["expected_size_ratio"].append(relative.detach())
        self._extra_logs["target_size_ratio"].append(self.lagrangian.target_at(self.state.global_step))
        return {"kl": kl, "lagrangian": lagrangian}

    def realised_size_ratio(self) -> float:
        """Size (in the budget's metric) of what the gates' thresholded decisions keep, relative to dense."""
        select = select_decoder_units if isinstance(self.dense_shape, DecoderShape) else select_units
        shape = select(self.dense_shape, gate_decisions(self._gates), {}, budget=None).shape(self.dense_shape)
        return measure(shape, self.budget.metric, self.budget.seq_len) / self.budget.dense

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._extra_logs:
            for name, values in self._extra_logs.items():
                logs[name] = float(torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in values]).mean())
            self._extra_logs.clear()
            logs["realised_size_ratio"] = self.realised_size_ratio()
            logs["lambda_1"] = float(self._gates.lambda_1.detach())
            logs["lambda_2"] = float(self._gates.lambda_2.detach())
        super().log(logs, start_time)

    # -- phases --------------------------------------------------------------------------------------
    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        started = time.perf_counter()
        if self.args.gate_init == "taylor" and not resume_from_checkpoint and self.state.global_step == 0:
            self.seed_gates_from_taylor()
        output = super().train(
            resume_from_checkpoint=resume_from_checkpoint, trial=trial, ignore_keys_for_eval=ignore_keys_for_eval, **kwargs
        )
        pruned = self.materialize()
        epochs = self.args.effective_finetune_epochs
        if epochs > 0:
            pruned = self._finetune(pruned, epochs)
        self.compression_seconds = time.perf_counter() - started
        if self.teacher_cache is not None:
            self.teacher_cache_stats = self.teacher_cache.stats()
            logger.info("Teacher output cache: %s", self.teacher_cache_stats)
            self.teacher_cache.clear()  # frees the memory; the counts stay in teacher_cache_stats
        pruned.config.pruning_report.update(
            variant=self.args.variant,
            gate_groups=list(self._gates.groups),
            data_fraction=self.args.effective_data_fraction,
            finetune_data_fraction=self.args.effective_finetune_data_fraction,
            compression_seconds=self.compression_seconds,
            gate_init=self.args.gate_init,
            gate_phase_dropout=self.args.gate_phase_dropout,
            finetune_epochs=epochs,
            finetune_learning_rate=self.args.effective_finetune_learning_rate,
            finetune_dropout=self.args.finetune_dropout,
            finetune_freeze_embeddings=self.args.finetune_freeze_embeddings,
        )
        self.pruned_model = pruned
        self.save_pruned(self.args.output_dir)
        return output

    def seed_gates_from_taylor(self) -> dict[str, torch.Tensor]:
        """``gate_init='taylor'``: spread the gates' initial log-alpha by a first-order Taylor score summed over
        ``gate_init_batches`` training batches (:meth:`VIBGates.spread_by_importance`). Under DDP every process
        scores its own batches; the wrapper then broadcasts rank 0's gates, so all start alike."""
        started = time.perf_counter()
        model = self.accelerator.unwrap_model(self.model)
        scores = gate_taylor_scores(model, self._gates, self.get_train_dataloader(), self.args.gate_init_batches)
        self._gates.spread_by_importance(scores, self.args.gate_init_spread)
        logger.info("Gates seeded from a Taylor score over %d batches (%.1f s; log-alpha spread %.1f over %s)",
                    self.args.gate_init_batches, time.perf_counter() - started, self.args.gate_init_spread,
                    ", ".join(scores))
        return scores

    def materialize(self) -> PreTrainedModel:
        """The pruned model: the fine-tuned one after ``train()``, else the current gates materialized."""
        if self.pruned_model is not None:
            return self.pruned_model
        model = self.accelerator.unwrap_model(self.model)
        pruned = materialize_model(
            model, budget=self.budget, round_to=self.args.round_to, fill_to_budget=self.args.fill_to_budget,
            uniform=self.args.uniform,
        )
        report = pruned.config.pruning_report
        logger.info(
            "Pruned to %s: layer sparsity %.1f%%, %s -> %s parameters",
            self.budget.description, 100 * report["layer_sparsity"],
            f"{report['params_dense']['total']:,}", f"{report['params_pruned']['total']:,}",
        )
        return pruned

    def _finetune(self, pruned: PreTrainedModel, epochs: float) -> PreTrainedModel:
        args = dataclasses.replace(
            self.args,
            output_dir=os.path.join(self.args.output_dir, "finetune"),
            num_train_epochs=epochs,
            max_steps=-1,
            learning_rate=self.args.effective_finetune_learning_rate,
            per_device_train_batch_size=self.args.finetune_batch_size or self.args.per_device_train_batch_size,
            save_strategy="no",
            load_best_model_at_end=False,
        )
        hidden_index = torch.as_tensor(pruned.config.pruning_report["hidden_index"], device=self.args.device)
        embeddings = pruned.get_input_embeddings() if self.args.finetune_freeze_embeddings else None
        if embeddings is not None:
            embeddings.weight.requires_grad_(False)  # out of the optimizer: Trainer only takes trainable parameters
        trainer = PrunedModelTrainer(
            model=pruned,
            teacher_model=self.teacher_model,
            hidden_index=hidden_index,
            args=args,
            train_dataset=self._finetune_dataset,
            eval_dataset=self.eval_dataset,
            data_collator=self.data_collator,
            processing_class=self.processing_class,
            compute_metrics=self.compute_metrics,
        )
        if self.teacher_cache is not None:
            trainer.teacher_cache = self.teacher_cache  # the fine-tune revisits the pruning phase's examples
        try:
            trainer.train()
        finally:
            if embeddings is not None:
                embeddings.weight.requires_grad_(True)  # the model trains as a whole again, even after a failure
        self.finetune_trainer = trainer
        # every process must be past its end-of-training checkpoint scan of the folder before it goes
        trainer.accelerator.wait_for_everyone()
        if self.args.should_save and os.path.isdir(args.output_dir) and not os.listdir(args.output_dir):
            os.rmdir(args.output_dir)  # nothing was checkpointed there
        return trainer.accelerator.unwrap_model(trainer.model)

    def save_pruned(self, output_dir: str) -> None:
        """Save the pruned model (safetensors) and the tokenizer, on the main process only."""
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        self.pruned_model.save_pretrained(output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        logger.info("Saved the pruned model to %s", output_dir)


class PrunedModelTrainer(DistillationMixin, Trainer):
    """Fine-tunes a materialized model with the task loss and the same distillation from the teacher."""

    def __init__(self, model=None, teacher_model=None, hidden_index: torch.Tensor | None = None, args=None, **kwargs):
        super().__init__(model=model, args=args, **kwargs)
        self._prepare_teacher(teacher_model)
        self.hidden_index = hidden_index
        config = model.config
        n = config.num_hidden_layers
        heads = getattr(config, "num_attention_heads_per_layer", None) or [1] * n  # native uniform configs: all alive
        widths = getattr(config, "intermediate_size_per_layer", None) or [1] * n
        self.alive = [i for i in range(n) if heads[i] > 0 or widths[i] > 0] or list(range(n))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training and not getattr(self.args, "finetune_dropout", True):
            backbone_dropout_off(model)
        if self.teacher_model is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        need_hidden = self.args.distill_hidden_weight > 0
        outputs = model(**inputs, output_hidden_states=need_hidden, **_no_cache(model))
        terms = {"task": self.args.task_loss_weight * outputs.loss} if outputs.loss is not None else {}
        terms.update(
            self.distillation_terms(
                outputs, self._teacher_outputs(inputs), inputs.get("attention_mask"), self.hidden_index, self.alive
            )
        )
        loss = sum(terms.values())
        return (loss, _without_hidden_states(outputs)) if return_outputs else loss


__all__ = ["VTransTrainer", "PrunedModelTrainer", "subsample", "check_teacher"]
