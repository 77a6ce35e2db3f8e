"""Flax backbones and their static-shape caches. Imports nothing from jaxspec or train."""

from models.config import ARCHITECTURES, DecoderConfig, ModelConfigError, RopeConfig, from_hf_config
from models.decoder import CausalLM, DecoderLM, ModelOutput
from models.kv_cache import KVCache

__all__ = [
    "ARCHITECTURES",
    "CausalLM",
    "DecoderConfig",
    "DecoderLM",
    "KVCache",
    "ModelConfigError",
    "ModelOutput",
    "RopeConfig",
    "from_hf_config",
]
