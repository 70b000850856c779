"""Test helpers shipped with hf-compress: a local Hub-compatible server."""

from .hub import Fault, HubStore, LocalHub

__all__ = ["Fault", "HubStore", "LocalHub"]
