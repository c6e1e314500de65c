"""A pool of denoisers with a cost per call: what a plan runs.

A plan is a :class:`~adaptive.schedule.Schedule`: sigma segments, each naming a member of the pool.
The two-model plans of FlowBlending are the special case ``{large, small}``; a pool may also hold a
guided model's conditional-only variant (``"large:cond"``: guidance skipped, one call instead of
two, :func:`~adaptive.schedule.unguided`), Wan 2.2's two experts (``"high"``, ``"low"``) or a third
size (``"medium"``). Every sampler, the switch and the drop-in run such a plan unchanged (they
dispatch by name); :mod:`adaptive.calibration.segments` finds one.

Costs are per call, in units of one call of the pool's reference model (``"large"``, else
``"high"``) with its guidance: a guided Large call costs 1, its conditional-only variant 0.5.

Example:
    >>> import torch
    >>> from adaptive import ModelPair, Schedule, sample, sigmas
    >>> pair = ModelPair(lambda x, s, c: -x + c, lambda x, s, c: -x).guided(3.0, {"c": torch.zeros(1, 1)})
    >>> pool = Pool.of(pair, costs={"large": 1.0, "small": 0.25})
    >>> sorted(pool), pool.costs["large:cond"], pool.costs["small:cond"]
    (['large', 'large:cond', 'small', 'small:cond'], 0.5, 0.125)
    >>> Pool.of({"large": pair.large, "small": lambda x, s, c: -x}, costs={"large": 1, "small": 0.25}).costs["small:cond"]
    0.25
    >>> plan = Schedule.lsl(0.8, 0.3).guided_within(0.9, 0.2)
    >>> pool.cost(plan, sigmas(10))
    4.75
    >>> sample(pool, torch.ones(1, 1), sigmas(10), plan, c=torch.ones(1, 1)).shape
    torch.Size([1, 1])
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from adaptive.denoisers import Denoiser, as_denoiser, first_row, with_unguided
from adaptive.errors import PairMismatchError
from adaptive.metering import count_flops
from adaptive.pair import ModelPair, check_models
from adaptive.schedule import Schedule, base_of, is_unguided, unguided

REFERENCE_NAMES = ("large", "high")  # the model whose guided call costs 1


class Pool(Mapping[str, Denoiser]):
    """Named denoisers and their cost per call; a mapping of names to denoisers, so anything that
    takes ``models`` (samplers, the switch) takes a pool.

    Build one with :meth:`of`. ``costs`` must name every model, each a positive finite number.
    """

    def __init__(self, models: Mapping[str, Any], costs: Mapping[str, float]) -> None:
        if not models:
            raise PairMismatchError("a pool needs at least one model, e.g. Pool.of({'large': large, 'small': small}, "
                                    "costs={'large': 1.0, 'small': 0.1})")
        self.models: dict[str, Denoiser] = {k: as_denoiser(v) for k, v in models.items()}
        missing = sorted(set(self.models) - set(costs))
        if missing:
            raise PairMismatchError(f"no cost per call for {missing}; give costs={{name: cost}} for every model "
                                    "(or Pool.of(..., x=latent) to measure them in FLOPs)")
        bad = {k: v for k, v in costs.items()
               if isinstance(v, bool) or not (isinstance(v, numbers.Real) and math.isfinite(v) and v > 0)}
        if bad:
            raise PairMismatchError(f"costs must be positive finite numbers, got {bad}")
        self.costs: dict[str, float] = {k: float(costs[k]) for k in self.models}
        dearer = {k: (c, self.costs[base_of(k)]) for k, c in self.costs.items()
                  if is_unguided(k) and base_of(k) in self.costs and c > self.costs[base_of(k)]}
        if dearer:
            raise PairMismatchError("a conditional-only variant costs at most its guided model (it makes one of its "
                                    "two calls), got " + ", ".join(f"{k} {c:g} > {base_of(k)} {b:g}"
                                                                   for k, (c, b) in dearer.items()))

    @classmethod
    def of(cls, models: ModelPair | Mapping[str, Any], costs: Mapping[str, float] | None = None,
           x: torch.Tensor | None = None, **cond: Any) -> Pool:
        """The pool of ``models`` (a :class:`ModelPair` or a mapping), each model joined by its
        conditional-only variant (``"large:cond"``): half the call's cost for a guided model, the model
        itself for one without guidance (a distilled Small: its one call is already conditional).

        ``costs`` gives the cost per call of the models by name (the variants' are derived); without
        it, costs are measured in FLOPs on one row of ``x`` (with ``cond``) relative to the reference
        model (``"large"``, else ``"high"``).
        """
        given = dict(models.models if isinstance(models, ModelPair) else models)
        named = {k: as_denoiser(v) for k, v in given.items()}
        if costs is None:
            if x is None:
                raise PairMismatchError("give costs={name: cost per call} or x= (a latent batch) to measure "
                                        "them in FLOPs")
            costs = _measured(named, x, cond)
        pool = with_unguided(named, plain=True)  # an unguided model answers for its variant as it is
        full: dict[str, float] = {}
        for name, model in pool.items():
            base = base_of(name)
            if name not in costs and base not in costs:
                raise PairMismatchError(f"no cost per call for {name!r}; costs name {sorted(costs)}")
            given_cost = costs[name] if name in costs else costs[base]
            if isinstance(given_cost, bool) or not isinstance(given_cost, numbers.Real):
                raise PairMismatchError(f"costs must be positive finite numbers, got {name!r}: {given_cost!r}")
            skips_a_call = model is not named.get(base)  # a guided model's variant: one call of two
            full[name] = float(costs[name]) if name in costs else float(costs[base]) / (2 if skips_a_call else 1)
        return cls(pool, full)

    def __getitem__(self, name: str) -> Denoiser:
        return self.models[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)

    def __repr__(self) -> str:
        return "Pool(" + ", ".join(f"{k}: {c:.3g}" for k, c in self.costs.items()) + ")"

    @property
    def reference(self) -> str:
        """The model the quality target is met against when it runs every step (``"large"``, else ``"high"``)."""
        for name in REFERENCE_NAMES:
            if name in self.models:
                return name
        raise PairMismatchError(f"a pool needs a 'large' (or Wan 2.2's 'high') model; it has {sorted(self.models)}")

    def cost(self, plan: Schedule, sigmas: torch.Tensor | Sequence[float]) -> float:
        """What ``plan`` costs on this grid, in calls of the reference model (its guidance included)."""
        plan.check_models(self.models)
        return plan.cost(sigmas, self.costs)

    def check(self, x: torch.Tensor, **cond: Any) -> None:
        """One dry call of every member on ``x[:1]`` (:func:`adaptive.pair.check_models`): a wrong latent
        shape or conditioning is named with its fix before any search runs."""
        check_models(self.models, x, cond)

    def guided(self, name: str) -> bool:
        """Whether ``name`` has guidance to skip: a conditional-only variant that costs less."""
        variant = unguided(name)
        return not is_unguided(name) and variant in self.models and self.costs[variant] < self.costs[name]


def _measured(models: Mapping[str, Denoiser], x: torch.Tensor, cond: Mapping[str, Any]) -> dict[str, float]:
    """FLOPs per call of one row, relative to the reference model's."""
    row, row_cond = x[:1], first_row(cond, x.shape[0])
    flops = {k: count_flops(m, row, **row_cond) for k, m in models.items()}
    ref = next((flops[n] for n in REFERENCE_NAMES if flops.get(n)), 0) or max(flops.values(), default=0)
    if not ref:
        raise PairMismatchError("the models' FLOPs count is 0 (plain functions?); give costs={name: cost per call}")
    return {k: max(v, 1) / ref for k, v in flops.items()}


__all__ = ["Pool", "REFERENCE_NAMES"]
