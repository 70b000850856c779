"""Model-card templates, their renderer and offline validation, and the attention-probing report."""

from .render import render_vtrans_card
from .validate import CardValidationError, validate_card

__all__ = ["CardValidationError", "render_vtrans_card", "validate_card"]
