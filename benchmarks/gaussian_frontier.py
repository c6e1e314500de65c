"""When does a one-window blend beat Large with fewer steps? Exact Gaussian and Gaussian-mixture
flows, where both velocities are known in closed form (the paper design of issue #18).

    python benchmarks/gaussian_frontier.py --out docs/pair_design        # the table; about a minute of CPU

Data ``x0 ~ sum_j w_j N(mu_j, diag((1 - share) * lam))`` with ``lam_k`` proportional to ``k^-alpha``
(a power-law spectrum over ``--dims`` components, mean variance 0.25: detail at many scales) and the
mode means ``mu_j ~ N(0, share * diag(lam))`` drawn once (``--modes 1`` is the plain Gaussian, whose
mean is 0). Large is the exact velocity ``E[noise - x0 | x_sigma]``; Small is the exact velocity of a
misspecified data model: the variance of the coarsest ``--coarse`` components times ``mc`` and of the
finest ``--fine`` times ``mf``, optionally its mode means moved by ``mean_error`` (relative). Small
costs ``--small-cost`` of a Large call. Both run through the package's probe and evaluator
(:func:`adaptive.probing.run_probe`, :class:`adaptive.calibration.Evaluator`, :class:`StepSearch`) on
``sigmas(steps, shift)``; quality is the relative L2 to Large with all steps on the same noise.

A blend "wins" when it is closer to Large-with-all-steps than Large alone with the steps its compute
buys (``floor(cost * steps)``, the rule of ``benchmarks/frontier.py``). Per case the JSON keeps Small's
divergence curve along Large's trajectory, its mean in the middle (sigma in [0.3, 0.7]), Large with
k steps for every k, and every window's relative L2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from adaptive.calibration import Evaluator, StepSearch
from adaptive.pair import ModelPair
from adaptive.probing import run_probe
from adaptive.toy.exact import MixtureVelocity, OneMinusRelL2, power_spectrum

MIDDLE = (0.3, 0.7)


@dataclass(frozen=True)
class Case:
    """One data model and one Small: ``mc``/``mf`` scale Small's coarse/fine variances."""

    alpha: float = 1.5
    mc: float = 1.0
    mf: float = 1.0
    modes: int = 1
    share: float = 0.0  # of each component's variance that lies between the mode means
    mean_error: float = 0.0  # Small's mode means are mu + mean_error * |mu| * (a fixed random direction)

    @property
    def label(self) -> str:
        data = "gaussian" if self.modes == 1 else f"mixture {self.modes} modes, share {self.share:g}"
        small = f"mc {self.mc:g}, mf {self.mf:g}" + (f", mean error {self.mean_error:g}" if self.mean_error else "")
        return f"{data}, alpha {self.alpha:g}; Small {small}"


def misspecified(lam: torch.Tensor, mc: float, mf: float, coarse: int, fine: int) -> torch.Tensor:
    """``lam`` with the coarsest ``coarse`` components times ``mc`` and the finest ``fine`` times ``mf``."""
    wrong = lam.clone()
    wrong[:coarse] *= mc
    if fine:
        wrong[-fine:] *= mf
    return wrong


def case_fields(case: Case, dims: int, coarse: int, fine: int, seed: int = 0) -> tuple[MixtureVelocity, MixtureVelocity]:
    """(Large, Small) exact velocities of ``case``."""
    lam = power_spectrum(dims, case.alpha)
    gen = torch.Generator().manual_seed(seed)
    if case.modes == 1:
        means = torch.zeros(1, dims, dtype=torch.float64)
        within = lam
    else:
        means = torch.randn(case.modes, dims, generator=gen, dtype=torch.float64) * (case.share * lam).sqrt()
        within = (1 - case.share) * lam
    direction = torch.randn(case.modes, dims, generator=gen, dtype=torch.float64)
    direction = direction / direction.norm(dim=1, keepdim=True)
    small_means = means + case.mean_error * means.norm(dim=1, keepdim=True).clamp_min(0.5) * direction \
        if case.mean_error else means
    large = MixtureVelocity(within, means)
    small = MixtureVelocity(misspecified(within, case.mc, case.mf, coarse, fine), small_means)
    return large, small


@dataclass(frozen=True)
class CaseResult:
    """What one case measured; ``large_rel_l2[k - 1]`` is Large with k steps, ``windows`` are
    ``(start, stop, cost, rel_l2)`` for every one-window blend of the full grid."""

    case: Case
    middle_divergence: float
    divergence_sigmas: list[float]
    divergence: list[float]
    large_rel_l2: list[float]
    windows: list[tuple[int, int, float, float]]
    wins: int
    blends: int
    large_third: float  # Large with steps // 3 steps vs all steps
    best_matched: dict[str, float]  # the best blend and Large at a compute of about 0.6


def wins(large_rel_l2: list[float], windows: list[tuple[int, int, float, float]], steps: int) -> tuple[int, int]:
    """(blends better than Large with floor(cost * steps) steps, blends affording at least one step)."""
    won = total = 0
    for _, _, cost, err in windows:
        k = int(math.floor(cost * steps + 1e-9))
        if k < 1:
            continue
        total += 1
        won += err < large_rel_l2[k - 1] - 1e-12
    return won, total


def measure(case: Case, dims: int = 512, samples: int = 64, steps: int = 30, shift: float = 3.0,
            small_cost: float = 0.1, coarse: int = 8, fine: int = 384) -> CaseResult:
    """Probe, Large at every step count and every one-window blend, through the package's evaluator."""
    large, small = case_fields(case, dims, coarse, fine)
    pair = ModelPair(large, small, sample_shape=(dims,), metric=OneMinusRelL2())
    curve, reference = run_probe(pair, [{}], steps, list(range(samples)), shift, progress=False)
    search = StepSearch(Evaluator(pair, reference, OneMinusRelL2(), small_cost), shift)
    large_err = [float(1 - search.at(k).quality(0, 0)) for k in range(1, steps + 1)]
    full = search.full
    windows = [(a, b, full.cost(a, b), float(1 - full.quality(a, b)))
               for a in range(steps) for b in range(a + 1, steps + 1)]
    won, total = wins(large_err, windows, steps)
    sig, div = curve.sigmas, curve.mean()
    middle = (sig >= MIDDLE[0]) & (sig <= MIDDLE[1])
    target = round(0.6 * steps)  # the blends whose compute buys 60% of Large's steps (18 of 30)
    bought = [w for w in windows if int(math.floor(w[2] * steps + 1e-9)) == target]
    best = min(bought, key=lambda w: w[3]) if bought else None
    matched = {} if best is None else {"large_steps": target, "large": large_err[target - 1], "blend": best[3],
                                       "start": best[0], "stop": best[1]}
    return CaseResult(case, float(div[middle].mean()), [round(float(s), 4) for s in sig],
                      [round(float(d), 5) for d in div], [round(e, 6) for e in large_err],
                      [(a, b, round(c, 5), round(e, 6)) for a, b, c, e in windows], won, total,
                      large_err[max(1, steps // 3) - 1], matched)


DEFAULT_CASES = [
    *(Case(alpha, mc, mf) for alpha in (1.0, 1.5, 2.5) for mc, mf in ((1.0, 1.0), (1.1, 0.85), (1.2, 0.7),
                                                                     (1.5, 0.5), (3.0, 0.2))),
    *(Case(1.5, mc, mf, modes, share) for modes, share in ((8, 0.5), (8, 0.9), (64, 0.9))
      for mc, mf in ((1.0, 1.0), (1.2, 0.7), (1.5, 0.5))),
    Case(1.5, 1.0, 1.0, 8, 0.9, mean_error=0.1),
    Case(1.5, 1.2, 0.7, 8, 0.9, mean_error=0.1),
]


def table(results: list[CaseResult], steps: int) -> str:
    third = max(1, steps // 3)
    lines = [f"| data | Small (mc, mf) | Small's middle divergence (sigma {MIDDLE[0]}-{MIDDLE[1]}) | wins | "
             f"best blend vs Large at 18 of 30 Large calls | Large-{third} vs Large-{steps} |",
             "|---|---|---:|---:|---|---:|"]
    for r in results:
        c = r.case
        data = f"Gaussian, alpha {c.alpha:g}" if c.modes == 1 else \
            f"{c.modes}-mode mixture ({c.share:g} between modes), alpha {c.alpha:g}"
        small = f"{c.mc:g}, {c.mf:g}" + (f"; means off by {c.mean_error:g}" if c.mean_error else "")
        m = r.best_matched
        best = f"{m['blend']:.3f} (Small {m['start']}-{m['stop'] - 1}) vs {m['large']:.3f}" if m else "-"
        lines.append(f"| {data} | {small} | {r.middle_divergence:.3f} | {r.wins} of {r.blends} | {best} | "
                     f"{r.large_third:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[CaseResult]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", type=int, default=512)
    parser.add_argument("--samples", type=int, default=64, help="noise seeds 0..samples-1")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--shift", type=float, default=3.0)
    parser.add_argument("--small-cost", type=float, default=0.1)
    parser.add_argument("--coarse", type=int, default=8, help="components Small gets wrong by mc (coarsest)")
    parser.add_argument("--fine", type=int, default=384, help="components Small gets wrong by mf (finest)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write gaussian_frontier.json and .md here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started, cpu = time.perf_counter(), time.process_time()
    results = []
    for case in DEFAULT_CASES:
        results.append(measure(case, args.dims, args.samples, args.steps, args.shift, args.small_cost,
                               args.coarse, args.fine))
        print(f"{case.label}: middle divergence {results[-1].middle_divergence:.3f}, "
              f"wins {results[-1].wins} of {results[-1].blends}", flush=True)
    command = "python benchmarks/gaussian_frontier.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = table(results, args.steps)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        record = {"command": command.strip(), "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1),
                  "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                  "results": [asdict(r) for r in results]}
        (args.out / "gaussian_frontier.json").write_text(json.dumps(record) + "\n")
        (args.out / "gaussian_frontier.md").write_text(
            f"`{command.strip()}` ({seconds:.0f} s wall, {cpu:.0f} s of CPU, {args.threads} thread(s))\n\n{text}\n")
    return results


if __name__ == "__main__":
    main()
