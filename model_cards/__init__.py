"""Model-card templates and their renderer."""

from .render import render_vtrans_card

__all__ = ["render_vtrans_card"]
