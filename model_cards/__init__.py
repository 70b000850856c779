"""Model-card templates, their renderer and offline validation, and the attention-probing report."""

from .ramen_card import render_ramen_card
from .render import render_vtrans_card
from .validate import CardValidationError, validate_card

__all__ = ["CardValidationError", "render_ramen_card", "render_vtrans_card", "validate_card"]
