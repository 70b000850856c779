"""Model-card templates, their renderer and offline validation, and the attention-probing report."""

from .dcanas_card import render_dcanas_card
from .ramen_card import render_ramen_card
from .render import render_vtrans_card
from .validate import CardValidationError, validate_card

__all__ = ["CardValidationError", "render_dcanas_card", "render_ramen_card", "render_vtrans_card", "validate_card"]
