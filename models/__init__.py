"""Flax backbones and their static-shape caches. Imports nothing from jaxspec or train."""

from models.config import ARCHITECTURES, DecoderConfig, ModelConfigError, RopeConfig, from_hf_config
from models.decoder import CausalLM, DecoderLM
from models.kv_cache import KVCache
from models.protocol import ModelOutput, Start, decoder_only_start
from models.registry import build_model, supported_architectures
from models.t5 import T5Model
from models.t5_config import T5Config
from models.t5gemma import T5Gemma, T5GemmaConfig

__all__ = [
    "ARCHITECTURES",
    "CausalLM",
    "DecoderConfig",
    "DecoderLM",
    "KVCache",
    "ModelConfigError",
    "ModelOutput",
    "RopeConfig",
    "Start",
    "T5Config",
    "T5Gemma",
    "T5GemmaConfig",
    "T5Model",
    "build_model",
    "decoder_only_start",
    "from_hf_config",
    "supported_architectures",
]
