"""Post-pruning recovery of a pruned causal LM with LoRA (peft), distilled from the dense teacher, then merged.

Why: pruning costs perplexity, and fine-tuning every weight of a 7B model after pruning needs the memory the
pruning was meant to save. TVA-Prune (see ``shared/papers/vtrans.md``) instead trains a LoRA adapter on the
pruned model with the LM loss, a logits KL to the dense model (T = 2, weight 0.01) and hidden-state
distillation (weight 0.9) on the kept hidden dims. The adapter is saved alone (small, reviewable, loadable
with ``PeftModel.from_pretrained(pruned_base, adapter_dir)``) and then merged, so the shipped model is the
same plain class with the same shapes as the pruned one: no peft at inference, and the loading story
(``AutoModelForCausalLM.from_pretrained`` after ``import hf_compress``, or stock transformers for a uniform
native model) is unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers import PreTrainedModel, TrainingArguments
from transformers.pytorch_utils import Conv1D

from trainers import LoRARecoveryArguments, PrunedModelTrainer

from .adapters import UnsupportedModelError, get_adapter
from .configuration_pruned_decoder import PrunedDecoderConfig
from .decoder_adapters import LLAMA_LAYOUT, DecoderAdapter

logger = logging.getLogger(__name__)

#: adapter fields naming a layer's projections, in module order (GPT-2 has a fused qkv instead of q/k/v)
PROJECTION_FIELDS = ("qkv_proj", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _decoder_structure(model: nn.Module) -> DecoderAdapter:
    """The structure map of ``model``: hf-compress's pruned decoder always uses the LLaMA layout's module names
    (both styles; GPT-2 style just has no gate_proj), anything else goes through the adapter registry."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) == PrunedDecoderConfig.model_type:
        return LLAMA_LAYOUT
    try:
        adapter = get_adapter(model)
    except UnsupportedModelError as error:
        raise UnsupportedModelError(
            f"Cannot find LoRA target modules in {type(model).__name__}: {error} Pass "
            f"LoraConfig(target_modules=[...]) to recover_with_lora yourself."
        ) from error
    if not isinstance(adapter, DecoderAdapter):
        raise UnsupportedModelError(
            f"LoRA recovery targets causal LMs, but {type(model).__name__} is an encoder; fine-tune pruned encoders "
            f"with PrunedModelTrainer (or pass LoraConfig(target_modules=[...]) to recover_with_lora)."
        )
    return adapter


def lora_target_modules(model: nn.Module) -> list[str]:
    """Full names of the attention and FFN projections ``model`` has, layer by layer.

    Found through the model's structure map, not by name patterns, so layers whose attention or FFN was removed
    by pruning contribute nothing and a name shared by two modules (GPT-2's ``attn.c_proj`` / ``mlp.c_proj``)
    is never ambiguous. Works for hf-compress's ``PrunedDecoderForCausalLM``, native uniform LLaMA / Mistral /
    Qwen2 exports, dense LLaMA-layout models and GPT-2. A ``PeftModel`` is looked through (names are relative to
    the model peft wraps, which is what ``LoraConfig.target_modules`` is matched against).
    """
    if isinstance(model, PeftModel):
        model = model.get_base_model()
    adapter = _decoder_structure(model)
    try:
        layers = adapter.base_model(model).get_submodule(adapter.layers)
    except AttributeError as error:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no decoder layers at '{adapter.base_prefix}.{adapter.layers}'; pass "
            f"LoraConfig(target_modules=[...]) to recover_with_lora yourself."
        ) from error
    names = {id(module): name for name, module in model.named_modules()}
    targets: list[str] = []
    for layer in layers:
        for field_name in PROJECTION_FIELDS:
            path = getattr(adapter, field_name)
            if path is None:
                continue
            try:
                module = layer.get_submodule(path)
            except AttributeError:  # the sub-layer holding it was removed by pruning (self_attn / mlp is None)
                continue
            if isinstance(module, (nn.Linear, Conv1D)):
                targets.append(names[id(module)])
    if not targets:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no attention or FFN projections (nn.Linear / Conv1D) to adapt; every "
            f"sub-layer may have been pruned away. Pass LoraConfig(target_modules=[...]) to recover_with_lora."
        )
    return targets


def default_lora_config(model: nn.Module, args: TrainingArguments | None = None) -> LoraConfig:
    """LoRA on every projection of ``model`` with the rank / alpha / dropout of ``args`` (TVA-Prune-style r=8,
    alpha=16, dropout 0.05 by default); GPT-2's Conv1D weights are stored [in, out], hence ``fan_in_fan_out``."""
    targets = getattr(args, "lora_target_modules", None) or lora_target_modules(model)
    conv1d = any(isinstance(model.get_submodule(name), Conv1D) for name in targets if _has_submodule(model, name))
    return LoraConfig(
        r=getattr(args, "lora_r", 8),
        lora_alpha=getattr(args, "lora_alpha", 16),
        lora_dropout=getattr(args, "lora_dropout", 0.05),
        target_modules=targets,
        fan_in_fan_out=conv1d,
        task_type="CAUSAL_LM",
    )


def _has_submodule(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def _width(model: nn.Module) -> int:
    return model.get_input_embeddings().weight.shape[-1]


def distillation_hidden_index(
    pruned: PreTrainedModel, teacher: PreTrainedModel | None, args: LoRARecoveryArguments
) -> torch.Tensor | None:
    """The teacher's hidden dims the pruned model kept (``config.pruning_report["hidden_index"]``), or None when
    hidden distillation is off or both widths are equal; a clear error when the teacher cannot be compared."""
    if teacher is None:
        return None
    s_vocab, t_vocab = pruned.get_output_embeddings().weight.shape[0], teacher.get_output_embeddings().weight.shape[0]
    if args.distill_logits_weight > 0 and s_vocab != t_vocab:
        raise ValueError(
            f"Logits distillation needs the same vocabulary (teacher {t_vocab}, pruned {s_vocab}); use the dense "
            f"model this one was pruned from as teacher, or set distill_logits_weight=0."
        )
    if args.distill_hidden_weight <= 0:
        return None
    report = getattr(pruned.config, "pruning_report", None) or {}
    index = report.get("hidden_index")
    s_width, t_width = _width(pruned), _width(teacher)
    if index is None:
        if s_width == t_width:
            return None
        raise ValueError(
            f"Hidden-state distillation needs to know which of the teacher's {t_width} hidden dims the student's "
            f"{s_width} are, but the student's config has no pruning_report['hidden_index']. Use a model "
            f"materialized by hf-compress, or set distill_hidden_weight=0."
        )
    if len(index) != s_width or max(index) >= t_width:
        raise ValueError(
            f"pruning_report['hidden_index'] ({len(index)} dims, max {max(index)}) does not fit student width "
            f"{s_width} / teacher width {t_width}: the teacher must be the dense model this one was pruned from."
        )
    return torch.as_tensor(index, dtype=torch.long, device=args.device)


def recover_with_lora(
    pruned: PreTrainedModel,
    teacher: PreTrainedModel | None,
    train_dataset,
    args: LoRARecoveryArguments,
    lora_config: LoraConfig | None = None,
    eval_dataset=None,
    data_collator=None,
    processing_class=None,
) -> tuple[PreTrainedModel, PrunedModelTrainer]:
    """Train a LoRA adapter on ``pruned`` (distilled from the dense ``teacher``), save it, merge it.

    Returns ``(merged_model, trainer)``: ``merged_model`` is ``pruned`` itself with the LoRA update folded into
    its weights (peft injects into and unloads from the model in place: same object, class and shapes, no peft
    modules left), in eval mode. The adapter alone is saved first to ``args.adapter_dir`` (default
    ``output_dir/adapter``). ``trainer`` is the ``PrunedModelTrainer`` that trained it (log history, state);
    its ``model`` is set to the merged model, so ``trainer.evaluate()`` scores what is returned.

    ``teacher=None`` trains with the LM loss alone. The default ``LoraConfig`` adapts every attention / FFN
    projection the pruned model kept (:func:`lora_target_modules`); pass ``lora_config`` to choose otherwise.
    """
    if not isinstance(args, LoRARecoveryArguments):
        raise TypeError(
            f"recover_with_lora needs args=LoRARecoveryArguments(...) (it holds the LoRA and distillation settings), "
            f"got {type(args).__name__}."
        )
    if isinstance(pruned, PeftModel):
        raise TypeError(
            "recover_with_lora wraps the model with peft itself; pass the plain pruned model (e.g. "
            "peft_model.get_base_model() or the materialized model), not a PeftModel."
        )
    hidden_index = distillation_hidden_index(pruned, teacher, args)
    lora_config = lora_config or default_lora_config(pruned, args)
    if args.gradient_checkpointing:  # frozen embeddings: checkpointed layers still need an input with grad
        pruned.enable_input_require_grads()
    peft_model = get_peft_model(pruned, lora_config)
    trainer = PrunedModelTrainer(
        model=peft_model,  # its .config is the pruned model's (peft forwards attributes): alive layers are read there
        teacher_model=teacher,
        hidden_index=hidden_index,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=data_collator,
        processing_class=processing_class,
    )
    trainer.train()
    trained: PeftModel = trainer.accelerator.unwrap_model(trainer.model)
    adapter_dir = args.resolved_adapter_dir
    if args.should_save:
        trained.save_pretrained(adapter_dir)
        logger.info("Saved the LoRA adapter to %s", adapter_dir)
    adapted = sum(isinstance(module, LoraLayer) for module in trained.modules())
    merged = trained.merge_and_unload()
    merged.eval()
    _record(merged, lora_config, trainer, adapter_dir, adapted)
    trainer.model = trainer.model_wrapped = merged
    return merged, trainer


def _record(
    merged: PreTrainedModel, lora_config: LoraConfig, trainer: PrunedModelTrainer, adapter_dir: str, adapted: int
) -> None:
    """Note the recovery in ``config.pruning_report`` (model cards and benchmarks read it from there)."""
    report: dict[str, Any] | None = getattr(merged.config, "pruning_report", None)
    if report is None:
        return
    args = trainer.args
    report["recovery"] = {
        "method": "lora",
        "r": lora_config.r,
        "lora_alpha": lora_config.lora_alpha,
        "adapted_modules": adapted,
        "steps": trainer.state.global_step,
        "task_loss_weight": args.task_loss_weight,
        "distill_logits_weight": args.distill_logits_weight if trainer.teacher_model is not None else 0.0,
        "distill_hidden_weight": args.distill_hidden_weight if trainer.teacher_model is not None else 0.0,
        "distill_temperature": args.distill_temperature,
        "adapter_dir": adapter_dir,
    }


__all__ = ["default_lora_config", "distillation_hidden_index", "lora_target_modules", "recover_with_lora"]
