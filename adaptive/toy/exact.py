"""Exact flows with known answers: the plan calibration should find, found by sweeping every plan.

Data is ``N(0, diag(spectrum))`` in ``DIM`` dimensions, so Large's velocity ``E[noise - x0 | x_sigma]``
is known in closed form and linear in ``x``: every Euler step is a per-dimension affine map, and so is
every plan (Large alone on a grid of ``k`` steps, or Small on steps ``a .. b - 1`` of it). The sweep
composes those maps for every plan on every grid ``k <= n`` at once, which is exact (the same Euler
steps the sampler takes) and takes well under a second at 50 steps.

Small is Large's velocity inside a sigma band ``exact_in`` and, outside it, the exact velocity of data
whose variances are off by a factor ``exp(+-misfit)`` (a model that learnt the data less well: its error
grows with the state, direction by direction) plus a constant ``error`` on every component; FLOPs are ballast matmuls (``work``), so
Small costs ``small_work / large_work`` of Large. A :class:`Case` is one such pair with its grid and target; the
:data:`SUITE` spans step counts 12-50, shifts 1-8 and targets 0.95-0.99, with cases where a blend
pays, where only Large with fewer steps does and where nothing does.

Example:
    >>> case = Case("blend", steps=20, shift=3.0, target=0.97, exact_in=(0.25, 0.8))
    >>> best = case.optimum()
    >>> best.steps, best.is_large_only, best.cost < 0.8
    (19, False, True)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import torch

from adaptive.pair import ModelPair
from adaptive.probing import batch_conditions
from adaptive.records import MeasuredPlan
from adaptive.samplers import Sampler
from adaptive.schedule import sigmas

DIM = 64


def power_spectrum(dims: int, alpha: float, mean_variance: float = 0.25) -> torch.Tensor:
    """``lam_k`` proportional to ``k^-alpha`` (k = 1..dims), scaled to mean ``mean_variance``: detail at
    many scales, a few wide directions and many narrow ones."""
    lam = torch.arange(1, dims + 1, dtype=torch.float64) ** -float(alpha)
    return lam / lam.mean() * mean_variance


SPECTRUM = power_spectrum(DIM, 1.0)  # the suite's data variances


MISFIT_SIGNS = torch.where(torch.arange(DIM) % 3 == 1, -1.0, 1.0).double()  # which variances Small over-/underrates


def velocity_factor(sigma: torch.Tensor, spectrum: torch.Tensor = SPECTRUM) -> torch.Tensor:
    """``c`` with the exact velocity ``v = c * x`` at ``sigma`` (per component; ``sigma`` broadcast on
    the last axis)."""
    s = sigma.double().unsqueeze(-1)
    return (s - (1 - s) * spectrum) / ((1 - s) ** 2 * spectrum + s**2)


MEAN = 0.8 * SPECTRUM.sqrt() * torch.where(torch.arange(DIM) % 2 == 0, 1.0, -1.0).double()  # the prompted mean


def labelled_coefficients(sigma: torch.Tensor, label: torch.Tensor, spectrum: torch.Tensor = SPECTRUM
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(c, d)`` with the exact velocity ``v = c * x + d`` of the data a label prompts: ``N(MEAN,
    diag(spectrum))`` for label 1, and for label 0 (no prompt) ``N(0, diag(spectrum + MEAN**2))``, the
    unconditional data's moments (``sigma`` and ``label`` one per row)."""
    s = sigma.double().view(-1, 1)
    prompted = label.double().view(-1, 1)
    variance = spectrum + (1 - prompted) * MEAN**2
    denominator = (1 - s) ** 2 * variance + s**2
    return (s - (1 - s) * variance) / denominator, -prompted * MEAN * s / denominator


class ExactVelocity(torch.nn.Module):
    """The exact velocity, plus ``error`` on every component outside ``exact_in`` (``lo < sigma <= hi``);
    ``work`` identity matmuls make its FLOPs (what calibration counts as cost) proportional to ``work``."""

    def __init__(self, work: int, error: float = 0.0, exact_in: tuple[float, float] = (0.0, 1.0),
                 misfit: float = 0.0) -> None:
        super().__init__()
        self.work, self.error, self.exact_in = work, float(error), exact_in
        self.spectrum = SPECTRUM * torch.exp(misfit * MISFIT_SIGNS)
        self.register_buffer("eye", torch.eye(DIM), persistent=False)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, label: torch.Tensor | None = None) -> torch.Tensor:
        ballast = x
        for _ in range(self.work):
            ballast = ballast @ self.eye
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)
        lo, hi = self.exact_in
        outside = (~((sigma > lo) & (sigma <= hi))).view(-1, 1)
        if label is not None:  # a guided case: the conditional (label 1) or unconditional (label 0) data's velocity
            factor, shift = labelled_coefficients(sigma, label.reshape(-1), self.spectrum)
            return (factor * x.double() + shift).float() + self.error * outside.float() + 0.0 * ballast
        factor = torch.where(outside, velocity_factor(sigma, self.spectrum), velocity_factor(sigma))
        return (factor * x.double()).float() + self.error * outside.float() + 0.0 * ballast


class OneMinusRelL2:
    """A similarity that sees every component alike: ``1 - ||a - b|| / ||b||`` per sample."""

    name = "one_minus_rel_l2"

    def __call__(self, generated: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        from adaptive.metrics import rel_l2

        return 1 - rel_l2(generated, reference)


class MixtureVelocity:
    """The exact flow-matching velocity for data ``sum_j w_j N(means_j, diag(lam))`` and noise N(0, I):

    given component j, ``x ~ N((1 - s) mu_j, diag(D))`` with ``D = (1 - s)^2 lam + s^2`` and
    ``E[noise - x0 | x, j] = (s - (1 - s) lam) / D * (x - (1 - s) mu_j) - mu_j``; the mixture's velocity
    is that averaged with the posterior weights ``p(j | x)``. One mode at 0 is the Gaussian's
    ``(s - (1 - s) lam) / D * x``. Finite at sigma = 0 (``-x0``) and sigma = 1 (``x - mean``).
    """

    def __init__(self, lam: torch.Tensor, means: torch.Tensor | None = None, weights: torch.Tensor | None = None):
        self.lam = lam.double()
        self.means = torch.zeros(1, lam.numel(), dtype=torch.float64) if means is None else means.double()
        k = self.means.shape[0]
        self.log_w = torch.full((k,), -math.log(k), dtype=torch.float64) if weights is None else weights.double().log()

    def log_density(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``log p_sigma(x)`` per sample (for checks: the velocity is ``-s * score - E[x0 | x]``)."""
        s = sigma.double().view(-1, 1, 1)
        var = (1 - s) ** 2 * self.lam + s**2
        diff = x.double()[:, None, :] - (1 - s) * self.means[None]
        log_n = -0.5 * (diff**2 / var + torch.log(2 * math.pi * var)).sum(-1)
        return torch.logsumexp(log_n + self.log_w, dim=1)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.double().view(-1, 1)
        x64 = x.double()
        var = (1 - s) ** 2 * self.lam + s**2  # (batch, dims)
        # p(j | x) from -|x - (1 - s) mu_j|^2 / (2 var) expanded into matrix products (the |x|^2 term is
        # the same for every mode), so a mixture costs O(batch * modes * dims) in two matmuls.
        cross = (x64 / var) @ self.means.T  # (batch, modes)
        square = (1 / var) @ (self.means**2).T
        post = torch.softmax(self.log_w + (1 - s) * cross - 0.5 * (1 - s) ** 2 * square, dim=1)
        mean = post @ self.means  # E[mu_j | x]
        return ((s - (1 - s) * self.lam) / var * (x64 - (1 - s) * mean) - mean).to(x.dtype)


@dataclasses.dataclass(frozen=True)
class Case:
    """One known-answer case: an exact pair, its Euler grid (``steps``, ``shift``), the quality target
    and the calibration samples (one prompt, ``seeds``)."""

    name: str
    steps: int
    shift: float
    target: float
    exact_in: tuple[float, float] = (0.0, 0.0)  # Small exact in this sigma band; (0, 0): nowhere
    error: float = 0.0
    misfit: float = 0.5
    large_work: int = 10
    small_work: int = 1
    seeds: tuple[int, ...] = tuple(range(16))

    def pair(self) -> ModelPair:
        return ModelPair(ExactVelocity(self.large_work), ExactVelocity(self.small_work, self.error, self.exact_in, self.misfit),
                         sample_shape=(DIM,), metric=OneMinusRelL2())

    @property
    def small_cost(self) -> float:
        return self.small_work / self.large_work

    def cost(self, steps: int, length: int) -> float:
        """A plan's compute as a fraction of Large with all steps: ``steps`` calls, ``length`` of them Small's."""
        return (steps - length * (1 - self.small_cost)) / self.steps

    def noise(self) -> torch.Tensor:
        """The calibration samples' noise, as calibration draws it."""
        return batch_conditions([{}], list(self.seeds), (DIM,))[0].double()

    def table(self, sampler: Sampler | None = None) -> list[tuple[int, int, int, float, float]]:
        """Every plan on every grid ``k <= steps``: ``(k, start, stop, quality, cost)`` for Large alone
        (``start = stop = 0``) and Small on steps ``start .. stop - 1``, its quality the exact mean
        similarity to Large with all steps on the calibration samples, cheapest first. On another
        ``sampler`` than Euler (UniPC, DPM-Solver++) every plan of a grid runs at once, one batch row
        per plan and sample, through the sampler's own steps (:func:`_sampled_table`)."""
        if sampler is not None and not sampler.is_euler:
            return _sampled_table(self, sampler)
        noise = self.noise()
        reference = _final(noise, *_maps(self, self.steps, 0, 0))
        rows = []
        for k in range(1, self.steps + 1):
            windows = [(0, 0)] + [(a, b) for a in range(k) for b in range(a + 1, k + 1)]
            scale, offset = _all_maps(self, k, windows)
            final = scale[:, None, :] * noise[None] + offset[:, None, :]  # (windows, samples, DIM)
            quality = (1 - (final - reference).norm(dim=-1) / reference.norm(dim=-1)).mean(dim=1).tolist()
            rows += [(k, a, b, q, self.cost(k, b - a)) for (a, b), q in zip(windows, quality)]
        return sorted(rows, key=lambda r: (r[4], -r[3]))

    def optimum(self, margin: float = 0.0, sampler: Sampler | None = None) -> MeasuredPlan:
        """The cheapest plan whose quality meets ``target + margin`` (Large with all steps when none does)."""
        for k, a, b, quality, cost in self.table(sampler):
            if quality >= self.target + margin or (k == self.steps and a == b):
                return MeasuredPlan(k, a, b, quality, cost)
        raise AssertionError("Large with all steps is always a plan")

    def quality_of(self, plan: MeasuredPlan | tuple[int, int, int], sampler: Sampler | None = None) -> float:
        """The exact mean quality of one plan (``(steps, start, stop)``) on the calibration samples."""
        steps, start, stop = (plan.steps, plan.start, plan.stop) if isinstance(plan, MeasuredPlan) else plan
        if sampler is not None and not sampler.is_euler:
            return next(q for k, a, b, q, _ in _sampled_table(self, sampler) if (k, a, b) == (steps, start, stop))
        noise = self.noise()
        reference = _final(noise, *_maps(self, self.steps, 0, 0))
        final = _final(noise, *_maps(self, steps, start, stop))
        return float((1 - (final - reference).norm(dim=-1) / reference.norm(dim=-1)).mean())


@functools.lru_cache(maxsize=64)
def _sampled_table(case: Case, sampler: Sampler) -> list[tuple[int, int, int, float, float]]:
    """:meth:`Case.table` on ``sampler``: per grid ``k``, one run of the sampler over a batch holding
    every plan x every sample, each row taking Large's or Small's velocity as its plan says (the
    scheduler's steps act on each row alone, so this is each plan's own run)."""
    noise = case.noise().float()
    pair = case.pair()
    large, small = pair.large, pair.small

    def run(k: int, windows: list[tuple[int, int]]) -> torch.Tensor:
        starts = torch.tensor([a for a, _ in windows]).repeat_interleave(len(noise))
        stops = torch.tensor([b for _, b in windows]).repeat_interleave(len(noise))
        x = noise.repeat(len(windows), 1)
        steps = sampler.run(k)
        for i in range(k):
            sigma = steps.sigma(i)
            on_small = ((starts <= i) & (i < stops)).unsqueeze(-1)
            v = torch.where(on_small, small(x, sigma), large(x, sigma))
            x = steps.step(x, v, i)
        return x.view(len(windows), len(noise), DIM).double()

    reference = run(case.steps, [(0, 0)])[0]
    rows = []
    for k in range(1, case.steps + 1):
        windows = [(0, 0)] + [(a, b) for a in range(k) for b in range(a + 1, k + 1)]
        final = run(k, windows)
        quality = (1 - (final - reference).norm(dim=-1) / reference.norm(dim=-1)).mean(dim=1).tolist()
        rows += [(k, a, b, q, case.cost(k, b - a)) for (a, b), q in zip(windows, quality)]
    return sorted(rows, key=lambda r: (r[4], -r[3]))


def _steps(case: Case, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per step of the grid of ``k``: Large's Euler factor, Small's factor and Small's offset."""
    grid = sigmas(k, case.shift).double()
    h = (grid[1:] - grid[:-1]).unsqueeze(-1)
    lo, hi = case.exact_in
    outside = (~((grid[:-1] > lo) & (grid[:-1] <= hi))).unsqueeze(-1)
    large = 1 + h * velocity_factor(grid[:-1])
    small = torch.where(outside, 1 + h * velocity_factor(grid[:-1], SPECTRUM * torch.exp(case.misfit * MISFIT_SIGNS)),
                        large)
    return large, small, h * case.error * outside.double() * torch.ones(DIM, dtype=torch.float64)


def _maps(case: Case, k: int, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
    scale, offset = _all_maps(case, k, [(start, stop)])
    return scale[0], offset[0]


def _all_maps(case: Case, k: int, windows: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``x_final = scale * noise + offset`` for each window on the grid of ``k`` (Small on steps
    ``a .. b - 1``, Large elsewhere), composed step by step for all windows at once."""
    large, small_factor, small_offset = _steps(case, k)
    starts = torch.tensor([a for a, _ in windows])
    stops = torch.tensor([b for _, b in windows])
    scale = torch.ones(len(windows), DIM, dtype=torch.float64)
    offset = torch.zeros(len(windows), DIM, dtype=torch.float64)
    for i in range(k):
        small = ((starts <= i) & (i < stops)).unsqueeze(-1)
        factor = torch.where(small, small_factor[i], large[i])
        scale = scale * factor
        offset = offset * factor + small.double() * small_offset[i]
    return scale, offset


def _final(noise: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    return scale * noise + offset


__all__ = ["Case", "DIM", "ExactVelocity", "GUIDED_SUITE", "GuidedCase", "MEAN", "OneMinusRelL2", "SPECTRUM",
           "SUITE", "calibrate_case", "calibrate_guided_case", "labelled_coefficients", "velocity_factor"]


SUITE = (
    Case("blend-12", 12, 1.0, 0.95, exact_in=(0.2, 0.7), misfit=1.0),
    Case("blend-20", 20, 3.0, 0.97, exact_in=(0.25, 0.8), misfit=1.0),
    Case("blend-30", 30, 3.0, 0.98, exact_in=(0.3, 0.9), misfit=1.0),
    Case("blend-50", 50, 5.0, 0.99, exact_in=(0.2, 0.9), misfit=1.0),
    Case("small-first-20", 20, 8.0, 0.97),
    Case("small-first-50", 50, 8.0, 0.99),
    Case("bad-small-20", 20, 3.0, 0.97, misfit=2.0, error=1.0),
    Case("bad-small-30", 30, 1.0, 0.96, misfit=2.0, error=1.0),
    Case("bad-small-40", 40, 5.0, 0.98, misfit=2.0, error=1.0),
    Case("none-12", 12, 3.0, 0.99, misfit=2.0, error=1.0),
)
"""The known-answer suite: where a blend pays (Small exact in a band, or good early: Small-first), where
only Large with fewer steps does, and where nothing does."""


def calibrate_case(case: Case, budget: float | None = 3.0, n_trials: int = 24, sampler: Sampler | None = None):
    """``calibrate`` on the case's pair and grid (in-memory study, nothing stored), on ``sampler``'s
    steps (default Euler; its shift is the case's): its profile."""
    import tempfile
    import warnings

    import optuna

    from adaptive.calibration import calibrate

    with tempfile.TemporaryDirectory() as store, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return calibrate(case.pair(), [{}], case.steps, seeds=list(case.seeds), shift=case.shift,
                         quality_target=case.target, n_trials=n_trials, store=store, progress=False, save=False,
                         budget=budget, storage=optuna.storages.InMemoryStorage(),
                         sampler=None if sampler is None else Sampler.of(sampler.name, case.shift))


@dataclasses.dataclass(frozen=True)
class GuidedCase:
    """A known-answer case for the guidance interval: Large guided at ``scale`` (classifier-free guidance
    between the exact velocities :func:`labelled_coefficients` gives for label 1 and label 0), Small bad
    everywhere, so the answer is Large with some steps and guidance on steps ``start .. stop - 1`` of them
    (elsewhere one conditional call, half a guided step's cost). Every such plan is swept exactly.

    Example:
        >>> best = GuidedCase("guided", steps=20, shift=3.0, target=0.97, scale=3.0).optimum()
        >>> best.steps, (best.start, best.stop), round(best.cost, 3)
        (15, (1, 14), 0.7)
    """

    name: str
    steps: int
    shift: float
    target: float
    scale: float
    seeds: tuple[int, ...] = tuple(range(16))

    def pair(self) -> ModelPair:
        base = ModelPair(ExactVelocity(10), ExactVelocity(1, error=50.0, exact_in=(0.0, 0.0), misfit=2.0), sample_shape=(DIM,),
                         metric=OneMinusRelL2())
        return base.guided(self.scale, {"label": torch.zeros(1)})

    def conds(self) -> list[dict[str, torch.Tensor]]:
        return [{"label": torch.ones(1)}]

    def noise(self) -> torch.Tensor:
        return batch_conditions([{}], list(self.seeds), (DIM,))[0].double()

    def cost(self, steps: int, guided: int) -> float:
        return (guided + 0.5 * (steps - guided)) / self.steps

    def table(self, sampler: Sampler | None = None) -> list[tuple[int, int, int, float, float]]:
        """``(k, start, stop, quality, cost)`` of Large on every grid ``k <= steps`` with guidance on steps
        ``start .. stop - 1`` (``start = stop = 0``: on none), cheapest first; on ``sampler``'s steps
        (default Euler at the case's shift)."""
        noise = self.noise()
        reference = self._finals(self.steps, [(0, self.steps)], noise, sampler)[0]
        rows = []
        for k in range(1, self.steps + 1):
            intervals = [(0, 0)] + [(a, b) for a in range(k) for b in range(a + 1, k + 1)]
            final = self._finals(k, intervals, noise, sampler)
            quality = (1 - (final - reference).norm(dim=-1) / reference.norm(dim=-1)).mean(dim=1).tolist()
            rows += [(k, a, b, q, self.cost(k, b - a)) for (a, b), q in zip(intervals, quality)]
        return sorted(rows, key=lambda r: (r[4], -r[3]))

    def optimum(self, margin: float = 0.0, sampler: Sampler | None = None) -> MeasuredPlan:
        """The cheapest plan meeting ``target + margin`` (start/stop: its guidance interval)."""
        for k, a, b, quality, cost in self.table(sampler):
            if quality >= self.target + margin or (k == self.steps and (a, b) == (0, k)):
                return MeasuredPlan(k, a, b, quality, cost)
        raise AssertionError("guided Large with all steps is always a plan")

    def quality_of(self, plan: tuple[int, int, int], sampler: Sampler | None = None) -> float:
        noise = self.noise()
        reference = self._finals(self.steps, [(0, self.steps)], noise, sampler)[0]
        final = self._finals(plan[0], [(plan[1], plan[2])], noise, sampler)[0]
        return float((1 - (final - reference).norm(dim=-1) / reference.norm(dim=-1)).mean())

    def recommended(self, profile) -> tuple[int, int, int]:
        """The plan a calibrated profile recommends: its step count and guidance interval (all its steps when
        calibration found none)."""
        steps = profile.plan.steps
        interval = next((g for g in profile.guidance if g.steps == steps), None)
        return (steps, interval.start, interval.stop) if interval is not None else (steps, 0, steps)

    def _finals(self, k: int, intervals: Sequence[tuple[int, int]], noise: torch.Tensor,
                sampler: Sampler | None = None) -> torch.Tensor:
        """Each interval's final samples on the grid of ``k``: Euler steps composed as affine maps, or one
        run of a multistep ``sampler`` over a batch of every interval x every sample (its steps act on
        each row alone)."""
        if sampler is not None and not sampler.is_euler:
            return self._sampled_finals(k, intervals, noise, sampler)
        grid = sigmas(k, self.shift).double()
        starts = torch.tensor([a for a, _ in intervals]).unsqueeze(-1)
        stops = torch.tensor([b for _, b in intervals]).unsqueeze(-1)
        scale = torch.ones(len(intervals), DIM, dtype=torch.float64)
        offset = torch.zeros(len(intervals), DIM, dtype=torch.float64)
        for i in range(k):
            h = grid[i + 1] - grid[i]
            c_cond, d_cond = labelled_coefficients(grid[i:i + 1], torch.ones(1))
            c_none, d_none = labelled_coefficients(grid[i:i + 1], torch.zeros(1))
            guided = (starts <= i) & (i < stops)
            factor = torch.where(guided, 1 + h * (c_none + self.scale * (c_cond - c_none)), 1 + h * c_cond)
            shift = torch.where(guided, h * (d_none + self.scale * (d_cond - d_none)), h * d_cond)
            scale, offset = scale * factor, offset * factor + shift
        return scale[:, None, :] * noise[None] + offset[:, None, :]

    def _sampled_finals(self, k: int, intervals: Sequence[tuple[int, int]], noise: torch.Tensor,
                        sampler: Sampler) -> torch.Tensor:
        starts = torch.tensor([a for a, _ in intervals]).repeat_interleave(len(noise)).unsqueeze(-1)
        stops = torch.tensor([b for _, b in intervals]).repeat_interleave(len(noise)).unsqueeze(-1)
        x = noise.float().repeat(len(intervals), 1)
        run = sampler.run(k)
        for i in range(k):
            sigma = torch.tensor([run.sigma(i)], dtype=torch.float64)
            (c_cond, d_cond), (c_none, d_none) = (labelled_coefficients(sigma, torch.full((1,), label))
                                                  for label in (1.0, 0.0))
            cond, none = c_cond * x.double() + d_cond, c_none * x.double() + d_none
            guided = (starts <= i) & (i < stops)
            x = run.step(x, torch.where(guided, none + self.scale * (cond - none), cond).float(), i)
        return x.view(len(intervals), len(noise), DIM).double()


GUIDED_SUITE = (
    GuidedCase("guided-20", 20, 3.0, 0.97, scale=3.0),
    GuidedCase("guided-30", 30, 5.0, 0.98, scale=4.0),
)
"""Known answers for the guidance interval: where guidance can be dropped on some steps."""


def calibrate_guided_case(case: GuidedCase, budget: float | None = 3.0, n_trials: int = 24,
                          sampler: Sampler | None = None):
    """``calibrate`` on a guided case (in-memory study, nothing stored) on ``sampler``'s steps: its profile."""
    import tempfile
    import warnings

    import optuna

    from adaptive.calibration import calibrate

    with tempfile.TemporaryDirectory() as store, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return calibrate(case.pair(), case.conds(), case.steps, seeds=list(case.seeds), shift=case.shift,
                         quality_target=case.target, n_trials=n_trials, store=store, progress=False, save=False,
                         budget=budget, storage=optuna.storages.InMemoryStorage(), sampler=sampler)


def _plan_text(steps: int, start: int, stop: int, full: int) -> str:
    if start >= stop:
        return f"Large {steps}/{full}"
    return f"{steps} steps, Small {start}-{stop - 1}"


def _recommended(case: Case | GuidedCase, budget: float | None) -> tuple[int, int, int, float, float, float]:
    """What calibration recommends on ``case``: steps, start, stop (a Small window, or for a guided case the
    guidance interval), its cost and exact quality, and the Large passes spent."""
    if isinstance(case, GuidedCase):
        profile = calibrate_guided_case(case, budget)
        steps, start, stop = case.recommended(profile)
        return (steps, start, stop, case.cost(steps, stop - start), case.quality_of((steps, start, stop)),
                profile.cost.calibration_passes)
    profile = calibrate_case(case, budget)
    plan = profile.plan
    return plan.steps, plan.start, plan.stop, plan.cost, case.quality_of(plan), profile.cost.calibration_passes


def _guided_text(steps: int, start: int, stop: int, full: int) -> str:
    return f"Large {steps}/{full}, " + (f"guidance {start}-{stop - 1}" if start < stop else "no guidance")


def suite_table(cases: Sequence[Case | GuidedCase] = SUITE + GUIDED_SUITE,  # type: ignore[operator]
                budgets: Sequence[float | None] = (3.0, None)) -> str:
    """The suite as a Markdown table: each case's optimum (exhaustive sweep) and, per budget, the plan
    calibration recommends, its cost against the optimum, its exact quality and the passes spent."""
    head = "| case | steps, shift, target | optimum (cost) | " + " | ".join(
        f"budget {b if b is not None else 'None'}: plan (cost, x optimum, quality, passes)" for b in budgets) + " |"
    lines = [head, "|" + "---|" * (3 + len(budgets))]
    for case in cases:
        best = case.optimum()
        text = _guided_text if isinstance(case, GuidedCase) else _plan_text
        row = [case.name + (f" (guidance {case.scale:g})" if isinstance(case, GuidedCase) else ""),
               f"{case.steps}, {case.shift:g}, {case.target}",
               f"{text(best.steps, best.start, best.stop, case.steps)} ({best.cost:.3f})"]
        for budget in budgets:
            steps, start, stop, cost, quality, passes = _recommended(case, budget)
            row.append(f"{text(steps, start, stop, case.steps)} ({cost:.3f}, x{cost / best.cost:.2f}, {quality:.4f}, "
                       f"{passes:.2f})")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(description="The known-answer suite of calibration as a Markdown table.")
    parser.add_argument("--out", type=Path, default=None, help="write the table here (default: print it)")
    args = parser.parse_args()
    table = suite_table()
    if args.out is None:
        print(table)
    else:  # the table sits under its heading and command in the file, above the "before" table
        text = args.out.read_text() if args.out.exists() else ""
        start = text.find("| case |")
        end = text.find("\n\n", start) + 1 if start >= 0 and text.find("\n\n", start) >= 0 else len(text)
        args.out.write_text(text[:start] + table + text[end:] if start >= 0 else table)
