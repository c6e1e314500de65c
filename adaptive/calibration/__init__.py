"""Automatic stage boundaries: probe -> change-point proposal -> Optuna refinement -> Profile.

The refinement judges what matters, the *final* sample: each trial is a Large-Small-Large run whose
quality is measured against Large-only output for the same noise and prompt. Trials restart from the
cached Large state at the window's first step, so the shared prefix is never recomputed. The study
is an ordinary Optuna study (``create_study(storage=..., load_if_exists=True)``), so several workers
can share it through SQLite, PostgreSQL or a JournalFile storage.

The package is split by idea: :mod:`.evaluation` judges candidates on the final sample,
:mod:`.search` runs the Optuna study over them, :mod:`.per_prompt` chooses a window per prompt and
fits the online controller, and :mod:`.pipeline` ties them into :func:`calibrate`;
:mod:`.segments` finds plans over a pool of denoisers (guidance interval, Wan 2.2 experts, several
model windows) with the same probe, proposal and Optuna refinement. Every public
name is importable from ``adaptive.calibration``.

Example:
    >>> import tempfile
    >>> from adaptive import ModelPair, calibrate
    >>> pair = ModelPair(lambda x, s: x, lambda x, s: x)           # Small == Large
    >>> profile = calibrate(pair, [{}], num_steps=8, seeds=[0], shape=(4,), n_trials=4,
    ...                     store=tempfile.mkdtemp(), progress=False)
    >>> plan = profile.plan                                          # Small on every step of its grid
    >>> (plan.start, plan.stop == plan.steps, plan.sigma_in, plan.sigma_out)
    (0, True, 1.0, 0.0)
"""

from adaptive.calibration.evaluation import Evaluator, Ledger, PlanQuality, StepSearch, small_cost_ratio
from adaptive.calibration.per_prompt import with_per_prompt
from adaptive.calibration.pipeline import DEFAULT_BUDGET, DEFAULT_QUALITY_TARGET, DEFAULT_TRIALS, calibrate
from adaptive.calibration.segments import GUIDANCE, Axis, FoundPlan, find_plan, window
from adaptive.calibration.search import (BUDGET_POLL_SECONDS, Plan, best_plan, best_window, default_storage,
                                         make_study, measured_plans, refine, spending, sweep, windows_table)

__all__ = ["Axis", "FoundPlan", "GUIDANCE", "find_plan", "window", "BUDGET_POLL_SECONDS", "DEFAULT_BUDGET", "DEFAULT_QUALITY_TARGET", "DEFAULT_TRIALS", "Evaluator", "Ledger",
           "Plan", "PlanQuality", "StepSearch", "best_plan", "best_window", "calibrate",
           "default_storage", "make_study", "measured_plans", "refine", "small_cost_ratio", "spending", "sweep", "windows_table",
           "with_per_prompt"]
