"""Errors raised by the models package (all are ValueErrors with a message that says what to do)."""

from __future__ import annotations


class ModelInputError(ValueError):
    """A call with inputs the networks cannot take (wrong shapes, a window too long, ...)."""


class WindowTooLongError(ModelInputError):
    """More frames in one call than the motion modules' positional encoding covers."""


class CheckpointError(ValueError):
    """A weight file that cannot be loaded: missing, unsafe, of the wrong kind or not matching the network."""
