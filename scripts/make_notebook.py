"""Write notebooks/walkthrough.ipynb (then execute it with nbclient to store its outputs).

    python scripts/make_notebook.py && python scripts/run_notebook.py --inplace
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    new_markdown_cell("""# adaptive: a walkthrough on the embedded pair

FlowBlending runs a Large model early and late in sampling and a Small model of the same family in the
middle. This notebook finds *where* automatically on the embedded moving-digit pair (two Wan-architecture
video models trained on this CPU): probe, change-point proposal, Optuna refinement, then sampling with the
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
    new_markdown_cell("""## Optuna refinement against the final sample
Each trial is a Large-Small-Large run restarted from the cached Large state; its quality is the toy
encoder's feature similarity to the Large-only video for the same noise."""),
    new_code_cell("""import tempfile
store = tempfile.mkdtemp()
start = time.perf_counter()
profile = calibrate(pair, conds, num_steps=STEPS, seeds=[0, 1], shift=SHIFT, n_trials=16, store=store,
                    progress=False)
print(f"calibrated in {time.perf_counter() - start:.0f} s:", profile.schedule(), profile.quality, profile.cost["fraction_of_large"])
study = optuna.load_study(study_name=profile.calibration["study_name"], storage=f"sqlite:///{store}/studies.db")
frame = study.trials_dataframe(attrs=("number", "params", "user_attrs", "value"))
frame.sort_values("value").head(8)"""),
    new_code_cell("""done = frame.dropna(subset=["user_attrs_quality"])
plt.figure(figsize=(5, 3.2))
plt.scatter(done["user_attrs_cost"], done["user_attrs_quality"], s=18)
plt.axhline(profile.quality["target"], ls="--", c="gray", label="quality target")
plt.scatter([profile.cost["fraction_of_large"]], [profile.quality["achieved"]], c="red", label="chosen")
plt.xlabel("compute (fraction of Large only)"); plt.ylabel("feature similarity"); plt.legend(); plt.show()"""),
    new_markdown_cell("## Sampling with the profile: quality and time"),
    new_code_cell("""harness = Harness()
held = [prompt_for(d, m) for d, m in [(1, 1), (2, 3), (4, 4), (6, 6), (8, 0), (9, 2)]]
seeds = list(range(50, 56))
timings = {}
for name, schedule in [("Large only", None), ("FlowBlending", profile.schedule())]:
    t = time.perf_counter()
    videos = generate(pair, held, seeds, schedule, num_steps=STEPS, shift=SHIFT)
    timings[name] = (time.perf_counter() - t, videos)
sim = harness.similarity(timings["FlowBlending"][1], timings["Large only"][1]).mean()
print(f"speed-up {timings['Large only'][0] / timings['FlowBlending'][0]:.2f}x, feature similarity to Large {sim:.3f}")
show([timings["Large only"][1][0], timings["FlowBlending"][1][0]], ["Large only", "FlowBlending"])"""),
    new_markdown_cell("""The per-prompt online controller (issue 5) is not built yet; this notebook will show its
decisions for two contrasting prompts once it is."""),
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
