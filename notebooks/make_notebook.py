"""Write notebooks/walkthrough.ipynb (then execute it with nbclient to store its outputs).

    python notebooks/make_notebook.py && python notebooks/run_notebook.py --inplace
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    new_markdown_cell("""# adaptive: a walkthrough on the embedded pair

FlowBlending runs a Large model early and late in sampling and a Small model of the same family in the
middle. This notebook finds *where* automatically on the embedded moving-digit pair (two Wan-architecture
video models trained by this project): probe, change-point proposal, Optuna refinement, then sampling with the
profile. It uses only the public API and runs on a CPU in a few minutes (fewer steps than the defaults)."""),
    new_code_cell("""import time, warnings
import matplotlib.pyplot as plt
import numpy as np
import optuna
import torch
import adaptive
from adaptive import ChangePointDetector, Schedule, calibrate, probe, sample, sigmas
from adaptive.toy import generate, load_pair, prompt_conds, prompt_for
from adaptive.toy.harness import Harness

torch.manual_seed(0)
optuna.logging.set_verbosity(optuna.logging.WARNING)
pair, encode = load_pair()                       # Large and Small, classifier-free guidance 4.0
STEPS, SHIFT = 16, 3.0
prompts = [prompt_for(d, m) for d, m in [(3, 0), (7, 5), (0, 2), (5, 7)]]
pair"""),
    new_markdown_cell("## Large vs Small, same prompts and noise"),
    new_code_cell("""def show(rows, titles):
    fig, axes = plt.subplots(len(rows), 1, figsize=(8, 1.1 * len(rows)))
    for ax, video, title in zip(axes, rows, titles):
        ax.imshow(np.concatenate(list(video[0].clamp(-1, 1).numpy()), axis=1), cmap="gray", vmin=-1, vmax=1)
        ax.set_title(title, fontsize=8, loc="left"); ax.axis("off")
    plt.tight_layout(); plt.show()

small_only = Schedule.from_stages([(1.0, 0.0, "small")])
large = generate(pair, prompts, seeds=[0, 1, 2, 3], num_steps=STEPS, shift=SHIFT)
small = generate(pair, prompts, seeds=[0, 1, 2, 3], schedule=small_only, num_steps=STEPS, shift=SHIFT)
show([large[0], small[0], large[1], small[1]], [f"Large: {prompts[0]}", f"Small: {prompts[0]}",
                                                f"Large: {prompts[1]}", f"Small: {prompts[1]}"])"""),
    new_markdown_cell("""## The velocity-divergence curve
Both models are called on the *same* states of Large's trajectory; the curve is how far Small's velocity
departs from Large's at each step."""),
    new_code_cell("""conds = prompt_conds(prompts)
curve = probe(pair, conds, num_steps=STEPS, seeds=[0, 1], shift=SHIFT)
proposal = ChangePointDetector().fit(curve).predict()
plt.figure(figsize=(6, 3))
plt.plot(curve.sigmas, curve.mean(), "o-", label="relative L2")
plt.plot(curve.sigmas, curve.mean("cosine"), "s-", label="1 - cosine")
if proposal is not None:
    plt.axvspan(proposal.sigma_out, proposal.sigma_in, alpha=0.2, color="tab:orange", label="change-point proposal")
plt.gca().invert_xaxis(); plt.xlabel("sigma"); plt.legend(); plt.show()
proposal"""),
    new_markdown_cell("""## Optuna refinement against the final sample, step count included
Each trial is a plan: a Large-Small-Large window, on the full grid or a coarser one, or Large alone with
fewer steps; it restarts from the cached Large state, and its quality is the pair's metric (the lower of the
toy encoder's feature similarity and per-frame SSIM) against Large with all steps, same noise. The profile
recommends the cheapest plan that meets the target, and keeps the best full-grid window too."""),
    new_code_cell("""import tempfile
store = tempfile.mkdtemp()
start = time.perf_counter()
profile = calibrate(pair, conds, num_steps=STEPS, seeds=[0, 1], shift=SHIFT, n_trials=16, store=store,
                    progress=False, per_prompt=True)   # also a window per prompt and the online controller
print(f"calibrated in {time.perf_counter() - start:.0f} s")
print(profile.decision)
study = optuna.load_study(study_name=profile.calibration.study_name, storage=f"sqlite:///{store}/studies.db")
frame = study.trials_dataframe(attrs=("number", "params", "user_attrs", "value"))
frame.sort_values("value").head(8)"""),
    new_code_cell("""done = frame.dropna(subset=["user_attrs_quality"])
plt.figure(figsize=(5, 3.2))
plt.scatter(done["user_attrs_cost"], done["user_attrs_quality"], s=18)
plt.axhline(profile.quality.target, ls="--", c="gray", label="quality target")
plt.scatter([profile.plan.cost], [profile.plan.quality], c="red", label="recommended")
plt.xlabel("compute (fraction of Large only)"); plt.ylabel(profile.quality.metric); plt.legend(); plt.show()"""),
    new_markdown_cell("## Sampling with the recommended plan: quality and time, beside Large with all steps"),
    new_code_cell("""harness = Harness()
held = [prompt_for(d, m) for d, m in [(1, 1), (2, 3), (4, 4), (6, 6), (8, 0), (9, 2)]]
seeds = list(range(50, 56))
timings = {}
for name, schedule, steps in [("Large only", None, STEPS), ("recommended", profile.plan_schedule(), profile.steps)]:
    t = time.perf_counter()
    videos = generate(pair, held, seeds, schedule, num_steps=steps, shift=SHIFT)
    timings[name] = (time.perf_counter() - t, videos)
quality = pair.metric(timings["recommended"][1], timings["Large only"][1]).mean()
print(f"recommended: {profile.plan_schedule()} on {profile.steps} of {STEPS} steps; speed-up "
      f"{timings['Large only'][0] / timings['recommended'][0]:.2f}x, {profile.quality.metric} to Large {quality:.3f}")
show([timings["Large only"][1][0], timings["recommended"][1][0]], ["Large only", f"recommended ({profile.steps} steps)"])"""),
    new_markdown_cell("""## Per prompt: stored windows and the online controller
`per_prompt=True` also chose a window for each calibration prompt (the cheapest candidate that keeps the
target on that prompt's own samples) and fitted the online controller to those windows: a hand-over
threshold on the raw probe divergence and a span of Small steps, validated leave-one-prompt-out. A
controller that fails that check (or whose held-out compute, every sample's probes counted, is not below the
stored pair window's) carries `fallback`,
and `"online"` runs the stored windows instead. Under `"online"` a calibrated prompt runs its own stored
window (measured on it) and the controller decides the prompts the profile has not seen; without a
validated controller those get the pair-level window."""),
    new_code_cell("""for prompt, cond in zip(prompts, conds):
    window = profile.windows[adaptive.prompt_key(cond)]
    plan = f"Small on steps {window.start}..{window.stop - 1}" if window.start < window.stop else "Large on every step"
    print(f"{prompt:22s} {plan}  quality {window.quality:.3f}  compute {window.cost:.2f}")
controller = profile.controller
controller"""),
    new_markdown_cell("""The controller runs Large, probes Small on the same state, and hands over once the probe's divergence
falls to its threshold. `return_decisions=True` returns why each sample ran which model."""),
    new_code_cell("""from adaptive.toy import seeded_noise
contrast = [prompts[0], held[0], held[3]]
noise = seeded_noise([60, 61, 62])
print(controller.fallback or "controller validated leave-one-prompt-out")
videos, decisions = sample(pair, noise, sigmas(STEPS, SHIFT), profile if controller.fallback else controller,
                           return_decisions=True, encoder_hidden_states=encode(contrast))
print(decisions.summary())
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 2.8))
for row, prompt in enumerate(contrast):
    steps = [p[0] for p in decisions.probes[row]]
    ax1.plot(steps, [p[3] for p in decisions.probes[row]], "o-", label=prompt)
ax1.axhline(controller.threshold, ls="--", c="gray", label="threshold")
ax1.set_xlabel("step"); ax1.set_ylabel("probe divergence"); ax1.legend(fontsize=7)
plan = np.array([[m == "small" for m in row] for row in decisions.models], float)
ax2.imshow(plan, cmap="coolwarm", aspect="auto"); ax2.set_yticks(range(len(contrast)), contrast, fontsize=7)
ax2.set_xlabel("step (red: Small)"); plt.tight_layout(); plt.show()
print("compute per sample (fraction of Large, probes included):",
      [round(c, 3) for c in decisions.cost(profile.cost.small_cost_ratio)])"""),
    new_markdown_cell("""Read the last line: what each sample cost, probes included. Under the controller a sample whose
probes never find a hand-over pays for them and runs Large alone, above 1.0 of Large's compute. That is why
the validation counts every held-out sample's probes and keeps the controller only where they cost less
than the stored pair window; otherwise `fallback` says why and `"online"` runs the stored windows: the
calibrated prompt its own window, the others the pair-level plan, with the guidance interval calibration
found (lower-case letters in the summary: steps that make one conditional call, without guidance)."""),
]


def main() -> None:
    nb = new_notebook(cells=CELLS, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"}})
    path = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"
    path.parent.mkdir(exist_ok=True)
    nbformat.write(nb, path)
    print(path)


if __name__ == "__main__":
    main()
