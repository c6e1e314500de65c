"""Automatic stage boundaries: probe -> change-point proposal -> Optuna refinement -> Profile.

The refinement judges what matters, the *final* sample: each trial is a Large-Small-Large run whose
quality is measured against Large-only output for the same noise and prompt. Trials restart from the
cached Large state at the window's first step, so the shared prefix is never recomputed. The study
is an ordinary Optuna study (``create_study(storage=..., load_if_exists=True)``), so several workers
can share it through SQLite, PostgreSQL or a JournalFile storage.

Example:
    >>> import tempfile
    >>> from adaptive import ModelPair, calibrate
    >>> pair = ModelPair(lambda x, s: x, lambda x, s: x)           # Small == Large
    >>> profile = calibrate(pair, [{}], num_steps=8, seeds=[0], shape=(4,), n_trials=4,
    ...                     store=tempfile.mkdtemp(), progress=False)
    >>> (profile.sigma_in, profile.sigma_out)
    (1.0, 0.0)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from adaptive.detect import Boundaries, ChangePointDetector, boundaries_from_steps
from adaptive.errors import CalibrationError
from adaptive.metering import flops_per_row
from adaptive.metrics import LatentSimilarity, Metric
from adaptive.pair import ModelPair
from adaptive.probing import DivergenceCurve, Reference, run_probe
from adaptive.storage import open_storage
from adaptive.profiles import Profile, ProfileStore, fingerprint, safe_key, sampler_signature

DEFAULT_QUALITY_TARGET = 0.95
DEFAULT_TRIALS = 24
_FALLBACK_SMALL_COST = 0.5


class Evaluator:
    """Final-sample quality and cost of Large-Small-Large windows, restarting from cached states.

    Qualities are kept per sample (so per-prompt calibration reads them for free); the Small run of
    the last window start is cached step by step, so windows that share a start share their Small
    prefix.
    """

    def __init__(self, pair: ModelPair, reference: Reference, metric: Metric, small_cost: float) -> None:
        self.pair, self.reference, self.metric, self.small_cost = pair, reference, metric, small_cost
        self.n = len(reference.grid) - 1
        self.cache: dict[tuple[int, int], tuple[np.ndarray, float]] = {}
        self.large_equivalents = 0.0  # calls actually spent, in Large-call units per sample
        self._prefix: tuple[int, list[torch.Tensor]] = (-1, [])

    def cost(self, start: int, stop: int) -> float:
        """Compute of the window as a fraction of Large-only (1.0)."""
        return (self.n - (stop - start) * (1.0 - self.small_cost)) / self.n

    def _step(self, model: Any, x: torch.Tensor, i: int) -> torch.Tensor:
        grid = self.reference.grid
        sigma = torch.full((x.shape[0],), grid[i], device=x.device)
        return x + (grid[i + 1] - grid[i]) * model(x, sigma, **self.reference.cond)

    def _small_until(self, start: int, stop: int) -> torch.Tensor:
        if self._prefix[0] != start:
            self._prefix = (start, [self.reference.states[start]])
        states = self._prefix[1]
        while len(states) <= stop - start:
            states.append(self._step(self.pair.small, states[-1], start + len(states) - 1))
            self.large_equivalents += self.small_cost
        return states[stop - start]

    @torch.no_grad()
    def qualities(self, start: int, stop: int) -> np.ndarray:
        """Per-sample metric of the blended result against Large-only (cached per window)."""
        if start >= stop:
            return np.ones(len(self.reference.final))
        key = (start, stop)
        if key not in self.cache:
            x = self._small_until(start, stop)
            for i in range(stop, self.n):
                x = self._step(self.pair.large, x, i)
            self.large_equivalents += self.n - stop
            values = self.metric(x, self.reference.final).detach().float().cpu().numpy().astype(float)
            self.cache[key] = (values, self.cost(start, stop))
        return self.cache[key][0]

    def quality(self, start: int, stop: int) -> float:
        """Mean metric of the blended result against Large-only."""
        return float(self.qualities(start, stop).mean())


def _check_inputs(conds: Sequence[Mapping[str, Any]], num_steps: int, seeds: Sequence[int],
                  quality_target: float, n_trials: int) -> None:
    if not isinstance(num_steps, int) or num_steps < 2:
        raise CalibrationError(f"num_steps must be an integer >= 2, got {num_steps!r}")
    if not isinstance(quality_target, (int, float)) or not (0.0 < quality_target <= 1.0):
        raise CalibrationError(f"quality_target is a similarity to Large-only in (0, 1], got {quality_target!r}")
    if not isinstance(n_trials, int) or n_trials < 0:
        raise CalibrationError(f"n_trials must be a non-negative integer, got {n_trials!r}")
    if not isinstance(conds, Sequence) or len(conds) == 0:
        raise CalibrationError("conds must be a non-empty list of dicts, e.g. [{'encoder_hidden_states': emb}]")
    if len(seeds) == 0:
        raise CalibrationError("seeds must name at least one noise seed")


def _small_cost(pair: ModelPair, reference: Reference) -> float:
    flops = flops_per_row(pair, reference.states[0], **reference.cond)
    return flops["small"] / flops["large"] if flops.get("large") else _FALLBACK_SMALL_COST


def _calibration_key(conds: Sequence[Mapping[str, Any]], seeds: Sequence[int], target: float, metric: str) -> str:
    h = hashlib.sha256(json.dumps([list(map(int, seeds)), target, metric]).encode())
    for cond in conds:
        for key in sorted(cond):
            value = cond[key]
            h.update(key.encode())
            h.update(value.detach().float().cpu().numpy().tobytes() if isinstance(value, torch.Tensor)
                     else repr(value).encode())
    return h.hexdigest()[:12]


def default_storage(store: ProfileStore) -> str:
    """SQLite next to the profiles: ``sqlite:///<store>/studies.db``."""
    store.root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(store.root / 'studies.db').resolve()}"


def make_study(storage: Any, study_name: str, seed: int | None = 0) -> optuna.Study:
    """The Optuna study of a calibration: shared by every worker that names it (see
    :func:`adaptive.storage.open_storage` for URLs, journal files and heartbeats)."""
    return optuna.create_study(storage=open_storage(storage), study_name=study_name, direction="minimize",
                               load_if_exists=True, sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=6))


def _objective(evaluator: Evaluator, target: float):
    n = evaluator.n

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker_pid", os.getpid())
        start = trial.suggest_int("start", 0, n - 1)
        length = trial.suggest_int("length", 0, n)
        stop = min(n, start + length)
        quality = evaluator.quality(start, stop)
        cost = evaluator.cost(start, stop)
        trial.set_user_attr("stop", stop)
        trial.set_user_attr("quality", quality)
        trial.set_user_attr("cost", cost)
        # Feasible windows rank by compute; infeasible ones rank after Large-only (1.0).
        return cost if quality >= target else 1.0 + (target - quality)

    return objective


def _best_window(study: optuna.Study, target: float) -> tuple[int, int, float, float]:
    best = (0, 0, 1.0, 1.0)  # Large only: always feasible
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        quality, cost = t.user_attrs.get("quality"), t.user_attrs.get("cost")
        if quality is None or quality < target:
            continue
        start, stop = int(t.params["start"]), int(t.user_attrs["stop"])
        if start >= stop:
            continue
        if (cost, -quality) < (best[3], -best[2]):
            best = (start, stop, quality, cost)
    return best


def refine(evaluator: Evaluator, proposal: Boundaries | None, quality_target: float, n_trials: int,
           storage: Any, study_name: str, progress: bool = True, seed: int | None = 0) -> optuna.Study:
    """Run (or join) the Optuna study seeded with the detector's proposal."""
    study = make_study(storage, study_name, seed)
    if not study.trials and proposal is not None and not proposal.is_large_only:
        study.enqueue_trial({"start": proposal.start, "length": proposal.stop - proposal.start})
    elif not study.trials and proposal is not None:
        study.enqueue_trial({"start": 0, "length": evaluator.n})
    done = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    if n_trials > done:
        stop_at = optuna.study.MaxTrialsCallback(n_trials, states=(optuna.trial.TrialState.COMPLETE,))
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study.optimize(_objective(evaluator, quality_target), n_trials=n_trials - done, callbacks=[stop_at],
                       show_progress_bar=progress)
    return study


def calibrate(pair: ModelPair, conds: Sequence[Mapping[str, Any]], num_steps: int = 30,
              seeds: Sequence[int] = (0, 1, 2, 3), shift: float = 1.0, shape: Sequence[int] | None = None,
              quality_target: float = DEFAULT_QUALITY_TARGET, n_trials: int = DEFAULT_TRIALS,
              metric: Metric | None = None, storage: Any = None, study_name: str | None = None,
              store: ProfileStore | str | Path | None = None, detector: ChangePointDetector | None = None,
              probe_steps: Sequence[int] | None = None, progress: bool = True, save: bool = True,
              per_prompt: bool = False) -> Profile:
    """Find where Small may replace Large for this pair and sampler grid; return (and store) a Profile.

    Args:
        pair: the Large/Small pair (guidance already applied if the pipeline uses it).
        conds: one dict of model keyword arguments per calibration prompt.
        num_steps, shift: the Euler grid (``adaptive.sigmas(num_steps, shift)``).
        seeds: noise seeds; every cond runs with every seed.
        quality_target: least mean similarity to Large-only output a window must keep (default 0.95,
            on the pair's ``metric`` — the toy encoder's feature cosine for the embedded pair,
            latent cosine otherwise).
        n_trials: Optuna trials in all (shared by every worker of the study).
        storage: an Optuna storage (SQLAlchemy URL, ``JournalStorage``...); default SQLite in the store.
        store: the :class:`ProfileStore` (or its directory) the profile is written to.
        per_prompt: also choose a window per prompt (keyed by :func:`~adaptive.profiles.prompt_key`
            of its conditioning; unseen prompts fall back to the pair-level window) and fit the
            online controller (``sample(..., schedule="online")``) from those windows.

    A quality target no window meets gives a Large-only profile whose ``note`` says so.

    Example:
        >>> import tempfile, torch
        >>> from adaptive import ModelPair
        >>> pair = ModelPair(lambda x, s: -x, lambda x, s: -0.5 * x)    # Small far off: no safe window
        >>> p = calibrate(pair, [{}], num_steps=6, seeds=[0], shape=(4,), n_trials=3, quality_target=0.999,
        ...               store=tempfile.mkdtemp(), progress=False)  # doctest: +SKIP
    """
    _check_inputs(conds, num_steps, seeds, quality_target, n_trials)
    if per_prompt and probe_steps is not None:
        raise CalibrationError("per_prompt=True fits the online controller on every step's divergence; "
                               "leave probe_steps=None")
    store = store if isinstance(store, ProfileStore) else ProfileStore(store)
    metric = metric or pair.metric or LatentSimilarity()
    metric_name = getattr(metric, "name", type(metric).__name__)
    curve, reference = run_probe(pair, conds, num_steps, seeds, shift, shape, probe_steps, progress)
    proposal = (detector or ChangePointDetector()).fit(curve).predict()
    evaluator = Evaluator(pair, reference, metric, _small_cost(pair, reference))
    signature = sampler_signature("euler", num_steps, shift)
    fp = fingerprint(pair)
    name = study_name or safe_key(f"{fp}__{signature}__{_calibration_key(conds, seeds, quality_target, metric_name)}")
    # One worker: a fixed sampler seed makes calibration reproducible. Shared studies get a fresh seed
    # per worker, or every worker would propose the same windows.
    study = refine(evaluator, proposal, quality_target, n_trials, storage or default_storage(store), name, progress,
                   seed=0 if storage is None else None)
    profile = _profile(pair, fp, signature, num_steps, shift, curve, proposal, study, evaluator, quality_target,
                       metric_name, conds, seeds, name)
    if per_prompt:
        profile = _with_per_prompt(profile, evaluator, study, curve, reference, len(conds), len(seeds),
                                   quality_target, detector or ChangePointDetector(), progress)
    if profile.note:
        warnings.warn(profile.note, stacklevel=2)
    if save and (_finished_here(study) or not store.path_for(fp, signature).exists()):
        store.save(profile)
    return profile


def _finished_here(study: optuna.Study) -> bool:
    """True for the worker that ran a shared study's last complete trial, and for a re-run that
    found the study already finished (it ran no trial; nobody else is still writing)."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return True
    last = max(complete, key=lambda t: t.number)
    mine = [t for t in complete if t.user_attrs.get("worker_pid") == os.getpid()]
    return last.user_attrs.get("worker_pid", os.getpid()) == os.getpid() or not mine


def _profile(pair: ModelPair, fp: str, signature: str, num_steps: int, shift: float, curve: DivergenceCurve,
             proposal: Boundaries | None, study: optuna.Study, evaluator: Evaluator, target: float,
             metric_name: str, conds: Sequence[Any], seeds: Sequence[int], study_name: str) -> Profile:
    start, stop, quality, cost = _best_window(study, target)
    window = boundaries_from_steps(curve.grid, start, stop)
    note = ""
    if window.is_large_only:
        tried = [t.user_attrs.get("quality", 0.0) for t in study.trials if t.user_attrs.get("stop", 0) >
                 t.params.get("start", 0)]
        best_tried = max(tried) if tried else float("nan")
        note = (f"no Small window met quality_target={target} (best tried: {best_tried:.4f}); the profile runs "
                "Large only. Lower the target or give more trials.")
    n = num_steps
    probe_cost = curve.cost["large_calls"] + curve.cost["small_calls"] * evaluator.small_cost
    trials_cost = evaluator.large_equivalents
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return Profile(
        pair_fingerprint=fp, sampler=signature, num_steps=num_steps, shift=float(shift),
        sigma_in=window.sigma_in, sigma_out=window.sigma_out, small_steps=tuple(range(start, stop)),
        pair_name=pair.name,
        proposal={} if proposal is None else {"sigma_in": proposal.sigma_in, "sigma_out": proposal.sigma_out,
                                              "start": proposal.start, "stop": proposal.stop,
                                              "score": proposal.score if math.isfinite(proposal.score) else None},
        curve={"sigmas": curve.sigmas.tolist(), "steps": curve.steps.tolist(),
               "rel_l2": curve.mean("rel_l2").tolist(), "cosine": curve.mean("cosine").tolist(),
               "weighted": curve.mean("weighted").tolist()},
        quality={"metric": metric_name, "target": target, "achieved": quality},
        cost={"fraction_of_large": cost, "small_cost_ratio": evaluator.small_cost,
              "large_calls": n - (stop - start), "small_calls": stop - start,
              "calibration_large_equivalents_per_sample": probe_cost + trials_cost,
              "probe_large_equivalents_per_sample": probe_cost},
        calibration={"num_conds": len(conds), "seeds": [int(s) for s in seeds], "n_trials": len(complete),
                     "study_name": study_name, "samples": int(curve.cost["samples"])},
        note=note,
    )


PER_PROMPT_OFFSETS = (-6, -4, -2, 2, 4, 6)


STUDY_WINDOWS_PER_PROMPT = 40


def _candidate_windows(evaluator: Evaluator, study: optuna.Study, start: int, stop: int,
                       proposals: Sequence[Boundaries | None]) -> list[tuple[int, int]]:
    """Windows judged per prompt: the pair window with either end moved, each prompt's change-point
    proposal, the study's windows (also those another worker or an earlier run evaluated: infeasible
    on average can be feasible for one prompt) and every window this process already evaluated
    (free: cached per sample)."""
    n = evaluator.n
    windows = set(evaluator.cache)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))[:STUDY_WINDOWS_PER_PROMPT]:
        a, b = int(t.params["start"]), int(t.user_attrs.get("stop", t.params["start"]))
        if a < b:
            windows.add((a, b))
    if start < stop:
        windows.add((start, stop))
        windows |= {(start, min(n, max(start + 1, stop + d))) for d in PER_PROMPT_OFFSETS}
        windows |= {(min(stop - 1, max(0, start + d)), stop) for d in PER_PROMPT_OFFSETS}
    windows |= {(p.start, p.stop) for p in proposals if p is not None and not p.is_large_only}
    return sorted(windows)


def _with_per_prompt(profile: Profile, evaluator: Evaluator, study: optuna.Study, curve: DivergenceCurve,
                     reference: Reference, num_conds: int, num_seeds: int, target: float,
                     detector: ChangePointDetector, progress: bool) -> Profile:
    """Per-prompt windows (cheapest candidate meeting the target on that prompt's samples) and the
    online controller fitted to them."""
    from tqdm.auto import tqdm

    from adaptive.controller import fit_controller
    from adaptive.denoisers import select_rows
    from adaptive.profiles import prompt_key

    batch = len(reference.final)
    rows_of = [list(range(k * num_seeds, (k + 1) * num_seeds)) for k in range(num_conds)]
    proposals = []
    for rows in rows_of:
        values = curve.rel_l2[:, rows].mean(axis=1)
        proposals.append(detector.fit(values, curve.grid).predict())
    start, stop = (profile.small_steps[0], profile.small_steps[-1] + 1) if profile.small_steps else (0, 0)
    candidates = _candidate_windows(evaluator, study, start, stop, proposals)
    for a, b in tqdm(candidates, desc="per-prompt windows", disable=not progress, leave=False):
        evaluator.qualities(a, b)
    windows: dict[str, dict[str, Any]] = {}
    starts: list[int | None] = []
    sigma_outs: list[float | None] = []
    for k, rows in enumerate(rows_of):
        best = (0, 0, 1.0, 1.0)
        for a, b in candidates:
            quality, cost = float(evaluator.qualities(a, b)[rows].mean()), evaluator.cost(a, b)
            if quality >= target and (cost, -quality) < (best[3], -best[2]):
                best = (a, b, quality, cost)
        chosen = boundaries_from_steps(curve.grid, best[0], best[1])
        key = prompt_key(select_rows(reference.cond, batch, [rows[0]]))
        windows[key] = {"start": best[0], "stop": best[1], "sigma_in": chosen.sigma_in,
                        "sigma_out": chosen.sigma_out, "quality": best[2], "cost": best[3]}
        starts += [best[0] if best[0] < best[1] else None] * num_seeds
        sigma_outs += [chosen.sigma_out if best[0] < best[1] else None] * num_seeds
    controller = fit_controller(curve.grid.tolist(), curve.rel_l2.T, starts, sigma_outs, profile.sigma_out)
    mean_cost = float(np.mean([w["cost"] for w in windows.values()]))
    per_prompt = {"windows": windows, "candidates": [list(w) for w in candidates], "mean_cost": mean_cost,
                  "fallback": "pair-level window for prompts not calibrated"}
    spent = dict(profile.cost, calibration_large_equivalents_per_sample=(
        profile.cost.get("probe_large_equivalents_per_sample", 0.0) + evaluator.large_equivalents))
    return dataclasses.replace(profile, per_prompt=per_prompt, controller=controller.to_dict(), cost=spent)


def windows_table(study: optuna.Study) -> list[dict[str, Any]]:
    """The study's complete trials as rows (start, stop, quality, cost), for reports."""
    rows = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        rows.append({"trial": t.number, "start": t.params["start"], "stop": t.user_attrs.get("stop"),
                     "quality": t.user_attrs.get("quality"), "cost": t.user_attrs.get("cost"), "value": t.value})
    return rows


def sweep(evaluator: Evaluator, quality_target: float, progress: bool = True) -> tuple[int, int, float, float]:
    """The oracle: every window on the grid; the cheapest one that meets the target."""
    from tqdm.auto import tqdm

    n = evaluator.n
    best = (0, 0, 1.0, 1.0)
    pairs = [(a, b) for a in range(n) for b in range(a + 1, n + 1)]
    for a, b in tqdm(pairs, desc="oracle sweep", disable=not progress):
        quality = evaluator.quality(a, b)
        cost = evaluator.cost(a, b)
        if quality >= quality_target and (cost, -quality) < (best[3], -best[2]):
            best = (a, b, quality, cost)
    return best


__all__ = ["DEFAULT_QUALITY_TARGET", "Evaluator", "calibrate", "default_storage", "make_study", "refine", "sweep",
           "windows_table"]
