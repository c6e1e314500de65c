"""Pictures: the divergence curve with the detected and refined boundaries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adaptive.profiles import Profile


def plot_profile(profile: Profile, path: Path | str, title: str | None = None) -> Path:
    """Save a PNG of the profile's divergence curve (rel-L2 and 1 - cosine) with its windows shaded
    and, when calibrated, the online controller's threshold and earliest hand-over."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = profile.curve
    if curve is None:
        raise ValueError(f"the profile for {profile.sampler} records no divergence curve to plot")
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(curve.sigmas, curve.rel_l2, "o-", ms=3, label="relative L2  ||v_L - v_S|| / ||v_L||")
    ax.plot(curve.sigmas, curve.cosine, "s-", ms=3, alpha=0.7, label="1 - cos(v_L, v_S)")
    if profile.proposal:
        ax.axvspan(profile.proposal.sigma_out, profile.proposal.sigma_in, color="tab:orange", alpha=0.18,
                   label="change-point proposal")
    if not profile.is_large_only:
        ax.axvspan(profile.sigma_out, profile.sigma_in, ymax=0.5, color="tab:green", alpha=0.3,
                   label="refined (Optuna) Small window")
    if profile.controller:
        unused = " (not used: failed validation)" if profile.controller.fallback else ""
        ax.axhline(profile.controller.threshold, color="tab:red", ls="--", lw=1,
                   label=f"online controller: hand-over threshold{unused}")
        ax.axvline(profile.controller.sigma_in_max, color="tab:red", ls=":", lw=1,
                   label=f"online controller: earliest hand-over{unused}")
    ax.invert_xaxis()
    ax.set_xlabel("sigma (1 = noise, 0 = data)")
    ax.set_ylabel("divergence of Small from Large")
    ax.set_title(title or f"{profile.pair_name or profile.pair_fingerprint[:8]} — {profile.sampler}")
    ax.legend(fontsize=7)
    return save_figure(fig, path, dpi=120)


def save_figure(fig: Any, path: Path | str, dpi: int = 110) -> Path:
    """Lay out, write (creating the folder) and close a matplotlib figure; returns the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
