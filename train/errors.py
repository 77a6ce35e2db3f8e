"""The one error type the training code raises for anything a user can get wrong."""

from jaxspec.errors import JaxspecError


class TrainingError(JaxspecError):
    """Missing or bad data, a run that does not match its checkpoints, a corrupt checkpoint, bad flags."""
