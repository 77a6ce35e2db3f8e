"""jaxspec: fast, exact LLM decoding in JAX."""

from jaxspec.errors import CheckpointError, InputError, JaxspecError, UnsupportedModelError
from jaxspec.generate import Generation, generate, score
from jaxspec.loading import LoadedModel, load, save
from jaxspec.sampling import SamplingConfig

__all__ = [
    "CheckpointError",
    "Generation",
    "InputError",
    "JaxspecError",
    "LoadedModel",
    "SamplingConfig",
    "UnsupportedModelError",
    "generate",
    "load",
    "save",
    "score",
]
