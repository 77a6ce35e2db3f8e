"""jaxspec: fast, exact LLM decoding in JAX.

jaxspec.generate(target, prompts, method=...) is the one call from loaded models to text
(jaxspec/api.py); jaxspec.generate_ids(model, params, ids, drafter=...) is the engine's own entry,
for callers that build drafters themselves.
"""

from jaxspec.api import Completion, apply_chat_template, generate
from jaxspec.errors import CheckpointError, InputError, JaxspecError, UnsupportedModelError
from jaxspec.generate import Generation, score
from jaxspec.generate import generate as generate_ids
from jaxspec.loading import LoadedModel, load, save
from jaxspec.method_setup import MethodOptions
from jaxspec.sampling import SamplingConfig

__all__ = [
    "CheckpointError",
    "Completion",
    "Generation",
    "InputError",
    "JaxspecError",
    "LoadedModel",
    "MethodOptions",
    "SamplingConfig",
    "UnsupportedModelError",
    "apply_chat_template",
    "generate",
    "generate_ids",
    "load",
    "save",
    "score",
]
