"""Named exceptions. Each message says what is wrong and how to fix it."""

from __future__ import annotations


class AdaptiveError(Exception):
    """Base class of every error this library raises on purpose."""


class ScheduleError(AdaptiveError, ValueError):
    """A schedule is malformed (gaps, overlaps, sigma outside [0, 1]) or names a missing model."""


class SigmaGridError(AdaptiveError, ValueError):
    """A sigma grid is not a descending sequence from <= 1 down to 0."""


class PairMismatchError(AdaptiveError, ValueError):
    """The models of a pair disagree on latent shape, channels or conditioning."""


class NonFiniteVelocityError(AdaptiveError, FloatingPointError):
    """A model returned NaN or Inf; the message names the model and the step."""


class CurveError(AdaptiveError, ValueError):
    """A divergence curve is empty, non-finite or too short for the detector."""


class ProfileError(AdaptiveError, ValueError):
    """A profile file is corrupt, of another schema version, or for another pair or sampler."""


class CalibrationError(AdaptiveError, ValueError):
    """Calibration inputs are unusable (no conditions, no seeds, bad quality target)."""


class StorageError(CalibrationError):
    """The Optuna storage or the profile store cannot be opened or written (missing folder, driver, rights)."""
