"""The flowblend command line, end to end on the embedded pair and on a saved diffusers pair."""

from __future__ import annotations

import json
import re
import statistics

import pytest
import torch
from conftest import tiny_wan

from adaptive.cli import main, parse_schedule


def test_bench_quick_end_to_end(tmp_path, capsys):
    out = tmp_path / "bench"
    oracle = tmp_path / "oracle.json"  # the layout benchmarks/oracle.py writes
    oracle.write_text(json.dumps({"oracle": {"sigma_in": 0.75, "sigma_out": 0.0}}))
    assert main(["bench", "--quick", "--num", "2", "--steps", "6", "--out", str(out), "--store", str(tmp_path),
                 "--oracle", str(oracle)]) == 0
    for name in ("bench.md", "bench.csv", "bench.json", "pareto.png", "strip.png"):
        assert (out / name).stat().st_size > 0
    data = json.loads((out / "bench.json").read_text())
    rows, raw = data["rows"], data["seconds_raw"]
    base = statistics.median(raw[rows[0]["name"]])
    for row in rows:
        # Every ratio comes from the same run's raw timings.
        assert row["speedup"] == pytest.approx(base / statistics.median(raw[row["name"]]))
        assert row["seconds_per_video"] == pytest.approx(statistics.median(raw[row["name"]]) / 2)
    assert any(r["name"].startswith("5. oracle") for r in rows)
    srd, blend = (next(r for r in rows if r["name"].startswith(p)) for p in ("6c. SRDiffusion", "3. FlowBlending"))
    assert "srdiffusion_threshold" in srd["schedule"] and srd["gflops_per_video"] < rows[0]["gflops_per_video"]
    small = next(r for r in rows if r["name"].startswith("2."))
    assert small["flops_saved_pct"] > 50
    assert "| 1. Large only |" in capsys.readouterr().out


def test_demo_and_sample(tmp_path, capsys):
    # The shipped profile's own grid (30 steps): its plan, and Large with the steps its compute buys beside it.
    assert main(["demo", "--num", "2", "--steps", "30", "--repeats", "1", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "speed-up:" in printed and (tmp_path / "demo.png").exists()
    # Issue #33 item 3: each run's prompt alignment (the pair's encoder reading the prompted digit and
    # direction), the CLIP-score analogue, beside its similarity to Large.
    import re

    assert "prompt digit/direction" in printed
    assert len(re.findall(r"(?m)^(Large, 30 steps|chosen|Large, \d+ steps \().*\d\.\d\d / \d\.\d\d ", printed)) == 3
    # Issue #26 item 7: each figure says where it was measured (calibration's choice on its own prompts,
    # the table on held-out prompts and seeds), and the plan is judged against its alternative.
    assert "held-out prompts and seeds" in printed and "chosen (by calibration, on its own prompts)" in printed
    # The blended run is named by its stages, whatever the schedule's shape.
    assert main(["demo", "--num", "1", "--steps", "4", "--repeats", "1", "--schedule", "lsl:0.9,0.4",
                 "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "chosen: Large-Small-Large, 4 steps:" in printed and "Large, 2 steps (the same compute):" in printed
    assert "verdict:" in printed and "n/a (one video)" in printed  # one video has no standard error
    assert main(["sample", "--num", "2", "--steps", "3", "--prompt", "a 4 moving down", "--schedule", "lsl:0.9,0.4",
                 "--out", str(tmp_path)]) == 0
    assert (tmp_path / "sample_001.gif").exists()


def test_calibrate_embedded_pair_per_prompt_then_sample_online_and_bench(tmp_path, capsys, monkeypatch):
    store = tmp_path / "store"
    assert main(["calibrate", "--steps", "6", "--trials", "3", "--num-prompts", "2", "--seeds", "1", "--per-prompt",
                 "--store", str(store), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "recommended plan" in printed and "online controller" in printed and (tmp_path / "divergence.png").exists()
    spent = json.loads(next(store.glob("*.json")).read_text())["cost"]
    assert re.search(r"calibration cost +\d\.\d\d Large passes per sample of a budget of 3 \(probe ", printed)
    assert sum(spent["passes_by_phase"].values()) <= 3.0 + 1e-9
    profiles = list(store.glob("*.json"))
    assert len(profiles) == 1 and len(json.loads(profiles[0].read_text())["per_prompt"]["windows"]) == 2
    monkeypatch.setenv("ADAPTIVE_PROFILES", str(store))
    assert main(["sample", "--num", "2", "--steps", "6", "--schedule", "online", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "row 0:" in printed and "row 1:" in printed
    with pytest.warns(UserWarning, match="calibrated with Euler steps; Heun runs"):  # Heun has no profile of its own
        assert main(["sample", "--num", "1", "--steps", "6", "--schedule", "online", "--sampler", "heun",
                     "--out", str(tmp_path / "heun")]) == 0
    assert "row 0:" in capsys.readouterr().out
    assert main(["bench", "--quick", "--num", "2", "--steps", "6", "--out", str(tmp_path / "bench"),
                 "--store", str(store)]) == 0
    names = [r["name"] for r in json.loads((tmp_path / "bench" / "bench.json").read_text())["rows"]]
    assert any(n.startswith("4a. per-prompt") for n in names) and any(n.startswith("4b. online") for n in names)


def test_calibrate_a_saved_diffusers_pair(tmp_path, capsys):
    from safetensors.torch import save_file

    tiny_wan(heads=2, layers=2, seed=0).save_pretrained(tmp_path / "large")
    tiny_wan(heads=1, layers=1, seed=1).save_pretrained(tmp_path / "small")
    save_file({"prompt_embeds": torch.randn(2, 3, 32), "negative_prompt_embeds": torch.zeros(1, 3, 32)},
              str(tmp_path / "emb.safetensors"))
    assert main(["calibrate", "--large", str(tmp_path / "large"), "--small", str(tmp_path / "small"),
                 "--embeddings", str(tmp_path / "emb.safetensors"), "--shape", "16,1,4,4", "--steps", "5",
                 "--trials", "3", "--seeds", "1", "--store", str(tmp_path / "store"), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "recommended plan" in printed and "best 5-step window" in printed and "of Large only" in printed


def _saved_pair(tmp_path) -> list[str]:
    """A tiny Wan pair saved with save_pretrained and its prompt embeddings: the CLI arguments that name them
    (4 steps, 2 seeds, a store in ``tmp_path``)."""
    from safetensors.torch import save_file

    tiny_wan(heads=2, layers=2, seed=0).save_pretrained(tmp_path / "large")
    tiny_wan(heads=1, layers=1, seed=1).save_pretrained(tmp_path / "small")
    save_file({"prompt_embeds": torch.randn(2, 3, 32), "negative_prompt_embeds": torch.zeros(1, 3, 32)},
              str(tmp_path / "emb.safetensors"))
    pair_args = ["--large", str(tmp_path / "large"), "--small", str(tmp_path / "small"), "--embeddings",
                 str(tmp_path / "emb.safetensors"), "--shape", "16,1,4,4", "--steps", "4", "--seeds", "2",
                 "--store", str(tmp_path / "store")]
    return pair_args


def test_frontier_of_a_saved_diffusers_pair_and_calibrate_reports_against_it(tmp_path, capsys):
    from adaptive.frontier import Frontier

    pair_args = _saved_pair(tmp_path)
    assert main(["calibrate", *pair_args, "--trials", "4", "--out", str(tmp_path)]) == 0
    assert "not measured: `flowblend frontier`" in capsys.readouterr().out
    out = tmp_path / "frontier"
    assert main(["frontier", *pair_args, "--blend-steps", "4,2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    frontier = Frontier.load(out / "frontier.json")
    assert len(frontier.blends()) == 10 + 3 and frontier.samples == 4 and frontier.metric == "latent_structure"
    assert "stored profile's plan" in printed and "measured frontier" in printed
    assert (out / "frontier.png").stat().st_size > 0 and "| latent_structure |" in (out / "frontier.md").read_text()
    assert len(list((tmp_path / "store" / "frontiers").glob("*.json"))) == 1
    assert main(["calibrate", *pair_args, "--trials", "4", "--out", str(tmp_path)]) == 0  # the study is reused
    assert "measured frontier" in capsys.readouterr().out
    for bad in ("9", "x"):
        with pytest.raises(SystemExit):
            main(["frontier", *pair_args, "--blend-steps", bad])
        assert "--blend-steps must be step counts in 1..4" in capsys.readouterr().err


def test_oracle_of_the_embedded_pair_writes_the_window_bench_runs(tmp_path, capsys):
    from adaptive import sigmas
    from adaptive.cli.bench import oracle_window as _oracle_window

    assert main(["oracle", "--steps", "3", "--num-prompts", "1", "--seeds", "1", "--trials", "2",
                 "--out", str(tmp_path)]) == 0
    assert f"wrote {tmp_path / 'oracle.json'}" in capsys.readouterr().out
    data = json.loads((tmp_path / "oracle.json").read_text())
    assert data["command"].startswith("flowblend oracle --steps 3 ") and data["refined"]["trials"] == 2
    found = data["oracle"]
    assert found["start"] < found["stop"] and found["quality"] >= 0.95  # Small on the last step passes
    assert found["quality"] >= data["refined"]["quality"] - 1e-9 or found["cost_fraction"] < data["refined"]["cost_fraction"]
    spent = data["compute_large_equivalents_per_sample"]
    assert spent["sweep"] > spent["refinement"] > 0 and len(data["divergence"]["rel_l2"]) == 3
    assert _oracle_window(str(tmp_path / "oracle.json")).small_steps(sigmas(3, 3.0)) == \
        list(range(found["start"], found["stop"]))
    # on UniPC: the probe, refinement and sweep all run UniPC's steps, and the command says so
    assert main(["oracle", "--steps", "3", "--num-prompts", "1", "--seeds", "1", "--trials", "2", "--sampler", "unipc",
                 "--out", str(tmp_path / "unipc")]) == 0
    unipc = json.loads((tmp_path / "unipc" / "oracle.json").read_text())
    assert "--sampler unipc" in unipc["command"]
    assert unipc["divergence"]["rel_l2"] != data["divergence"]["rel_l2"]  # another grid, another path


def test_bad_schedule_text_is_explained():
    with pytest.raises(Exception, match="lsl:0.85,0.3"):
        parse_schedule("lsl:0.3")
    with pytest.raises(SystemExit):
        main(["sample", "--schedule", "nonsense"])


def test_frontier_of_the_embedded_pair_prints_each_plans_prompt_alignment(tmp_path, capsys):
    """Issue #33 item 3: beside the similarity to Large, what users check first: the share of videos whose
    prompted digit and direction the pair's encoder reads, for Large, Large with a third of the steps (and the
    stored plan with its Large-fewer when a profile exists)."""
    import re

    assert main(["frontier", "--steps", "3", "--num-prompts", "1", "--seeds", "2", "--blend-steps", "3",
                 "--store", str(tmp_path / "store"), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "prompt alignment on these 2 videos" in printed
    rows = re.findall(r"(?m)^  (Large, \d steps?) +compute (\d\.\d\d): (\d\.\d\d) / (\d\.\d\d)$", printed)
    assert [r[0] for r in rows] == ["Large, 3 steps", "Large, 1 step"] and rows[0][1] == "1.00"
    assert all(0.0 <= float(r[2]) <= 1.0 and 0.0 <= float(r[3]) <= 1.0 for r in rows)


def test_calibrate_frontier_and_sample_on_the_pipelines_sampler(tmp_path, capsys):
    """--sampler unipc: the profile is calibrated and stored for UniPC, the frontier runs UniPC and finds
    that profile's plan."""
    from adaptive.frontier import Frontier

    pair_args = _saved_pair(tmp_path) + ["--sampler", "unipc"]
    assert main(["calibrate", *pair_args, "--trials", "3", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "unipc-4-shift3" in printed and list((tmp_path / "store").glob("*__unipc-4-shift3.json"))
    assert not list((tmp_path / "store").glob("*__euler-*.json"))
    out = tmp_path / "frontier"
    assert main(["frontier", *pair_args, "--out", str(out)]) == 0
    frontier = Frontier.load(out / "frontier.json")
    assert frontier.sampler == "unipc" and "--sampler unipc" in frontier.command
    assert "stored profile's plan" in capsys.readouterr().out  # the UniPC profile, found by its key
    with pytest.raises(SystemExit, match="one model call per step"):
        main(["calibrate", *pair_args[:-2], "--sampler", "heun", "--out", str(tmp_path)])


def test_sample_the_embedded_pair_on_unipc_says_it_runs_eulers_profile_in_one_line(tmp_path, capsys):
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(["sample", "--num", "1", "--steps", "30", "--sampler", "unipc", "--out", str(tmp_path)]) == 0
    lines = [str(w.message) for w in seen if issubclass(w.category, UserWarning) and "unipc" in str(w.message)]
    assert len(lines) == 1 and "euler-30-shift3" in lines[0] and "--sampler unipc" in lines[0]
    assert "plan:" in capsys.readouterr().out
