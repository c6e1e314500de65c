"""The velocity-divergence probe: run Large's reference trajectory and, at probe steps, Small on the
*same* state; record how far their velocities disagree.

Per step and sample: ``rel_l2 = ||v_L - v_S|| / ||v_L||``, ``cosine = 1 - cos(v_L, v_S)`` and the
step-weighted ``weighted = |sigma_next - sigma| * ||v_L - v_S|| / ||x_final||`` (the error a swap would
inject into the end result, to first order). Reference states are kept so calibration can restart
blended runs from them instead of recomputing the shared Large prefix.

Example:
    >>> import torch
    >>> from adaptive import ModelPair
    >>> from adaptive.probing import probe
    >>> pair = ModelPair(lambda x, s: x, lambda x, s: 0.9 * x)
    >>> curve = probe(pair, [{}], num_steps=5, seeds=[0, 1], shape=(4,))
    >>> curve.rel_l2.shape, round(float(curve.mean()[0]), 3)
    ((5, 2), 0.1)
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from adaptive.errors import CalibrationError, NonFiniteVelocityError
from adaptive.pair import ModelPair
from adaptive.samplers import Sampler, path, sampler_for
from adaptive.solvers import trajectory as euler_states


@dataclass(frozen=True)
class DivergenceCurve:
    """Divergence of Small from Large along Large's trajectory.

    ``sigmas[k]`` is the starting sigma of probed step ``steps[k]``; ``rel_l2``, ``cosine`` and
    ``weighted`` are ``(probed steps, samples)``; ``grid`` is the full sigma grid.
    """

    grid: np.ndarray
    steps: np.ndarray
    rel_l2: np.ndarray
    cosine: np.ndarray
    weighted: np.ndarray
    cost: dict[str, float] = field(default_factory=dict)

    @property
    def sigmas(self) -> np.ndarray:
        return self.grid[self.steps]

    @property
    def num_steps(self) -> int:
        return len(self.grid) - 1

    def mean(self, kind: str = "rel_l2") -> np.ndarray:
        """The mean over samples of ``kind`` in {"rel_l2", "cosine", "weighted"}, one value per probed step."""
        if kind not in ("rel_l2", "cosine", "weighted"):
            raise ValueError(f"kind must be rel_l2, cosine or weighted, got {kind!r}")
        return getattr(self, kind).mean(axis=1)

    def to_dict(self) -> dict[str, Any]:
        return {"grid": self.grid.tolist(), "steps": self.steps.tolist(), "rel_l2": self.rel_l2.tolist(),
                "cosine": self.cosine.tolist(), "weighted": self.weighted.tolist(), "cost": dict(self.cost)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DivergenceCurve:
        return cls(np.asarray(data["grid"], float), np.asarray(data["steps"], int), np.asarray(data["rel_l2"], float),
                   np.asarray(data["cosine"], float), np.asarray(data["weighted"], float), dict(data.get("cost", {})))


@dataclass
class Reference:
    """Large's trajectory for the calibration batch: ``states[i]`` is x at ``grid[i]`` (on the
    device), ``final`` the Large-only result; ``cond`` the batched conditioning. ``velocities[i]``
    is Large's velocity at step ``i``, kept when the ``sampler`` has a history to replay (multistep
    solvers; None for Euler)."""

    grid: list[float]
    states: list[torch.Tensor]
    cond: dict[str, Any]
    velocities: list[torch.Tensor] | None = None
    sampler: Sampler | None = None

    @property
    def final(self) -> torch.Tensor:
        return self.states[-1]


def batch_conditions(conds: Sequence[Mapping[str, Any]], seeds: Sequence[int], shape: Sequence[int],
                     device: torch.device | str = "cpu") -> tuple[torch.Tensor, dict[str, Any]]:
    """Noise and conditioning for every (cond, seed) pair, cond-major: sample ``c * len(seeds) + s``.

    The noise of seed ``s`` is ``torch.randn(shape, generator=torch.Generator().manual_seed(s))``.
    """
    if isinstance(conds, Mapping) or not isinstance(conds, Sequence) or not conds or \
            not all(isinstance(c, Mapping) for c in conds):
        got = (f"a list of {type(conds[0]).__name__}" if isinstance(conds, Sequence) and conds
               else repr(conds) if isinstance(conds, Sequence) else type(conds).__name__)
        raise CalibrationError("conds must be a non-empty list of dicts of keyword arguments for the models, one per "
                               f"prompt, e.g. [{{'encoder_hidden_states': emb}}]; got {got}")
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (Sequence, np.ndarray)) or len(seeds) == 0 or \
            not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in seeds):
        raise CalibrationError(f"seeds must be a non-empty list of integer noise seeds, e.g. seeds=[0, 1, 2, 3], "
                               f"got {seeds!r}")
    keys = set(conds[0])
    if any(set(c) != keys for c in conds):
        raise CalibrationError("every cond must have the same keys; got " + str([sorted(c) for c in conds]))
    noise = torch.stack([torch.randn(tuple(shape), generator=torch.Generator().manual_seed(int(s)))
                         for _ in conds for s in seeds]).to(device)
    batched: dict[str, Any] = {}
    for key in keys:
        values = [c[key] for c in conds]
        if isinstance(values[0], torch.Tensor):
            # (L, D) is one prompt's sequence (a batch row is added); (B, L, D) with B > 1 is several prompts
            several = [i for i, v in enumerate(values) if v.ndim > 2 and v.shape[0] > 1]
            if several:
                raise CalibrationError(f"cond {key!r} of prompt {several[0]} has {values[several[0]].shape[0]} rows; "
                                       "give one dict per prompt, each tensor with one row (batch 1): the seeds make "
                                       "the batch")
            rows = [v if v.ndim and v.shape[0] == 1 else v.unsqueeze(0) for v in values]
            batched[key] = torch.cat([r for r in rows for _ in seeds]).to(device)
        else:
            batched[key] = values[0]
    return noise, batched


def latent_shape(pair: ModelPair, shape: Sequence[int] | None) -> tuple[int, ...]:
    """The per-sample latent shape: ``shape`` if given, else the pair's ``sample_shape``."""
    if shape is not None:
        return tuple(int(s) for s in shape)
    if pair.sample_shape is None:
        raise CalibrationError("give shape= (the per-sample latent shape, without batch) or build the pair "
                               "with sample_shape=")
    return pair.sample_shape


def model_device(pair: ModelPair) -> torch.device:
    """The device of the pair's first model with weights (CPU for plain functions)."""
    for module in pair.modules().values():
        tensor = None if module is None else next(iter([*module.parameters(), *module.buffers()]), None)
        if tensor is not None:
            return tensor.device
    return torch.device("cpu")  # plain functions, or modules without weights


def _divergence(v_large: torch.Tensor, v_small: torch.Tensor, dt: float, scale: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    diff = (v_large - v_small).flatten(1).float().norm(dim=1)
    large = v_large.flatten(1).float()
    rel = diff / large.norm(dim=1).clamp_min(1e-12)
    cos = 1 - torch.nn.functional.cosine_similarity(large, v_small.flatten(1).float(), dim=1, eps=1e-12)
    return rel, cos, abs(dt) * diff / scale


def _check_finite_curve(rel_l2: np.ndarray, steps: list[int]) -> None:
    # The curve is read back once anyway, so this check costs nothing on the device.
    bad = ~np.isfinite(rel_l2).all(axis=1)
    if bad.any():
        step = steps[int(np.argmax(bad))]
        raise NonFiniteVelocityError(f"Large or Small returned NaN/Inf at probe step {step}; check dtypes (fp16 "
                                     "overflows: use bf16 or fp32) and the conditioning")


def trajectory(model: Any, noise: torch.Tensor, grid: Sequence[float], cond: Mapping[str, Any]) -> list[torch.Tensor]:
    """``x`` at every sigma of ``grid`` when ``model`` alone samples from ``noise`` (Euler steps:
    :func:`adaptive.solvers.trajectory`)."""
    return euler_states(model, noise, grid, **cond)


@torch.no_grad()
def run_probe(pair: ModelPair, conds: Sequence[Mapping[str, Any]], num_steps: int, seeds: Sequence[int],
              shift: float = 1.0, shape: Sequence[int] | None = None, probe_steps: Sequence[int] | None = None,
              progress: bool = True, sampler: Any = None) -> tuple[DivergenceCurve, Reference]:
    """The probe, returning the curve and the cached Large trajectory (for calibration), on
    ``sampler``'s grid and steps (:func:`adaptive.samplers.sampler_for`; default Euler at ``shift``)."""
    solver = sampler_for(sampler, shift)
    grid = solver.grid(num_steps)
    steps = list(range(num_steps)) if probe_steps is None else sorted(set(int(i) for i in probe_steps))
    if not steps or steps[0] < 0 or steps[-1] >= num_steps:
        raise CalibrationError(f"probe_steps must be step indices in [0, {num_steps - 1}]")
    noise, cond = batch_conditions(conds, seeds, latent_shape(pair, shape), model_device(pair))
    pair.check(noise, **cond)
    v_large_at: dict[int, torch.Tensor] = {}
    v_small_at: dict[int, torch.Tensor] = {}
    probed = set(steps)
    with tqdm(total=num_steps, desc="probe", disable=not progress, leave=False) as bar:

        def small_beside(step: dict[str, Any]) -> None:  # Small on Large's state, before Large's step
            if step["i"] in probed:
                v_large_at[step["i"]] = step["v"]
                v_small_at[step["i"]] = pair.small(step["x"], step["sigma"], **cond)
            bar.update()

        run = solver.run(num_steps)
        states, velocities = path(pair.large, noise, run, 0, num_steps, small_beside,
                                  keep_velocities=not run.stateless, **cond)
    x = states[-1]
    scale = x.flatten(1).float().norm(dim=1).clamp_min(1e-12)
    rows = [_divergence(v_large_at[i], v_small_at[i], grid[i + 1] - grid[i], scale) for i in steps]
    stack = [torch.stack([r[k] for r in rows]).cpu().numpy().astype(float) for k in range(3)]
    _check_finite_curve(stack[0], steps)
    cost = {"large_calls": float(num_steps), "small_calls": float(len(steps)), "samples": float(len(noise))}
    curve = DivergenceCurve(np.asarray(grid, float), np.asarray(steps, int), stack[0], stack[1], stack[2], cost=cost)
    return curve, Reference(grid, states, cond, velocities or None, solver)


def probe(pair: ModelPair, conds: Sequence[Mapping[str, Any]], num_steps: int, seeds: Sequence[int],
          shift: float = 1.0, shape: Sequence[int] | None = None, probe_steps: Sequence[int] | None = None,
          progress: bool = False, sampler: Any = None) -> DivergenceCurve:
    """Velocity divergence of ``pair.small`` from ``pair.large`` along Large's trajectory on
    ``sampler`` (default Euler on ``sigmas(num_steps, shift)``; ``"unipc"``, ``"dpm++"`` or a diffusers
    flow scheduler: :mod:`adaptive.samplers`).

    ``conds`` are dicts of keyword arguments for the models (one per prompt); every cond runs with
    every seed. Costs ``num_steps`` Large calls plus one Small call per probe step, all batched.

    Example:
        >>> pair = ModelPair(lambda x, s: x, lambda x, s: 0.8 * x)
        >>> probe(pair, [{}], num_steps=4, seeds=[0], shape=(3,)).mean().round(3).tolist()
        [0.2, 0.2, 0.2, 0.2]
    """
    return run_probe(pair, conds, num_steps, seeds, shift, shape, probe_steps, progress, sampler)[0]
