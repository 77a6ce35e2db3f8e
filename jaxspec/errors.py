"""Typed errors for everything a user can get wrong. The CLI prints their message as one line and exits 2."""


class JaxspecError(Exception):
    """Base class of every user-facing jaxspec error."""


class CheckpointError(JaxspecError):
    """A checkpoint directory is missing, incomplete, corrupted or does not match its config."""


class UnsupportedModelError(JaxspecError):
    """The checkpoint's architecture or one of its options is not implemented."""


class InputError(JaxspecError):
    """Bad prompts or generation settings: prompt too long, bad sampling values, unknown method."""
