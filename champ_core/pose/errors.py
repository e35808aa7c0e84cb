"""Errors of the pose package (each message says what to do)."""

from __future__ import annotations


class PoseModelError(ValueError):
    """Pose model files that are missing, unreadable or not the expected network."""


class PoseDetectionError(ValueError):
    """Images the detector cannot use, or nobody found where a person is needed."""
