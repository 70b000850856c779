"""Default PEFT target modules for the pruned model types, so ``LoraConfig(task_type=...)`` works on them.

peft picks default ``target_modules`` from tables keyed by ``config.model_type``; ``vtrans_encoder`` and
``vtrans_decoder`` are not in them, so without this peft raises "Please specify `target_modules`". Both pruned
classes name their projections like LLaMA (``q_proj`` / ``k_proj`` / ``v_proj`` / ``o_proj``, ``up_proj`` /
``down_proj``, and ``gate_proj`` in gated decoders), so each table gets LLaMA's entry for them whenever every
module that entry names exists in the pruned class (LoRA: ``q_proj`` and ``v_proj``). Explicit
``target_modules`` always work and are never changed.
"""

from __future__ import annotations

# leaf module names of the pruned classes (see modeling_pruned_encoder.py / modeling_pruned_decoder.py)
_MODULE_NAMES = {
    "vtrans_encoder": {"q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "attention_norm", "mlp_norm"},
    "vtrans_decoder": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                       "attention_norm", "mlp_norm", "norm"},
}


def register_peft_target_modules() -> list[str]:
    """Add the pruned model types to peft's default-target tables; returns the tables changed (no-op without
    peft, and entries already there are kept)."""
    try:
        from peft.utils import constants
    except ImportError:
        return []
    changed = []
    for name in dir(constants):
        table = getattr(constants, name)
        if not (name.startswith("TRANSFORMERS_MODELS_TO_") and isinstance(table, dict)):
            continue
        llama = table.get("llama")
        if not isinstance(llama, (list, tuple, set)) or not all(isinstance(m, str) for m in llama):
            continue
        for model_type, modules in _MODULE_NAMES.items():
            if model_type not in table and set(llama) <= modules:
                table[model_type] = list(llama)
                changed.append(name)
    return sorted(set(changed))
