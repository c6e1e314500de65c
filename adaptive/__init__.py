"""adaptive: run a large flow-matching model only where its capacity matters.

FlowBlending (Large -> Small -> Large) with the stage boundaries found automatically.
The one model contract is ``model(x, sigma, **cond) -> velocity``; see the README.
"""

from adaptive.calibration import calibrate
from adaptive.controller import ControllerConfig, Decisions
from adaptive.denoisers import Denoiser, FunctionDenoiser, GuidedDenoiser, TransformerDenoiser, as_denoiser
from adaptive.errors import (
    AdaptiveError,
    CalibrationError,
    CurveError,
    NonFiniteVelocityError,
    PairMismatchError,
    ProfileError,
    ScheduleError,
    SigmaGridError,
    StorageError,
)
from adaptive.detect import Boundaries, ChangePointDetector
from adaptive.metering import Meter, count_flops, flops_per_row
from adaptive.metrics import FeatureSimilarity, LatentSimilarity, Metric, frechet_distance
from adaptive.pair import ModelPair
from adaptive.pool import Pool
from adaptive.pool_profiles import PoolProfile, calibrate_pool
from adaptive.probing import DivergenceCurve, probe
from adaptive.profiles import Profile, fingerprint, prompt_key, sampler_signature
from adaptive.profile_store import ProfileStore
from adaptive.samplers import Sampler
from adaptive.sampling import SAMPLERS, sample, sample_heun, shift_sigma, sigmas
from adaptive.schedule import Schedule, Stage

__version__ = "0.1.0"

__all__ = [
    "Boundaries", "ChangePointDetector", "ControllerConfig", "Decisions", "DivergenceCurve", "FeatureSimilarity", "LatentSimilarity", "Metric",
    "Profile", "ProfileStore", "calibrate", "fingerprint", "prompt_key", "frechet_distance", "probe", "sampler_signature",
    "AdaptiveError", "CalibrationError", "CurveError", "Denoiser", "FunctionDenoiser", "GuidedDenoiser", "Meter",
    "ModelPair", "NonFiniteVelocityError", "Pool", "PoolProfile", "PairMismatchError", "Sampler", "calibrate_pool", "ProfileError", "SAMPLERS", "Schedule",
    "ScheduleError", "SigmaGridError", "Stage", "StorageError", "TransformerDenoiser", "as_denoiser", "count_flops",
    "flops_per_row", "sample", "sample_heun", "shift_sigma", "sigmas", "__version__",
]
