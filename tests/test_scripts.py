"""Measurement scripts: frontier.py (does any one-window blend beat Large with the steps its compute
buys?) and ink_levels.py (the ink brightness behind the Frechet distance)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@pytest.fixture
def frontier(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))  # the scripts import their sibling evaluate_pair
    return importlib.import_module("frontier")


def test_ink_levels_bins_ink_pixels_by_brightness(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    ink_levels = importlib.import_module("ink_levels").ink_levels
    video = torch.full((1, 1, 2, 2, 5), -1.0)
    video[0, 0, 0, 0, :4] = torch.tensor([-0.5, 0.2, 0.9, 1.3])  # 1.3 is clamped into the top bin
    share, spread = ink_levels(video)
    assert share == pytest.approx(4 / 20)
    assert spread.tolist() == pytest.approx([0.25, 0.0, 0.25, 0.0, 0.5])


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


def test_frontier_measures_every_window_on_the_shipped_pair(frontier, tmp_path, capsys):
    frontier.main(["--prompts", "2", "--seeds", "1", "--steps", "3", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "frontier.json").read_text())
    large = [r for r in result["rows"] if r["kind"] == "large"]
    blends = [r for r in result["rows"] if r["kind"] == "blend"]
    assert [r["large_steps"] for r in large] == [1, 2, 3]
    assert sorted((r["start"], r["stop"]) for r in blends) == [(a, b) for a in range(3) for b in range(a + 1, 4)]
    assert large[-1]["feature_sim"] == pytest.approx([1.0, 1.0], abs=1e-4)  # the reference itself
    small_only = next(r for r in blends if (r["start"], r["stop"]) == (0, 3))
    assert 0.05 < small_only["cost"] < 0.25 and max(small_only["feature_sim"]) < 0.999
    assert (tmp_path / "frontier.png").stat().st_size > 0
    assert "| run |" in (tmp_path / "frontier.md").read_text() and "| run |" in capsys.readouterr().out


def test_wan_scale_rehearses_every_section_on_tiny_wan_models(monkeypatch, tmp_path, capsys):
    """The real-scale timing script on the same diffusers classes at toy size, on the CPU: every
    section runs, each run ran the models its plan names (the drop-in's trace, the sampler's
    decisions), the bounds follow from the measured ratios, and the report is written."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
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
    monkeypatch.syspath_prepend(str(SCRIPTS))
    wan_scale = importlib.import_module("wan_scale")
    from diffusers import WanTransformer3DModel

    counts = []
    for config in (wan_scale.WAN_14B, wan_scale.WAN_1_3B):
        with torch.device("meta"):
            counts.append(sum(p.numel() for p in WanTransformer3DModel(**config).parameters()) / 1e9)
    assert counts[0] == pytest.approx(14.3, abs=0.2) and counts[1] == pytest.approx(1.42, abs=0.05)
