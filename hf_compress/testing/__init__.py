"""Test helpers shipped with hf-compress: a local Hub-compatible server."""

from .hub import HubStore, LocalHub

__all__ = ["HubStore", "LocalHub"]
