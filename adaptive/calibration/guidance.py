"""Calibration's guidance phase: where classifier-free guidance pays on the calibrated plans.

For a guided pair (:meth:`~adaptive.ModelPair.guided`), :func:`guidance_intervals` searches the
sigma interval where guidance runs — one conditional call per step outside it instead of two — on
the recommended plan (its step count and Small window) and on the full grid's window, the way
every boundary is found (:mod:`adaptive.calibration.segments`: bisection of the edges and Optuna
trials judged on the final sample against guided Large with all steps; without the probe, which
buys nothing here), within the calibration budget: a guided pair keeps ``GUIDANCE_SHARE`` of
what the probe leaves for it (with per-prompt windows, half of their share), and trials restart
from Large's states the step-count search already computed. Each interval records the plan's quality and cost with it and what Large
without guidance reaches at that compute.
"""

from __future__ import annotations

import torch

from adaptive.calibration.evaluation import StepSearch
from adaptive.calibration.segments import GUIDANCE, _refine, _Runs, equal_compute
from adaptive.detect import boundaries_from_steps
from adaptive.pool import Pool
from adaptive.profiles import Profile, guidance_of
from adaptive.records import GuidanceInterval
from adaptive.schedule import Schedule

GUIDANCE_TRIALS = 12  # Optuna trials per plan (the bisection of the two edges takes about 2 log2(steps))


@torch.no_grad()
def guidance_intervals(search: StepSearch, profile: Profile, target: float, n_trials: int = GUIDANCE_TRIALS
                       ) -> tuple[GuidanceInterval, ...]:
    """The guidance intervals of ``profile``'s recommended plan and full-grid window that keep
    ``target`` (none for an unguided pair, or where guidance is needed on every step)."""
    full = search.full
    if guidance_of(full.pair) in (None, 1.0):  # scale 1 is no guidance: nothing to skip
        return ()
    pool = Pool.of(full.pair, costs={"large": 1.0, "small": full.small_cost})
    ledger = search.ledger
    runs = _Runs(pool, full.reference.states[0], full.reference.cond, full.metric, ledger=ledger,
                 solver=search.sampler)
    runs.target_final = full.target
    caller = runs.grid(profile.num_steps, search.shift)
    reference = Schedule.large_only()
    runs.keep(caller, reference.step_models(caller), list(full.reference.states),  # free
              [v for v in full.reference.velocities or () if v is not None])
    reference_cost = pool.cost(reference, caller)
    plans = {profile.steps: profile.plan_schedule(), profile.num_steps: profile.schedule()}
    rows = list(range(len(full.target)))
    for steps in plans:  # Large's states the search already computed on these grids: trials restart from them
        path = search.at(steps).path
        grid = runs.grid(steps, search.shift)
        if path.calls_to(steps, rows) == 0 and (tuple(grid), ("large",) * steps) not in runs.cached:
            slopes = [] if path.stateless else [v for v in path.velocities if v is not None]
            runs.keep(grid, ("large",) * steps, [path.at(i, rows) for i in range(steps + 1)], slopes)
    out = []
    with ledger.phase("guidance"):
        for steps, plan in plans.items():
            grid = runs.grid(steps, search.shift)
            # No probe: guided and conditional velocities of a real model differ by more than the probe's
            # threshold on nearly every step (on the embedded pair it proposed the whole grid), so the
            # bisection of the edges starts from guidance everywhere and the budget goes to final-sample
            # trials. find_plan keeps the probe (it finds an analytic interval exactly).
            if not runs.affords(plan, grid):
                ledger.skip()
                continue
            runs.trajectory(plan, grid)  # the plan's states: trials restart from where they first differ
            guided, (start, stop), _, quality = _refine(runs, plan, grid, GUIDANCE, (0, steps), target, n_trials,
                                                        None, None, 0)
            if quality is None:  # guidance pays on every step (or the budget ran out first)
                continue
            cost = pool.cost(guided, grid)
            bounds = boundaries_from_steps(grid, start, stop)
            alternative = equal_compute(runs, pool, reference, cost, caller, search.shift,
                                        options=("no_guidance",)).get("no_guidance", {})
            if not alternative:  # the budget is spent: the comparison is not made, and that is said
                ledger.skip()
            out.append(GuidanceInterval(steps, start, stop, bounds.sigma_in, bounds.sigma_out, quality,
                                        cost / reference_cost, _int(alternative.get("steps")),
                                        alternative.get("quality")))
    return tuple(out)


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


__all__ = ["GUIDANCE_TRIALS", "guidance_intervals"]
