"""``calibrate``: probe -> change-point proposal -> Optuna refinement -> :class:`~adaptive.profiles.Profile`.

The pipeline that ties the pieces together: inputs checked and the store and study opened before any
model call, the probe's Large trajectory cached for the search (:mod:`.evaluation`, :mod:`.search`),
per-prompt windows and the online controller on request (:mod:`.per_prompt`), and the profile
written to the store (never replacing a stronger one silently).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from adaptive.calibration.evaluation import Evaluator, Ledger, StepSearch, small_cost_ratio
from adaptive.calibration.guidance import guidance_intervals
from adaptive.calibration.per_prompt import with_per_prompt
from adaptive.calibration.search import _trials_done, best_plan, spending, best_window, default_storage, make_study, measured_plans, refine
from adaptive.detect import Boundaries, ChangePointDetector, boundaries_from_steps
from adaptive.denoisers import first_row
from adaptive.errors import CalibrationError, SigmaGridError
from adaptive.metrics import LatentStructure, Metric
from adaptive.pair import ModelPair
from adaptive.probing import DivergenceCurve, batch_conditions, latent_shape, model_device, run_probe
from adaptive.profiles import Profile, fingerprint, guidance_of, models_fingerprint
from adaptive.profile_store import ProfileStore, safe_key
from adaptive.samplers import Sampler, sampler_for
from adaptive.records import CalibrationInfo, Cost, CurveSummary, Proposal, Quality

DEFAULT_QUALITY_TARGET = 0.95
DEFAULT_TRIALS = 24
DEFAULT_BUDGET = 3.0  # Large passes per calibration sample, probe included (one pass: Large with all steps)
PER_PROMPT_SHARE = 0.5  # of the budget left after the probe, kept for per-prompt windows (half of it: the
# guidance interval's, for a guided pair)
GUIDANCE_SHARE = 0.4  # of the budget left after the probe, kept for the guidance interval of a guided pair


TINY_CALIBRATION = 4  # fewer samples than this get a warning: a plan with no error bars


def _check_inputs(conds: Sequence[Mapping[str, Any]], num_steps: int, seeds: Sequence[int],
                  quality_target: float, n_trials: int, budget: float | None = None) -> None:
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                               or not math.isfinite(budget) or budget <= 1.0):
        raise CalibrationError(f"budget is in Large passes per calibration sample and must exceed 1 (the probe "
                               f"alone runs Large once and Small at every step), got {budget!r}; the default is "
                               f"{DEFAULT_BUDGET}, budget=None searches without a limit")
    if not isinstance(num_steps, int) or num_steps < 2:
        raise CalibrationError(f"num_steps must be an integer >= 2, got {num_steps!r}")
    if not isinstance(quality_target, (int, float)) or not (0.0 < quality_target <= 1.0):
        raise CalibrationError(f"quality_target is a similarity to Large-only in (0, 1], got {quality_target!r}")
    if not isinstance(n_trials, int) or n_trials < 0:
        raise CalibrationError(f"n_trials must be a non-negative integer, got {n_trials!r}")
    if not isinstance(conds, Sequence) or len(conds) == 0:
        raise CalibrationError("conds must be a non-empty list of dicts, e.g. [{'encoder_hidden_states': emb}]")
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (Sequence, np.ndarray)) or \
            not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in seeds):
        raise CalibrationError(f"seeds must be a list of integer noise seeds, e.g. seeds=[0, 1, 2], got {seeds!r}"
                               + (f"; for {seeds} seeds write seeds=range({seeds})" if isinstance(seeds, int) else ""))
    if len(seeds) == 0:
        raise CalibrationError("seeds must name at least one noise seed")


def _calibration_key(conds: Sequence[Mapping[str, Any]], seeds: Sequence[int], target: float, metric: str,
                     search_steps: bool = False) -> str:
    # A step-search study and a fixed-grid one measure different candidates: never join one for the other.
    h = hashlib.sha256(json.dumps([list(map(int, seeds)), target, metric] + (["steps"] if search_steps else []))
                       .encode())
    for cond in conds:
        for key in sorted(cond):
            value = cond[key]
            h.update(key.encode())
            h.update(value.detach().float().cpu().numpy().tobytes() if isinstance(value, torch.Tensor)
                     else repr(value).encode())
    return h.hexdigest()[:12]


def calibrate(pair: ModelPair, conds: Sequence[Mapping[str, Any]], num_steps: int = 30,
              seeds: Sequence[int] = (0, 1, 2, 3), shift: float = 1.0, shape: Sequence[int] | None = None,
              quality_target: float = DEFAULT_QUALITY_TARGET, n_trials: int = DEFAULT_TRIALS,
              metric: Metric | None = None, storage: Any = None, study_name: str | None = None,
              store: ProfileStore | str | Path | None = None, detector: ChangePointDetector | None = None,
              probe_steps: Sequence[int] | None = None, progress: bool = True, save: bool = True,
              per_prompt: bool = False, search_steps: bool = True, force: bool = False,
              budget: float | None = DEFAULT_BUDGET, guidance_interval: bool = True, sampler: Any = None) -> Profile:
    """Find the cheapest plan that keeps Large's quality for this pair and sampler grid: a
    Large-Small-Large window where a blend pays, Large with fewer steps where they do; return (and
    store) the Profile.

    Args:
        pair: the Large/Small pair (guidance already applied if the pipeline uses it).
        conds: one dict of model keyword arguments per calibration prompt.
        num_steps, shift: the grid: ``num_steps`` steps of ``sampler`` at ``shift`` (Euler:
            ``adaptive.sigmas(num_steps, shift)``).
        sampler: the solver the pipeline runs, and every judgement here runs step by step: ``"euler"``
            (default), ``"unipc"``, ``"dpm++"``, or a diffusers flow scheduler (instance or config), whose
            flow shift is then the grid's (:class:`~adaptive.samplers.Sampler`). A multistep solver's
            history carries across the model switch as it does in the pipeline. The profile is keyed
            by it (``profile.sampler``: ``"unipc-30-shift3"``).
        seeds: noise seeds; every cond runs with every seed.
        quality_target: least mean similarity to Large-only output a window must keep (default 0.95,
            on the pair's ``metric`` — for the embedded pair the worse of the toy encoder's
            feature cosine and per-frame SSIM; :class:`~adaptive.metrics.LatentStructure` for pairs
            without one, which fails blur and lost structure that a latent cosine passes).
        n_trials: Optuna trials in all (shared by every worker of the study).
        storage: an Optuna storage (SQLAlchemy URL, ``JournalStorage``...); default SQLite in the store.
        store: the :class:`ProfileStore` (or its directory) the profile is written to.
        per_prompt: also choose a window per prompt (keyed by :func:`~adaptive.profiles.prompt_key`
            of its conditioning; unseen prompts fall back to the pair-level window) and fit the
            online controller (``sample(..., schedule="online")``) from those windows. Per-prompt
            windows and the controller are for the full grid of ``num_steps``.
        force: replace a stored profile even when this one is weaker (fewer trials, a costlier plan);
            otherwise the stored one is kept and this one is written beside it with a warning.
        search_steps: also search the step count ``n <= num_steps``: Large alone with fewer steps
            and blends on coarser grids ``sigmas(n, shift)`` are candidates like any window, all
            judged against Large with ``num_steps``. The profile's ``plan`` is the cheapest that
            meets the target (``steps``: its ``n``; ``plan_schedule()``: its stages), ``frontier``
            keeps every measured plan, and ``sigma_in``/``sigma_out``/``schedule()`` stay the best
            window on the full grid, for callers who fix ``num_steps``.
        budget: what calibration may spend, in Large passes per calibration sample (one pass: Large
            with all ``num_steps`` steps on one sample), probe included; default 3. Candidates are
            judged on a group of samples first and dropped when they cannot meet the target or cost
            as much as a plan already known to meet it; the plans the probe predicts (Large with fewer
            steps from its replayed trajectory, windows from Small's divergence along it) are judged
            cheapest first, before Optuna's trials; when the budget is spent the search stops,
            and the profile's ``cost`` says what it spent by phase and what it left unexplored
            (``cost.unexplored``). ``None``: no limit (``n_trials`` alone bounds the search).
        guidance_interval: for a guided pair, also search where guidance pays on the recommended plan
            and on the full grid's window (:mod:`adaptive.calibration.guidance`): the profile's
            ``guidance`` intervals; outside them a step makes one conditional call instead of two.
            Per-prompt windows keep guidance on every step.

    A quality target no plan meets gives a Large-only profile whose ``note`` says so. With
    ``progress`` the decision is printed in words (``Profile.decision``).

    Example:
        >>> import tempfile, torch
        >>> from adaptive import ModelPair
        >>> pair = ModelPair(lambda x, s: -x, lambda x, s: -0.5 * x)    # Small far off: no safe window
        >>> p = calibrate(pair, [{}], num_steps=6, seeds=[0], shape=(4,), n_trials=3, quality_target=0.999,
        ...               store=tempfile.mkdtemp(), progress=False)  # doctest: +SKIP
    """
    with torch.no_grad():  # every model call without autograd (a block, not a decorator: warnings name the caller)
        _check_inputs(conds, num_steps, seeds, quality_target, n_trials, budget)
        if len(conds) * len(seeds) < TINY_CALIBRATION:
            warnings.warn(f"calibrating on {len(conds) * len(seeds)} sample(s) ({len(conds)} prompts x "
                          f"{len(seeds)} seeds): "
                          "its plan meets the target on them, with no error bars, and may not hold on other prompts; "
                          f"use at least {TINY_CALIBRATION} (the shipped profile uses 24)", stacklevel=2)
        if per_prompt and probe_steps is not None:
            raise CalibrationError("per_prompt=True fits the online controller on every step's divergence; "
                                   "leave probe_steps=None")
        store = store if isinstance(store, ProfileStore) else ProfileStore(store)
        metric = metric or pair.metric or LatentStructure()
        metric_name = getattr(metric, "name", type(metric).__name__)
        solver = _sampler(sampler, shift)
        shift = solver.shift
        signature = solver.signature(num_steps)
        fp = fingerprint(pair)
        key = _calibration_key(conds, seeds, quality_target, metric_name, search_steps)
        name = study_name or safe_key(f"{fp}__{signature}__{key}")
        # Where results go is checked before any model call: the profile store is writable, and the
        # study opens (folder, driver, write access). The worker that creates the study samples with a
        # fixed seed (reproducible); each worker that joins it gets a seed of its own (make_study).
        if save or storage is None:
            store.check_writable()
        study = make_study(storage or default_storage(store), name, seed=0)
        small_cost = _small_cost(pair, conds, seeds, shape)
        probe_passes = 1.0 + small_cost * (len(probe_steps) if probe_steps is not None else num_steps) / num_steps
        if budget is not None and budget <= probe_passes:  # said before the probe spends it
            raise CalibrationError(
                f"budget={budget:g} Large passes per sample cannot pay for the probe alone ({probe_passes:.2f}: Large "
                f"on every step, Small at {small_cost:.2f} of a Large call on the probed steps), let alone a "
                f"candidate; give budget >= {probe_passes + 1:.1f} (the default is {DEFAULT_BUDGET:g}) or budget=None")
        curve, reference = run_probe(pair, conds, num_steps, seeds, shift, shape, probe_steps, progress, solver)
        proposal = (detector or ChangePointDetector()).fit(curve).predict()
        ledger = Ledger(len(reference.final), num_steps, budget)
        with ledger.phase("probe"):
            ledger.charge(curve.cost["large_calls"] + curve.cost["small_calls"] * small_cost, len(reference.final))
        guided = guidance_interval and guidance_of(pair) not in (None, 1.0)
        left = 0.0 if budget is None else max(0.0, budget - ledger.passes)
        # Kept from the search for what follows it: per-prompt windows (half of it also pays the guidance
        # interval), or the guidance interval alone.
        ledger.reserve = PER_PROMPT_SHARE * left if per_prompt else GUIDANCE_SHARE * left if guided else 0.0
        evaluator = Evaluator(pair, reference, metric, small_cost, ledger=ledger, seeds=len(seeds))
        search = StepSearch(evaluator, shift)
        search.curve = curve
        study = refine(search, proposal, quality_target, n_trials, None, name, progress, search_steps=search_steps,
                       study=study)
        profile = _profile(pair, fp, signature, num_steps, shift, curve, proposal, study, search, quality_target,
                           metric_name, conds, seeds, name)
        if guided:
            ledger.reserve = ledger.reserve / 2 if per_prompt else 0.0  # guidance: its share and what the search left
            intervals = guidance_intervals(search, profile, quality_target)
            profile = dataclasses.replace(profile, guidance=intervals,
                                          cost=dataclasses.replace(profile.cost, **spending(search)))
        if per_prompt:
            profile = with_per_prompt(profile, search, study, curve, reference, len(conds), len(seeds),
                                       quality_target, detector or ChangePointDetector(), progress)
        if profile.note:
            warnings.warn(profile.note, stacklevel=2)
        if progress:
            print(profile.decision)
        if save and (_finished_here(study) or not store.path_for(fp, signature).exists()):
            store.save(profile, force=force)
        return profile


def _sampler(sampler: Any, shift: float) -> Sampler:
    try:
        return sampler_for(sampler, shift)
    except (ValueError, SigmaGridError) as err:
        raise CalibrationError(f"sampler: {err}") from err


def _small_cost(pair: ModelPair, conds: Sequence[Mapping[str, Any]], seeds: Sequence[int],
                shape: Sequence[int] | None) -> float:
    """Small's cost per call relative to Large's, in FLOPs on the first calibration sample (one dry call each,
    before the probe): what the budget check and the ledger price Small at. The pair is checked first on the
    probe's own batch (the probe's check is then a cache hit), so a wrong shape or conditioning is named with
    its fix rather than met inside a FLOP count."""
    noise, cond = batch_conditions(conds, seeds, latent_shape(pair, shape), model_device(pair))
    pair.check(noise, **cond)
    return small_cost_ratio(pair, noise[:1], **first_row(cond, noise.shape[0]))


def _finished_here(study: optuna.Study) -> bool:
    """True for the worker that finds a shared study done (no trial still running in another worker,
    so its profile counts every trial), and for a re-run that found the study already finished."""
    return not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))


def _profile(pair: ModelPair, fp: str, signature: str, num_steps: int, shift: float, curve: DivergenceCurve,
             proposal: Boundaries | None, study: optuna.Study, search: StepSearch, target: float,
             metric_name: str, conds: Sequence[Any], seeds: Sequence[int], study_name: str) -> Profile:
    """The profile: the best window on the full grid (what a caller who fixes ``num_steps`` runs)
    and, from the step search, the recommended plan and every measured candidate."""
    start, stop, quality, cost = best_window(study, target, num_steps)
    window = boundaries_from_steps(curve.grid, start, stop)
    plan = best_plan(study, target, num_steps)
    plan_window = boundaries_from_steps(search.at(plan.steps).reference.grid, plan.start, plan.stop)
    note = ""
    if plan.is_large_only and plan.steps == num_steps:
        tried = [p.quality for p in measured_plans(study)
                 if (p.steps, p.start, p.stop) != (num_steps, 0, 0) and math.isfinite(p.quality)]
        best = f"best measured: {max(tried):.4f}" if tried else "none was measured on every sample"
        ledger = search.ledger
        if ledger.budget is not None and (ledger.skipped or search.trials_not_run):
            note = (f"the budget of {ledger.budget:g} Large passes per sample ran out before a plan cheaper than Large "
                    f"with all {num_steps} steps met quality_target={target} ({best}); the profile runs Large only. "
                    f"A larger budget explores more (e.g. budget={ledger.budget + 2:g}, --budget "
                    f"{ledger.budget + 2:g}; budget=None: no limit).")
        else:
            note = (f"no plan cheaper than Large with all {num_steps} steps met quality_target={target} ({best}); "
                    "the profile runs Large only. Lower the target or give more trials.")
    small_cost = search.full.small_cost
    probe_cost = curve.cost["large_calls"] + curve.cost["small_calls"] * small_cost
    frontier = tuple(dataclasses.replace(p, steps=num_steps if p.steps == -1 else p.steps)
                     for p in measured_plans(study) if math.isfinite(p.quality))
    return Profile(
        pair_fingerprint=fp, sampler=signature, num_steps=num_steps, shift=float(shift),
        sigma_in=window.sigma_in, sigma_out=window.sigma_out, small_steps=tuple(range(start, stop)),
        plan=dataclasses.replace(plan, sigma_in=plan_window.sigma_in, sigma_out=plan_window.sigma_out),
        frontier=frontier,
        pair_name=pair.name,
        proposal=None if proposal is None else Proposal(
            proposal.sigma_in, proposal.sigma_out, proposal.start, proposal.stop,
            proposal.score if math.isfinite(proposal.score) else None),
        curve=CurveSummary(tuple(curve.sigmas.tolist()), tuple(curve.steps.tolist()),
                           *(tuple(curve.mean(kind).tolist()) for kind in ("rel_l2", "cosine", "weighted"))),
        quality=Quality(metric_name, target, quality),
        cost=Cost(fraction_of_large=cost, small_cost_ratio=small_cost, large_calls=num_steps - (stop - start),
                  small_calls=stop - start,
                  probe_large_equivalents_per_sample=probe_cost, **spending(search)),
        calibration=CalibrationInfo(num_conds=len(conds), seeds=tuple(int(s) for s in seeds), n_trials=_trials_done(study),
                                    study_name=study_name, samples=int(curve.cost["samples"]),
                                    models_fingerprint=models_fingerprint(pair), guidance_scale=guidance_of(pair)),
        note=note,
    )


__all__ = ["DEFAULT_BUDGET", "DEFAULT_QUALITY_TARGET", "DEFAULT_TRIALS", "calibrate"]
