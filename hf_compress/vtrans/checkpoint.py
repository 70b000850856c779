"""Strict loading for pruned checkpoints.

Per-layer shapes live in config.json; a weight that is missing or shaped differently means the checkpoint
is corrupt or belongs to another pruned model. Stock ``from_pretrained`` would silently re-initialize it,
which for a pruned model only shows up later as bad accuracy, so these models refuse to load instead.
"""

from __future__ import annotations


class PrunedCheckpointError(ValueError):
    """A pruned checkpoint whose weights disagree with its config (corrupt, truncated or mixed up)."""


class StrictLoadingMixin:
    """``from_pretrained`` that raises :class:`PrunedCheckpointError` instead of re-initializing weights.

    ``_optional_missing_prefixes`` names weights that may legitimately be absent (a freshly added task head,
    an LM head tied to the embeddings).
    """

    _optional_missing_prefixes: tuple[str, ...] = ()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        want_info = kwargs.pop("output_loading_info", False)
        fix = (
            "The checkpoint is corrupt or its config.json belongs to a different pruned model: re-save the model "
            "with save_pretrained (or re-run the pruning) so weights and config come from the same model."
        )
        try:
            model, info = super().from_pretrained(
                pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
            )
        except RuntimeError as err:
            if "mismatch" in str(err):
                raise PrunedCheckpointError(
                    f"{pretrained_model_name_or_path}: weight shapes disagree with config.json. {fix}"
                ) from err
            raise
        except Exception as err:
            if type(err).__module__.startswith("safetensors") or "deserializ" in str(err).lower():
                raise PrunedCheckpointError(
                    f"{pretrained_model_name_or_path}: model.safetensors cannot be read ({err}). {fix}"
                ) from err
            raise
        optional = cls._optional_missing_prefixes
        missing = [k for k in info.get("missing_keys", []) if not str(k).startswith(optional)]
        mismatched = [k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys", [])]
        mismatched = [k for k in mismatched if not str(k).startswith(optional)]
        if missing or mismatched:
            raise PrunedCheckpointError(
                f"{pretrained_model_name_or_path}: weights missing {sorted(missing)[:6]} or mis-shaped "
                f"{sorted(mismatched)[:6]} for the sizes in config.json. {fix}"
            )
        return (model, info) if want_info else model
