"""The on-disk store of calibrated profiles, keyed by pair fingerprint and sampler.

:class:`ProfileStore` keeps :class:`~adaptive.profiles.Profile` records as JSON files in a directory
(``$ADAPTIVE_PROFILES`` or ``./profiles``) with atomic, crash-safe writes; a file for another pair or
sampler is never used silently, a corrupt one is reported with its path, and a weaker calibration
never silently replaces a stored one (:func:`weaker_than`).

Example:
    >>> import tempfile
    >>> p = Profile(pair_fingerprint="abc", sampler="euler-30-shift3", num_steps=30, shift=3.0,
    ...             sigma_in=0.8, sigma_out=0.3)
    >>> store = ProfileStore(tempfile.mkdtemp())
    >>> path = store.save(p)
    >>> store.get("abc", "euler-30-shift3") == p
    True
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

from adaptive.errors import ProfileError
from adaptive.pair import ModelPair
from adaptive.profiles import (ENV_VAR, Profile, _gap, _grid, _umask, atomic_write, fingerprint,
                               sampler_signature)
from adaptive.records import CalibrationInfo, Cost


def _keep_bytes(path: Path, to: Path) -> Path:
    """Copy ``path`` byte for byte to ``to``, atomically (a temp file beside it, then rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{to.name}.", dir=to.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(path.read_bytes())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600: a kept copy stays as readable as the store
        os.replace(tmp, to)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return to


def weaker_than(new: Profile, old: Profile) -> str | None:
    """Why ``new`` should not silently replace ``old`` (None when it may): it lacks parts the stored
    one has (per-prompt windows, an online controller: a plain re-calibration must not delete them),
    it ran fewer trials, or, judged by the same metric and target, its recommended plan costs more.

    Example:
        >>> old = Profile(pair_fingerprint="f", sampler="euler-30-shift3", num_steps=30, shift=3.0, sigma_in=0.8,
        ...               sigma_out=0.4, calibration=CalibrationInfo(n_trials=60), cost=Cost(fraction_of_large=0.6))
        >>> weaker_than(dataclasses.replace(old, calibration=CalibrationInfo(n_trials=0)), old)
        'it ran 0 trials, the stored one 60'
        >>> weaker_than(old, old) is None
        True
    """
    lost = lost_parts(new, old)
    if lost:
        return f"it has no {' and no '.join(lost)}, the stored one has"
    trials = (new.calibration.n_trials or 0, old.calibration.n_trials or 0)
    if trials[0] < trials[1]:
        return f"it ran {trials[0]} trials, the stored one {trials[1]}"
    same = new.quality.metric == old.quality.metric and new.quality.target == old.quality.target
    costs = [_plan_cost(p) for p in (new, old)]
    if same and costs[0] > costs[1] + 1e-9:
        return f"its plan costs {costs[0]:.3f} of Large only, the stored one's {costs[1]:.3f}"
    return None


def lost_parts(new: Profile, old: Profile) -> list[str]:
    """The parts ``old`` has and ``new`` lacks: per-prompt windows, an online controller."""
    lost = []
    if old.per_prompt is not None and old.per_prompt.windows and (new.per_prompt is None or not new.per_prompt.windows):
        lost.append(f"per-prompt windows ({len(old.per_prompt.windows)} prompts)")
    if old.controller is not None and new.controller is None:
        lost.append("online controller")
    return lost


def _plan_cost(profile: Profile) -> float:
    """The recommended plan's compute (the full-grid window's before step search; 1.0 if unknown),
    with its guidance interval when calibration found one."""
    interval = profile.guidance_for(profile.steps)
    if interval is not None:
        return interval.cost
    if profile.plan is not None:
        return profile.plan.cost
    return 1.0 if profile.cost.fraction_of_large is None else profile.cost.fraction_of_large


_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def safe_key(text: str) -> str:
    """A file-name-safe form of a fingerprint or study name: it can never leave the store directory."""
    cleaned = _SAFE.sub("_", str(text)).strip("._") or "_"
    return cleaned[:120]


class ProfileStore:
    """Profiles as JSON files in ``root`` (default ``$ADAPTIVE_PROFILES`` or ``./profiles``)."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root if root is not None else os.environ.get(ENV_VAR, "profiles"))
        if self.root.exists() and not self.root.is_dir():
            given = "the store" if root is not None else f"${ENV_VAR}"
            raise ProfileError(f"{given} is {self.root}, a file: a profile store is a folder of profiles; point "
                               f"{given} at the folder that holds it (e.g. {self.root.parent})")

    def check_writable(self) -> None:
        """Raise :class:`~adaptive.errors.StorageError` unless profiles can be written here (the folder
        exists or can be made, and a file can be created in it): checked before calibrating, so a
        read-only store never costs a whole study."""
        from adaptive.errors import StorageError

        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=self.root)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise StorageError(f"the profile store {self.root} is not writable ({err.strerror}); choose another "
                               f"folder (store=..., `--store`, ${ENV_VAR}) or fix its permissions") from None

    def path_for(self, pair_fingerprint: str, sampler: str) -> Path:
        return self.root / f"{safe_key(pair_fingerprint)}__{safe_key(sampler)}.json"

    def save(self, profile: Profile, force: bool = False) -> Path:
        """Write ``profile`` atomically; never lose a good one. The profile stored before is kept as
        ``<name>.json.previous``; one that the new profile would weaken (:func:`weaker_than`: parts it
        lacks, fewer trials, or a costlier plan for the same metric and target) is not replaced unless
        ``force``: the new one goes to ``<name>.json.rejected`` and a warning says why. A profile with
        per-prompt windows or a controller that ``force`` replaces by one without is also kept as
        ``<name>.json.per-prompt``, so the last one that had them is never lost (``.previous`` moves on
        with the next save). Returns the path of the stored profile."""
        path = self.path_for(profile.pair_fingerprint, profile.sampler)
        try:
            old = Profile.load(path) if path.exists() else None
        except ProfileError as err:
            old = None  # not a profile this version can run; its bytes are kept as they were, never lost
            kept = _keep_bytes(path, path.with_name(path.name + ".previous"))
            warnings.warn(f"replacing {path}, which does not load ({err}); its bytes are kept in {kept}",
                          stacklevel=2)
        if old is not None:
            why = None if force else weaker_than(profile, old)
            if why is not None:
                rejected = atomic_write(path.with_name(path.name + ".rejected"), profile.to_json())
                warnings.warn(f"kept the stored profile {path}: the new calibration is weaker ({why}); it was written "
                              f"to {rejected}. Replace on purpose with force=True (`flowblend calibrate --force`).",
                              stacklevel=2)
                return path
            _keep_bytes(path, path.with_name(path.name + ".previous"))  # as it was on disk, unknown fields too
            lost = lost_parts(profile, old)
            if lost:
                kept = _keep_bytes(path, path.with_name(path.name + ".per-prompt"))
                warnings.warn(f"replaced {path} (force) by a profile with no {' and no '.join(lost)}; the one that had "
                              f"them is kept in {kept}: copy it back over {path.name} to use them again",
                              stacklevel=2)
        return profile.save(path)

    def get(self, pair_fingerprint: str, sampler: str) -> Profile | None:
        """The exact profile, None if there is none; a corrupt or foreign file raises ProfileError."""
        path = self.path_for(pair_fingerprint, sampler)
        if not path.exists():
            return None
        profile = Profile.load(path)
        if profile.pair_fingerprint != pair_fingerprint or profile.sampler != sampler:
            raise ProfileError(f"{path}: holds a profile for pair {profile.pair_fingerprint} / {profile.sampler}, "
                               "not the one its name says; it was renamed or copied by hand — remove it")
        return profile

    def all(self, pair_fingerprint: str | None = None) -> list[Profile]:
        """Every readable profile in the store (of one pair, given its fingerprint). A corrupt or
        foreign file is skipped with a warning naming its path: one damaged file must not hide every
        other profile."""
        if not self.root.is_dir():
            return []
        pattern = f"{safe_key(pair_fingerprint)}__*.json" if pair_fingerprint is not None else "*__*.json"
        profiles = []
        for path in sorted(self.root.glob(pattern)):
            try:
                profile = Profile.load(path)
            except ProfileError as err:
                warnings.warn(f"skipped {err}", stacklevel=2)
                continue
            if path != self.path_for(profile.pair_fingerprint, profile.sampler):
                warnings.warn(f"skipped {path}: it holds a profile for {profile.pair_fingerprint} / {profile.sampler}, "
                              "not the one its name says (renamed or copied by hand)", stacklevel=2)
                continue
            profiles.append(profile)
        return profiles

    def for_grid(self, pair: ModelPair | str, num_steps: int, shift: float, solver: str = "euler") -> Profile | None:
        """The profile to sample ``pair`` on ``sigmas(num_steps, shift)`` with: :meth:`for_sigmas` of
        that grid (the one look-up every caller uses)."""
        return self.for_sigmas(pair, _grid(num_steps, shift), solver, sampler_signature(solver, num_steps, shift))

    def for_sigmas(self, pair: ModelPair | str, grid: Sequence[float], solver: str = "euler",
                   name: str | None = None) -> Profile | None:
        """The profile to sample ``pair`` with ``solver`` on this sigma grid, found by grid: the stored
        profile whose grid (the one its key names) is ``grid`` to 1e-4; else one calibrated on a
        finer grid whose recommended plan runs on ``grid``; else the nearest stored grid of the pair,
        used through its sigma boundaries with a warning saying so (``name``: how it calls the grid
        asked for); else None. A corrupt or foreign file under a matching key raises ProfileError.

        Example:
            >>> import tempfile
            >>> from adaptive.schedule import sigmas
            >>> store = ProfileStore(tempfile.mkdtemp())
            >>> _ = store.save(Profile(pair_fingerprint="abc", sampler="euler-30-shift3", num_steps=30, shift=3.0,
            ...                        sigma_in=0.8, sigma_out=0.3))
            >>> store.for_sigmas("abc", sigmas(30, 3.0).tolist()).sampler, store.for_sigmas("abc", [1.0, 0.0], "heun")
            ('euler-30-shift3', None)
        """
        fp = pair if isinstance(pair, str) else fingerprint(pair)
        exact = self.get(fp, name) if name is not None and _SIGNATURE.match(name) else None
        if exact is not None:  # the key asked for (a sampler with options of its own has no grid to match by)
            return exact
        wanted = [float(s) for s in grid]
        keyed = [(sampler, _grid_of(sampler)) for sampler in self._samplers(fp, solver)]
        same = sorted((_gap(g, wanted), sampler) for sampler, g in keyed if g is not None and _gap(g, wanted) <= 1e-4)
        if same:
            return self.get(fp, same[0][1])
        near = [p for p in self.all(fp) if p.family == solver]
        for profile in near:  # calibrated on a finer grid, with this grid as its recommended plan
            if profile.plan is not None and _gap(profile.grid(profile.steps), wanted) <= 1e-4:
                return profile
        # The stored grid closest to the one asked for: step count and shift both count.
        ranked = sorted(near, key=lambda p: (_grid_distance(wanted, p.grid()), p.sampler))
        return self._nearest(ranked, name or _grid_name(solver, wanted))

    def find(self, pair: ModelPair | str, sampler: str) -> Profile | None:
        """The profile for this pair and sampler signature (``"euler-30-shift3"``): :meth:`for_sigmas`
        of the grid it names; a signature that names no grid is looked up by name (else the pair's
        first profile of that solver, with a warning)."""
        grid = _grid_of(sampler)
        family = sampler.split("-")[0]
        if grid is not None:
            return self.for_sigmas(pair, grid, family, sampler)
        fp = pair if isinstance(pair, str) else fingerprint(pair)
        exact = self.get(fp, sampler)
        if exact is not None:
            return exact
        return self._nearest([p for p in self.all(fp) if p.sampler.split("-")[0] == family], sampler)

    def _samplers(self, fp: str, solver: str) -> list[str]:
        """The sampler signatures of the pair's stored files for ``solver``, read from their names."""
        if not self.root.is_dir():
            return []
        prefix = f"{safe_key(fp)}__"
        return [path.name[len(prefix):-len(".json")]
                for path in sorted(self.root.glob(f"{prefix}{safe_key(solver)}-*.json"))]

    @staticmethod
    def _nearest(ranked: list[Profile], asked: str) -> Profile | None:
        if not ranked:
            return None
        chosen = ranked[0]
        others = ", ".join(p.sampler for p in ranked[1:])
        warnings.warn(f"no profile for {asked}; using the one calibrated for {chosen.sampler}, the nearest stored "
                      f"sigma grid{f' (also stored: {others})' if others else ''}, mapped through its sigma "
                      f"boundaries ({chosen.sigma_in:.4g}, {chosen.sigma_out:.4g}). Calibrate for {asked} for a "
                      "tuned result.", stacklevel=3)
        return chosen


_SIGNATURE = re.compile(r"^([A-Za-z0-9_]+)-(\d+)-shift([0-9.eE+-]+)$")


def _grid_of(signature: str) -> list[float] | None:
    """The sigma grid a :func:`sampler_signature` names (None if it names none)."""
    match = _SIGNATURE.match(signature)
    if match is None:
        return None
    try:
        return _grid(int(match.group(2)), float(match.group(3)), match.group(1)) or None
    except ValueError:
        return None


def _grid_name(solver: str, grid: list[float]) -> str:
    """The signature of a grid :func:`~adaptive.schedule.sigmas` makes, else its length in words."""
    from adaptive.schedule import shift_of

    shift = shift_of(grid)
    n = len(grid) - 1
    return sampler_signature(solver, n, shift) if shift is not None else f"{solver} on this {n}-step sigma grid"


def _grid_distance(a: list[float], b: list[float]) -> float:
    """How far apart two sigma grids are, in sigma: the mean gap between them as curves over the
    fraction of steps taken (where the shift shows) plus the gap between their mean step sizes
    (where the step count shows); 0 for equal grids.

    Example:
        >>> _grid_distance(_grid(28, 3.0), _grid(30, 3.0)) < _grid_distance(_grid(28, 3.0), _grid(12, 3.0))
        True
    """
    import numpy as np

    if len(a) < 2 or len(b) < 2:
        return float("inf")
    t = np.linspace(0.0, 1.0, 101)
    curves = [np.interp(t, np.linspace(0.0, 1.0, len(g)), g) for g in (a, b)]
    shape = float(np.mean(np.abs(curves[0] - curves[1])))
    return shape + abs(1.0 / (len(a) - 1) - 1.0 / (len(b) - 1))


__all__ = ["ProfileStore", "lost_parts", "safe_key", "weaker_than"]
