"""config.json → the model object that runs it: one table over every family.

Decoder-only architectures share one configurable model (models/decoder.py);
each encoder-decoder family has its own module and registers its builder
here. A config naming anything else is a ModelConfigError that lists what is
supported.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from models.config import ARCHITECTURES, ModelConfigError, from_hf_config
from models.decoder import CausalLM
from models.t5 import T5Model
from models.t5_config import T5_ARCHITECTURES, t5_config_from_hf
from models import block_config, hat_config, t5gemma
from models.block_transformer import BlockTransformer
from models.hat import HAT


def _decoder_only(cfg: Mapping[str, Any], dtype: str) -> CausalLM:
    return CausalLM(from_hf_config(cfg), dtype)


def _t5(cfg: Mapping[str, Any], dtype: str) -> T5Model:
    return T5Model(t5_config_from_hf(cfg), dtype)


def _block(cfg: Mapping[str, Any], dtype: str) -> BlockTransformer:
    return BlockTransformer(block_config.block_config_from_hf(cfg), dtype)


def _hat(cfg: Mapping[str, Any], dtype: str) -> HAT:
    return HAT(hat_config.hat_config_from_hf(cfg), dtype)


# Hugging Face architecture → (model_type, builder(config dict, dtype) -> model object).
BUILDERS: dict[str, tuple[str, Callable[[Mapping[str, Any], str], Any]]] = {
    arch: (model_type, _decoder_only) for arch, model_type in ARCHITECTURES.items()
}
BUILDERS.update({arch: (model_type, _t5) for arch, model_type in T5_ARCHITECTURES.items()})
BUILDERS[t5gemma.ARCHITECTURE] = ("t5gemma", t5gemma.build)
BUILDERS[block_config.ARCHITECTURE] = (block_config.MODEL_TYPE, _block)
BUILDERS[hat_config.ARCHITECTURE] = (hat_config.MODEL_TYPE, _hat)


def supported_architectures() -> list[str]:
    return sorted(BUILDERS)


def build_model(cfg: Mapping[str, Any], dtype: str = "float32"):
    """The model object for a Hugging Face config dictionary, computing in `dtype`."""
    archs = cfg.get("architectures") or []
    by_type = {model_type: arch for arch, (model_type, _) in BUILDERS.items()}
    if archs:
        arch = archs[0]
        if arch not in BUILDERS:
            raise ModelConfigError(f"unknown architecture {arch!r} (supported: {', '.join(supported_architectures())})")
    elif cfg.get("model_type") in by_type:
        arch = by_type[cfg["model_type"]]
    else:
        raise ModelConfigError(f"unknown model_type {cfg.get('model_type')!r} (supported: {', '.join(sorted(by_type))})")
    return BUILDERS[arch][1](cfg, dtype)
