"""Errors of the evaluation package: ValueErrors whose one-line message says what to change."""

from __future__ import annotations


class EvaluationError(ValueError):
    """Inputs that cannot be evaluated (sizes or frame counts differ, too few frames, unreadable files...)."""


class BackboneError(EvaluationError):
    """A backbone weight file that is unreadable or does not match its network."""


class MissingBackboneError(EvaluationError):
    """A metric asked for explicitly whose backbone weight file is not in the models folder."""
