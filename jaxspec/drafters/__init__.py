"""Drafters: one file per decoding method."""

from jaxspec.drafters.autoregressive import Autoregressive
from jaxspec.drafters.base import Context, Draft, Drafter

__all__ = ["Autoregressive", "Context", "Draft", "Drafter"]
