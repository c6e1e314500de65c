"""The research bench, each script rehearsed at toy size in the layout the docs cite: ``benchmarks/``
(the measurements behind ``docs/<topic>/``: frontier, ink levels, Wan at scale, Gaussian flows, pair
triage, online windows, oracle, per-prompt, guidance, the prompt gate, samplers) and
``training/`` (the candidate pairs' recipes)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
TRAINING = BENCH.parent / "training"


@pytest.fixture
def frontier(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("frontier")


@pytest.fixture
def tiny_pair(monkeypatch, tmp_path) -> Path:
    """A saved pair at toy widths (real Wan classes, ``training/candidates.py``'s tiny configs) with the
    shipped encoder: the bench's scripts run on it in seconds where the shipped pair takes minutes."""
    import shutil

    from diffusers import WanTransformer3DModel

    from adaptive.toy.pair import WEIGHTS_DIR

    monkeypatch.syspath_prepend(str(TRAINING))
    candidates = importlib.import_module("candidates")
    pair = tmp_path / "tiny-pair"
    for size, config in (("large", "coarse"), ("small", "coarse-thin")):  # 8x8 patches: 32 tokens a video
        torch.manual_seed(len(size))
        WanTransformer3DModel(**candidates.TINY_CONFIGS[config]).save_pretrained(pair / size)
    for name in ("encoder.safetensors", "encoder.json"):
        shutil.copy2(WEIGHTS_DIR / name, pair / name)
    return pair


def test_ink_levels_bins_ink_pixels_by_brightness(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    ink_levels = importlib.import_module("evaluate_pair").ink_levels
    video = torch.full((1, 1, 2, 2, 5), -1.0)
    video[0, 0, 0, 0, :4] = torch.tensor([-0.5, 0.2, 0.9, 1.3])  # 1.3 is clamped into the top bin
    share, spread = ink_levels(video)
    assert share == pytest.approx(4 / 20)
    assert spread.tolist() == pytest.approx([0.25, 0.0, 0.25, 0.0, 0.5])


def test_the_pair_and_metric_benches_print_their_tables_on_the_shipped_pair(monkeypatch, capsys):
    """evaluate_pair.py --ink and metric_table.py --latent-steps, rehearsed on one video and two steps."""
    monkeypatch.syspath_prepend(str(BENCH))
    importlib.import_module("evaluate_pair").main(["--ink", "1,2", "--videos", "1"])
    rows = importlib.import_module("metric_table").latent_steps(2)
    printed = capsys.readouterr().out
    assert "| real held-out videos |" in printed and "| Large, 2 steps |" in printed
    assert [r["steps"] for r in rows] == [1, 2] and rows[-1]["own"] == pytest.approx(1.0, abs=1e-4)
    assert rows[0]["latent_structure"] < rows[0]["latent_cosine"]  # the cosine passes what the structure fails


def test_the_pair_table_writes_its_documented_record_rows_and_pictures(monkeypatch, tmp_path, tiny_pair):
    """evaluate_pair.py's full table (docs/pair/) on a tiny pair, two videos and three steps: every documented
    row kind, each with the documented columns, the divergence and commitment curves, and the pictures."""
    monkeypatch.syspath_prepend(str(BENCH))
    importlib.import_module("evaluate_pair").main(["--weights", str(tiny_pair), "--videos", "2", "--steps", "3",
                                                   "--sweep", "2", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "pair_eval.json").read_text())
    documented = json.loads((BENCH.parent / "docs" / "pair" / "pair_eval.json").read_text())
    assert list(data["rows"]) == ["Large, 3 steps", "Large, 3 steps, other seeds", "Small, 3 steps", "Large, 1 steps",
                                  "Large, 1 steps, other seeds", "Large, 2 steps", "Real held-out videos"]
    assert {k: set(v) for k, v in data["rows"].items()} == {
        k: set(documented["rows"]["Large, 30 steps"]) for k in data["rows"] if k != "Real held-out videos"} | {
        "Real held-out videos": set(documented["rows"]["Real held-out videos"])}
    assert set(data) == set(documented) and len(data["divergence"]["rel_l2"]) == 3
    assert data["rows"]["Large, 3 steps"]["feature_sim"] == pytest.approx(1.0, abs=1e-4)
    assert data["rows"]["Small, 3 steps"]["feature_sim"] < 1.0
    assert "| Small, 3 steps |" in (tmp_path / "pair_eval.md").read_text()
    assert all((tmp_path / f).stat().st_size > 0 for f in ("large_steps.png", "large_vs_small.png"))


def test_the_metric_table_scores_every_documented_plan(monkeypatch, tmp_path, tiny_pair):
    """metric_table.py's full table (docs/metric/) on a tiny pair and two videos: the documented plans in the
    documented layout (a pair with no stored profile has no profile row), and the picture."""
    monkeypatch.syspath_prepend(str(BENCH))
    importlib.import_module("metric_table").main(["--pair", str(tiny_pair), "--videos", "2", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "metric.json").read_text())
    documented = json.loads((BENCH.parent / "docs" / "metric" / "metric.json").read_text())
    assert _keys(data) == _keys(documented) and data["videos"] == 2
    plans = [r["plan"] for r in data["rows"]]
    assert plans == [r["plan"] for r in documented["rows"]][:-1]  # all but the shipped pair's profile row
    for row in data["rows"]:
        assert row["metric"] <= min(row["feature_cosine"], row["ssim"]) + 1e-6  # a mean of per-video minima
    assert (tmp_path / "metric.png").stat().st_size > 0


def test_per_prompt_eval_calibrates_per_prompt_and_compares_every_method(monkeypatch, tmp_path, tiny_pair):
    """per_prompt_eval.py (docs/per_prompt/) on a tiny pair, six steps, two calibrated prompts, three trials and
    two unseen prompts: the documented record, every method on seen and unseen prompts, compute counted."""
    monkeypatch.syspath_prepend(str(BENCH))
    importlib.import_module("per_prompt_eval").main([
        "--pair", str(tiny_pair), "--steps", "6", "--calib-prompts", "2", "--seen-seeds", "1", "--trials", "3",
        "--unseen-limit", "2", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "out")])
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    documented = json.loads((BENCH.parent / "docs" / "per_prompt" / "results.json").read_text())
    assert set(data) == set(documented) and data["videos"] == {"seen": 2, "unseen": 2}
    assert list(data["seen"])[:3] == ["Large only", "fixed pair profile", "per-prompt calibration"]
    assert list(data["unseen"])[:2] == ["Large only", "fixed pair profile"] and len(data["unseen"]) == 3
    for rows in (data["seen"], data["unseen"]):
        assert rows["Large only"]["compute_fraction"] == pytest.approx(1.0)
        assert rows["Large only"]["feature_sim"] == pytest.approx(1.0, abs=1e-4)
        assert all(set(r) == set(documented["seen"]["Large only"]) for r in rows.values())
    assert "unseen prompts" in (tmp_path / "out" / "results.md").read_text().lower()


def test_gpu_check_runs_its_checks_on_the_cpu_in_the_documented_layout(monkeypatch, tmp_path, tiny_pair):
    """gpu_check.py --device cpu (docs/gpu/) on a tiny pair and a given plan: Large and the plan, fp32 as the
    reference and bf16 beside it, one batch of one video, in the layout of the recorded GPU run."""
    monkeypatch.syspath_prepend(str(BENCH))
    out = tmp_path / "gpu_check.json"
    gpu_check = importlib.import_module("gpu_check")
    with pytest.raises(SystemExit, match="no profile for this pair"):  # before any sampling
        gpu_check.main(["--device", "cpu", "--pair", str(tiny_pair), "--out", str(out)])
    gpu_check.main(["--device", "cpu", "--pair", str(tiny_pair), "--schedule", "lsl:0.85,0.3", "--batches", "1",
                    "--repeats", "1", "--configs", "fp32,bf16", "--out", str(out)])
    data = json.loads(out.read_text())
    documented = json.loads((BENCH.parent / "docs" / "gpu" / "gpu_check.json").read_text())
    assert _keys(data) == _keys(documented) and [r["config"] for r in data["rows"]] == ["fp32", "bf16"]
    assert data["small_steps"] == list(range(11, 26))  # sigma in (0.3, 0.85] on 30 steps at shift 3
    fp32, bf16 = data["rows"]
    assert fp32["large"]["sim_to_reference"] == pytest.approx(1.0, abs=1e-4) and fp32["large"]["finite"]
    assert bf16["large"]["finite"] and bf16["large"]["rel_l2_to_reference"] < 0.1


def _row(kind: str, cost: float, sim: list[float], grain: list[float], **where: int) -> dict:
    return {"kind": kind, "cost": cost, "feature_sim": sim, "grain": grain, "digit_ok": [1, 1],
            "direction_ok": [1, 1], "frechet": 1.0, **where}


def test_dominance_compares_each_blend_with_the_large_steps_it_can_afford(frontier):
    result = {"rows": [
        _row("large", 1 / 3, [0.70, 0.70], [0.1, 0.1], large_steps=1),
        _row("large", 2 / 3, [0.95, 0.97], [0.4, 0.4], large_steps=2),
        _row("large", 1.0, [1.0, 1.0], [0.5, 0.5], large_steps=3),
        # Affords 1 Large step (0.70, grain error 0.4): better on both.
        _row("blend", 0.40, [0.80, 0.80], [0.45, 0.55], start=0, stop=3),
        # Affords 2 Large steps (0.96, grain error 0.1): worse on similarity, better on grain.
        _row("blend", 0.70, [0.90, 0.92], [0.5, 0.5], start=1, stop=2),
        # Affords nothing (under one Large step): not compared.
        _row("blend", 0.20, [0.99, 0.99], [0.5, 0.5], start=0, stop=3),
    ]}
    d = frontier.dominance(result)
    assert (d["blends"], d["beat_on_feature_sim"], d["beat_on_grain_error"], d["beat_on_both"]) == (2, 1, 2, 1)
    assert d["winners"] == ["Small 0-2 (0.40): 0.8000 vs Large 1 steps 0.7000, grain error 0.050 vs 0.400"]
    assert d["large_third"]["feature_sim"] == pytest.approx(0.70)


def test_frontier_remakes_the_documented_table_from_its_records(frontier, tmp_path):
    """The earlier study's table in docs/frontier is what its command makes of the records beside it."""
    docs = BENCH.parent / "docs" / "frontier"
    frontier.main([*map(str, sorted(docs.glob("s*.json"))), "--out", str(tmp_path)])
    assert (tmp_path / "frontier.md").read_text() == (docs / "frontier.md").read_text()
    assert (tmp_path / "frontier.png").stat().st_size > 0


def test_wan_scale_rehearses_every_section_on_tiny_wan_models(monkeypatch, tmp_path, capsys):
    """The real-scale timing script on the same diffusers classes at toy size, on the CPU: every
    section runs, each run ran the models its plan names (the drop-in's trace, the sampler's
    decisions), the bounds follow from the measured ratios, and the report is written."""
    monkeypatch.syspath_prepend(str(BENCH))
    wan_scale = importlib.import_module("wan_scale")
    out = tmp_path / "wan.json"
    monkeypatch.setattr("sys.argv", ["wan_scale.py", "--tiny", "--device", "cpu", "--out", str(out),
                                     "--compile-backend", "eager", "--steps", "10", "--repeats", "1"])
    wan_scale.main()
    report = json.loads(out.read_text())
    assert report["latent"] == [1, 16, 2, 4, 6] and report["configs"]["large"]["num_layers"] == 3
    calls = report["calls"]
    assert 0 < calls["r_flops"] < 1 and calls["large"]["flops_per_call"] > calls["small"]["flops_per_call"]
    runs = report["pipeline"]["runs"]
    assert runs["large"]["calls"] == {"large": 20}
    assert runs["paper_lsl"]["plan"] == "LLLLSSSSLL" and runs["paper_lsl"]["calls"] == {"large": 12, "small": 8}
    assert runs["paper_lsl"]["flop_bound"] == pytest.approx(1 / (1 - 0.4 * (1 - calls["r_flops"])), abs=1e-3)
    window = runs["profile_window"]
    assert window["calls"]["small"] == 2 * window["plan"].count("S") > 0  # mapped onto the UniPC grid by sigma
    assert all(row["finite"] for row in runs.values())
    sampled = report["sample"]["runs"]
    assert sampled["blend"]["models"] == "LLSSL" and sampled["online"]["models"] == "LLSSL"
    assert sampled["online"]["probes"] == 1 and sampled["large"]["probes"] == 0
    assert sampled["blend_small_offloaded"]["models"] == "LLSSL"
    assert report["compile"]["runs"]["blend"]["models"] == "LLSSL" and "compile_s" in report["compile"]
    assert report["frames33"]["latent"] == [1, 16, 3, 4, 6]
    assert "switch_overhead" in report["pipeline"] and "online_overhead" in report["sample"]
    assert "FLOP bound" in capsys.readouterr().out


def test_wan_scale_configs_are_the_published_sizes(monkeypatch):
    """14B and 1.3B by parameter count, counted on the meta device (no memory, no weights)."""
    monkeypatch.syspath_prepend(str(BENCH))
    wan_scale = importlib.import_module("wan_scale")
    from diffusers import WanTransformer3DModel

    counts = []
    for config in (wan_scale.WAN_14B, wan_scale.WAN_1_3B):
        with torch.device("meta"):
            counts.append(sum(p.numel() for p in WanTransformer3DModel(**config).parameters()) / 1e9)
    assert counts[0] == pytest.approx(14.3, abs=0.2) and counts[1] == pytest.approx(1.42, abs=0.05)


# gaussian_frontier.py: the paper design of issue #18 on exact Gaussian / mixture flows ----------------
@pytest.fixture
def gaussian_frontier(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("gaussian_frontier")


@pytest.mark.parametrize("modes, share", [(1, 0.0), (4, 0.8)])
def test_mixture_velocity_is_minus_sigma_score_minus_posterior_mean(gaussian_frontier, modes, share):
    """The closed form against the score of the closed-form density (autograd): with
    ``x = (1 - s) x0 + s n``, ``E[n | x] = -s * score`` and ``E[x0 | x] = (x - s E[n | x]) / (1 - s)``."""
    g = gaussian_frontier
    large, _ = g.case_fields(g.Case(alpha=1.5, modes=modes, share=share), dims=16, coarse=2, fine=8)
    x = torch.randn(5, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.8
    for s in (0.9, 0.5, 0.1):
        sigma = torch.full((5,), s, dtype=torch.float64)
        xg = x.clone().requires_grad_(True)
        score = torch.autograd.grad(large.log_density(xg, sigma).sum(), xg)[0]
        noise_mean = -s * score
        expected = noise_mean - (x - s * noise_mean) / (1 - s)
        assert torch.allclose(large(x, sigma), expected, atol=1e-9)


def test_gaussian_flow_ends_at_the_scaled_noise(gaussian_frontier):
    """The exact Gaussian flow maps noise n to sqrt(lam) * n: Euler converges there at first order,
    and the power-law flow bends enough that 10 steps land far off."""
    from adaptive import sample, sigmas
    from adaptive.metrics import rel_l2

    g = gaussian_frontier
    lam = g.power_spectrum(64, 1.5)
    assert float(lam.mean()) == pytest.approx(0.25) and float(lam[0] / lam[63]) == pytest.approx(64**1.5)
    field = g.ModelPair(g.MixtureVelocity(lam), g.MixtureVelocity(lam))
    noise = torch.randn(8, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    error = {k: float(rel_l2(sample(field, noise, sigmas(k, 3.0).double()), lam.sqrt() * noise).max())
             for k in (10, 1000, 2000)}
    assert error[1000] < 0.006 and 0.4 < error[2000] / error[1000] < 0.6 and error[10] > 0.2


def test_small_equal_to_large_makes_every_blend_large_and_a_winner(gaussian_frontier):
    g = gaussian_frontier
    r = g.measure(g.Case(alpha=1.5), dims=64, samples=4, steps=8, coarse=2, fine=32)
    assert r.middle_divergence == 0.0 and all(err < 1e-6 for *_, err in r.windows)
    # each beats Large with the fewer steps it buys (Small alone buys none of 8: 0.8 of a step)
    assert len(r.windows) == 36 and r.wins == r.blends == 35
    assert r.large_rel_l2[-1] == 0.0 and r.large_rel_l2[0] > r.large_third > r.large_rel_l2[-2] > 0


def test_a_small_wrong_everywhere_wins_no_blend(gaussian_frontier):
    """Every variance 4x off and the mean far off (100x the data's scale): even Small on the last,
    shortest step (sigma 0.003 to 0) costs more than dropping a Large step."""
    g = gaussian_frontier
    r = g.measure(g.Case(alpha=1.5, mc=4.0, mf=4.0, mean_error=400.0), dims=64, samples=4, steps=8, coarse=32,
                  fine=32)
    assert r.middle_divergence > 1.0 and r.wins == 0 and r.blends == 35


def test_a_closer_small_wins_more_blends(gaussian_frontier):
    g = gaussian_frontier
    near, far = (g.measure(g.Case(1.5, mc, mf), dims=64, samples=4, steps=10, coarse=2, fine=48)
                 for mc, mf in ((1.1, 0.9), (2.0, 0.4)))
    assert near.middle_divergence < far.middle_divergence and near.wins > far.wins


# train_candidates.py: the GPU run of issue #18, rehearsed at toy widths on the CPU -------------------
def _unpack(out, into):
    import tarfile

    for tar in sorted(out.glob("*.tar")):
        if tar.name != "logs.tar":
            with tarfile.open(tar) as archive:
                archive.extractall(into, filter="data")


@pytest.mark.slow  # a minute: each worker, encoder and frontier check is its own Python process
def test_train_candidates_trains_checks_packs_and_resumes(monkeypatch, tmp_path):
    """Workers train Large and two Smalls (one distilled) in lockstep, the encoder beside them, the
    frontier checks every pair, and what comes back fits the device's limits (<= 8 files of <= 16 MiB);
    unpacked, it continues with --init (steps counted on, the first run kept in the history)."""
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.syspath_prepend(str(TRAINING))
    candidates = importlib.import_module("candidates")
    tiny = ["--tiny", "--device", "cpu", "--batch", "2", "--encoder-steps", "1", "--encoder-batch", "2",
            "--frontier-prompts", "1", "--frontier-seeds", "1", "--frontier-steps", "2", "--frontier-stride", "1",
            "--variants", "texture"]
    out = tmp_path / "out"
    summary = candidates.main([*tiny, "--recipes", "scratch,distil", "--budget-s", "5", "--out", str(out),
                               "--work", str(tmp_path / "work")])
    files = sorted(p.name for p in out.iterdir())
    assert files == ["logs.tar", "summary.json", "texture-large.tar", "texture-small.tar"]
    assert all(p.stat().st_size <= 16 * 2**20 for p in out.iterdir())
    texture = summary["variants"]["texture"]
    assert texture["returncode"] == 0 and texture["training"]["steps"] >= 1, texture
    for recipe in ("scratch", "distil"):
        check = texture["frontier"][recipe]
        assert "error" not in check, check
        assert check["blends"] == 3 and check["videos"] == 1  # stride 1 on a 2-step grid: 3 windows
        assert {"toy_feature_cosine", "ssim"} <= set(check["metrics"])
        assert all(0 <= m["winners"] <= 3 for m in check["metrics"].values())
        assert 0.05 < check["small_cost"] < 0.5 and len(check["divergence"]["rel_l2"]) == 2
    run = tmp_path / "run"
    _unpack(out, run)
    distil = json.loads((run / "texture" / "small-distil" / "training.json").read_text())
    assert distil["recipe"] == {"name": "distil", "config": "small", "distil": True, "sigma_low": 0.0, "keep": []} \
        and distil["curve"]
    assert (run / "texture" / "encoder.safetensors").exists() and (run / "texture" / "large" / "config.json").exists()
    first = distil["steps"]
    again = candidates.main([*tiny, "--recipes", "distil", "--budget-s", "5", "--init", str(run), "--out",
                             str(tmp_path / "out2"), "--work", str(tmp_path / "work2")])
    assert again["variants"]["texture"]["returncode"] == 0
    _unpack(tmp_path / "out2", tmp_path / "run2")
    resumed = json.loads((tmp_path / "run2" / "texture" / "small-distil" / "training.json").read_text())
    assert resumed["previous_steps"] == first and resumed["steps"] > first
    assert [h["steps"] for h in resumed["history"]] == [first]


def test_the_cpu_pair_recipe_trains_experts_and_resumes_with_a_frozen_large(monkeypatch, tmp_path):
    """Issue #25's CPU recipe at toy widths: the compact Large with a general Small and a noise-level
    expert in lockstep, then a resumed run that trains only the Smalls (--freeze-large): Large's
    weights and step count stay, the Smalls count on."""
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.syspath_prepend(str(TRAINING))
    candidates = importlib.import_module("candidates")
    # The frontier check's timeout is generous: at 30 s it was killed (returncode -9) on cores shared with a
    # training run; on idle cores the run ends long before it.
    tiny = ["--tiny", "--device", "cpu", "--batch", "2", "--encoder-steps", "1", "--encoder-batch", "2",
            "--frontier-prompts", "1", "--frontier-seeds", "1", "--frontier-steps", "2", "--frontier-stride", "2",
            "--variants", "multi", "--large-config", "compact", "--budget-s", "3", "--frontier-timeout-s", "150"]
    summary = candidates.main([*tiny, "--recipes", "compact,mid-expert,pruned", "--out", str(tmp_path / "out"),
                               "--work", str(tmp_path / "work")])
    assert summary["variants"]["multi"]["returncode"] == 0
    _unpack(tmp_path / "out", tmp_path / "run")
    root = tmp_path / "run" / "multi"
    large = json.loads((root / "large" / "training.json").read_text())
    expert = json.loads((root / "small-mid-expert" / "training.json").read_text())
    assert large["large_config"] == "compact" and large["config"]["patch_size"] == [2, 8, 8]
    assert expert["recipe"]["sigma_low"] == 0.4 and expert["config"]["patch_size"] == [1, 8, 8]
    pruned = json.loads((root / "small-pruned" / "training.json").read_text())  # Large's widths, its first and last
    assert pruned["recipe"]["keep"] == [0, -1] and pruned["config"] == dict(large["config"], num_layers=2)
    before = (root / "large" / "diffusion_pytorch_model.safetensors").read_bytes()
    again = candidates.main([*tiny, "--recipes", "compact,mid-expert", "--init", str(tmp_path / "run"),
                             "--freeze-large", "--out", str(tmp_path / "out2"), "--work", str(tmp_path / "work2")])
    assert again["variants"]["multi"]["returncode"] == 0
    resumed = tmp_path / "work2" / "multi"
    assert (resumed / "large" / "diffusion_pytorch_model.safetensors").read_bytes() == before
    assert json.loads((resumed / "large" / "training.json").read_text())["steps"] == large["steps"]
    assert json.loads((resumed / "small-mid-expert" / "training.json").read_text())["steps"] > expert["steps"]


def test_an_expert_sees_its_noise_range_on_the_same_videos(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.syspath_prepend(str(TRAINING))
    candidates = importlib.import_module("candidates")
    x0, noise, sigma = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0.0, 0.3, 0.7, 1.0])
    s = sigma.view(-1, 1)
    x, sig, target = candidates._renoised((1 - s) * x0 + s * noise, sigma, noise - x0, 0.4)
    assert torch.allclose(sig, 0.4 + 0.6 * sigma) and torch.allclose(target, noise - x0)
    assert torch.allclose(x, (1 - sig.view(-1, 1)) * x0 + sig.view(-1, 1) * noise, atol=1e-6)


def test_a_young_teacher_is_distilled_from_only_once_it_has_trained(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.syspath_prepend(str(TRAINING))
    candidates = importlib.import_module("candidates")
    lo, hi = candidates.DISTIL_RAMP
    assert candidates._distil_weight(0.0, teacher_trained=False) == 0.0
    assert candidates._distil_weight((lo + hi) / 2, teacher_trained=False) == pytest.approx(0.5)
    assert candidates._distil_weight(hi, teacher_trained=False) == 1.0
    assert candidates._distil_weight(0.0, teacher_trained=True) == 1.0


def test_pair_triage_measures_a_coarse_frontier_of_a_saved_pair(monkeypatch, tmp_path, tiny_pair):
    """A tiny saved pair (real Wan classes, the shipped encoder): the frontier on a stride-2 window
    grid holds Large at every step count and exactly the windows whose ends lie on the grid, the
    divergence curve has one value per step, and the markdown names every metric."""
    from adaptive.frontier import Frontier

    monkeypatch.syspath_prepend(str(BENCH))
    triage = importlib.import_module("pair_triage")
    pair = tiny_pair
    out = tmp_path / "out"
    triage.main([str(pair), "--prompts", "1", "--seeds", "2", "--steps", "4", "--stride", "2", "--out", str(out)])
    assert torch.is_grad_enabled()  # the script must not switch autograd off for whoever runs next
    frontier = Frontier.load(out / "tiny-pair.json")
    assert sorted(frontier.large_fewer()) == [1, 2, 3, 4] and frontier.samples == 2
    assert sorted((p.start, p.stop) for p in frontier.blends()) == [(0, 2), (0, 4), (2, 4)]
    assert len(json.loads((out / "tiny-pair.divergence.json").read_text())["rel_l2"]) == 4
    text = (out / "triage.md").read_text()
    assert "### tiny-pair" in text and all(m in text for m in frontier.metrics)
    assert "| Small on steps 0-1 of 4" in text  # every blend against the Large its compute buys
    assert (out / "tiny-pair.png").stat().st_size > 0
    # The windows that decide a candidate, on the 30-step grid the docs measured them on.
    quick = triage.quick_windows(30)
    assert [w for w in quick if w[1] == 0] == [(30, 0, j) for j in (6, 9, 12, 15, 18, 21, 24, 30)]
    assert [w for w in quick if w[1] > 0] == [(30, a, a + 12) for a in (3, 6, 9, 12, 15)]


def test_online_windows_writes_its_table_and_the_controllers_validation(monkeypatch, tmp_path, capsys):
    """benchmarks/online_windows.py on tiny settings (8 steps, 2 calibration seeds, 4 trials, 1 new seed per
    prompt): the Markdown table and the JSON with every method's row and the controller's leave-one-
    prompt-out report, including the hand-over rate against the rate that repays the probes."""
    monkeypatch.syspath_prepend(str(BENCH))
    online_windows = importlib.import_module("online_windows")
    online_windows.main(["--set", "sliding", "--shift", "1", "--steps", "8", "--eval-seeds", "1",
                         "--calibration-seeds", "2", "--trials", "4", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "sliding_shift1.json").read_text())
    table = result["table"]
    assert result["args"]["steps"] == 8 and table["Large only"]["compute"] == pytest.approx(1.0)
    assert table["Large only"]["quality_mean"] == pytest.approx(1.0)
    online = [name for name in table if name.startswith("online controller")]
    assert len(online) == 1 and any(name.startswith("best single pair window") for name in table)
    for name, row in table.items():
        assert set(row) == {"quality_mean", "quality_min", "compute", "small_steps_outside", "window_used"}
        assert 0.0 < row["compute"] <= (1.1 if name in online else 1.0 + 1e-9)  # probes may cost more than Large
    fit = result["controller"]["fit"]
    assert fit["prompts"] == 5 and fit["samples"] == 10 and 0.0 < fit["fallback_cost"] <= 1.0
    for r in fit["leave_one_prompt_out"]:
        assert {"cost", "handover_rate", "probe_cost", "break_even_rate", "outside_steps"} <= set(r)
    fell_back = bool(result["controller"]["fallback"])
    assert online[0] == ("online controller (fallback: stored windows)" if fell_back else
                         "online controller (probes, checks counted)")
    text = (tmp_path / "sliding_shift1.md").read_text()
    assert "| per-prompt windows |" in text and "hand-over rate that repays the probes" in text
    assert "hand-over rules on the calibration curves" in text and text.split("\n\n")[0] in capsys.readouterr().out


def _keys(data: object) -> object:
    """The nested key layout of a JSON object (lists by their first item)."""
    if isinstance(data, dict):
        return {k: _keys(v) for k, v in data.items()}
    return [_keys(data[0])] if isinstance(data, list) and data and isinstance(data[0], dict) else None


def test_oracle_script_writes_the_documented_layout(monkeypatch, tmp_path, capsys):
    """docs/oracle/oracle.json's layout (bench --oracle reads it) on tiny settings, from adaptive.oracle."""
    monkeypatch.syspath_prepend(str(BENCH))
    importlib.import_module("oracle").main(["--steps", "3", "--prompts", "1", "--seeds", "1", "--trials", "2",
                                            "--out", str(tmp_path)])
    data = json.loads((tmp_path / "oracle.json").read_text())
    documented = json.loads((BENCH.parent / "docs" / "oracle" / "oracle.json").read_text())
    assert _keys(data) == _keys(documented)
    assert data["command"] == ("python benchmarks/oracle.py --steps 3 --shift 3.0 --prompts 1 --seeds 1 --trials 2 "
                               f"--target 0.95 --budget 3 --out {tmp_path}")
    assert data["oracle"]["quality"] >= 0.95 and data["proposal"]["steps_from_oracle"] >= 0
    assert '"oracle"' in capsys.readouterr().out


def test_per_prompt_eval_refuses_to_write_the_shipped_profiles(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCH))
    with pytest.raises(SystemExit):
        importlib.import_module("per_prompt_eval").main(["--store", str(BENCH.parent / "profiles")])
    assert "flowblend calibrate --per-prompt --num-prompts 12 --seeds 2 --trials 32" in capsys.readouterr().err


def test_guidance_table_runs_every_family_against_its_alternatives(monkeypatch, tmp_path):
    """The embedded-pair guidance table at toy scale: each family's plan and the Large-fewer and
    no-guidance runs at its compute, judged on held-out samples, and the side-by-side picture."""
    monkeypatch.syspath_prepend(str(BENCH))
    torch.manual_seed(0)
    table = importlib.import_module("guidance_table").main(
        ["--out", str(tmp_path), "--prompts", "1", "--seeds", "2", "--heldout", "2", "--steps", "4",
         "--trials", "2", "--target", "0.5"])
    assert [row["family"] for row in table["rows"]] == ["guidance interval", "blend", "both"]
    for row in table["rows"]:
        for run in ("heldout", "large_fewer", "no_guidance"):
            assert 0.0 <= row[run]["heldout_min"] <= row[run]["heldout_mean"] <= 1.0 + 1e-6
        assert row["large_fewer"]["cost"] <= max(row["heldout"]["cost"], 1.0) + 1e-9  # at least one step
    saved = json.loads((tmp_path / "table.json").read_text())
    assert len(saved["rows"]) == 3 and (tmp_path / "side_by_side.png").stat().st_size > 0


def test_wan22_scale_rehearses_every_plan_on_tiny_wan22_pipelines(monkeypatch, tmp_path):
    """The GPU run of Wan 2.2's experts with a Small between them, rehearsed on tiny models: every plan
    runs through the unmodified WanPipeline, the calls and skipped unconditional predictions are the
    plan's, and the FLOP bounds order as the plans' savings do."""
    monkeypatch.syspath_prepend(str(BENCH))
    wan22 = importlib.import_module("wan22_scale")
    data = wan22.main(["--tiny", "--device", "cpu", "--steps", "8", "--out", str(tmp_path / "wan22.json")])
    runs = data["runs"]
    assert list(runs) == ["experts", "experts_blended", "high_small_low", "guidance_interval", "both"]
    assert all(run["finite"] for run in runs.values())
    assert runs["experts_blended"]["uncond_skipped"] == 0
    assert set(runs["experts_blended"]["routed_calls"]) == {"high", "low"}
    hsl = runs["high_small_low"]["plan"]
    assert hsl.index("S") > hsl.rindex("H") and hsl.endswith("L")  # high -> small -> low
    skipped = runs["guidance_interval"]["plan"].count("l") + runs["guidance_interval"]["plan"].count("h")
    assert runs["guidance_interval"]["uncond_skipped"] == skipped > 0
    assert 1.0 < runs["guidance_interval"]["flop_bound"] < runs["both"]["flop_bound"]
    assert json.loads((tmp_path / "wan22.json").read_text())["runs"] == runs


def test_train_large_resumes_the_one_schedule_from_fp32_as_if_never_stopped(monkeypatch, tmp_path):
    """Issue #33's Large recipe at toy width: 3 + 3 steps through the checkpoint equal 6 steps in one run
    (weights, EMA, optimiser, learning-rate schedule and data streams all resume); the alignment check runs
    and lands in the record; a resumed run with other settings is refused."""
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.syspath_prepend(str(TRAINING))
    train = importlib.import_module("large")
    common = ["--tiny", "--check-every", "3", "--budget-s", "600", "--threads", "1"]
    once = train.main(["--work", str(tmp_path / "once"), "--total-steps", "6", *common])
    train.main(["--work", str(tmp_path / "twice"), "--total-steps", "6", "--max-steps", "3", *common])
    twice = train.main(["--work", str(tmp_path / "twice"), "--max-steps", "3", *common])
    assert once["step"] == twice["step"] == 6 and [c["step"] for c in twice["checks"]] == [3, 6]
    a = torch.load(tmp_path / "once" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "twice" / "checkpoint.pt", weights_only=False)
    for part in ("model", "ema"):
        for key, value in a[part].items():
            torch.testing.assert_close(b[part][key], value, rtol=1e-5, atol=1e-6)
    record = json.loads((tmp_path / "twice" / "large" / "training.json").read_text())
    assert record["steps"] == 6 and len(record["command"]) == 2 and len(record["alignment_curve"]) == 2
    assert 0.0 <= record["alignment_curve"][-1]["digit"] <= 1.0
    with pytest.raises(SystemExit, match="continues with its own settings"):
        train.main(["--work", str(tmp_path / "twice"), "--batch", "8", *common])


def test_prompt_gate_reads_what_a_large_draws_and_the_real_ceiling(monkeypatch, tmp_path):
    """The gate on a tiny random Large (it ignores its prompt: it must not pass) beside the real videos of
    its data read by the same encoder (the ceiling: far above chance)."""
    import shutil

    monkeypatch.syspath_prepend(str(BENCH))
    gate = importlib.import_module("prompt_gate")
    from diffusers import WanTransformer3DModel

    from adaptive.toy.models import WEIGHTS_DIR

    torch.manual_seed(0)
    monkeypatch.syspath_prepend(str(TRAINING))
    train = importlib.import_module("large")
    WanTransformer3DModel(**train.CONFIGS["tiny"]).save_pretrained(tmp_path / "pair" / "large")
    for name in ("encoder.safetensors", "encoder.json"):
        shutil.copy2(WEIGHTS_DIR / name, tmp_path / "pair" / name)
    result = gate.main([f"tiny={tmp_path / 'pair'}", "--videos", "8", "--steps", "2", "--threads", "1",
                        "--out", str(tmp_path / "gate")])
    row, real = result["candidates"][0], result["real"][0]
    assert not row["passes"] and row["digit"] < 0.5 and real["digit"] >= 0.75 and real["variant"] == "grain"
    assert (tmp_path / "gate" / "tiny.png").stat().st_size > 0
    assert "| tiny | grain |" in (tmp_path / "gate" / "gate.md").read_text()
    assert set(result["seeds"]).isdisjoint(range(20_000, 20_100))  # never the training checks' seeds


# samplers.py: Euler against UniPC (issue #35) ---------------------------------------------------------
def test_samplers_table_compares_euler_and_unipc_on_the_embedded_pair(monkeypatch, tmp_path, capsys):
    monkeypatch.syspath_prepend(str(BENCH))
    samplers = importlib.import_module("samplers")
    assert samplers._windows(6, 3) == [(6, 0, 3), (6, 3, 6)]
    out = tmp_path / "s"
    assert samplers.main(["--runs", "euler:4,unipc:4", "--num-prompts", "1", "--seeds", "2", "--stride", "2",
                          "--trials", "2", "--out", str(out)]) == 0
    rows = json.loads((out / "samplers.json").read_text())
    assert [(r["sampler"], r["steps"]) for r in rows] == [("euler", 4), ("unipc", 4)]
    assert all(r["large_fewer"]["4"] == 1.0 and r["blends"] == 2 and r["frontier"]["sampler"] == r["sampler"]
               for r in rows)
    # each sampler's Large-fewer is judged against Large with all steps on that same sampler: they differ
    assert rows[0]["large_fewer"]["2"] != rows[1]["large_fewer"]["2"]
    text = (out / "samplers.md").read_text()
    assert text.startswith("`python benchmarks/samplers.py --runs euler:4,unipc:4") and "| unipc, 4 |" in text
