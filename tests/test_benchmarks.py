"""The research bench (``benchmarks/``): each script rehearsed at toy size, its outputs in the layout
the docs cite."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _bench(monkeypatch, name: str):
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module(name)


def test_samplers_table_compares_euler_and_unipc_on_the_embedded_pair(monkeypatch, tmp_path, capsys):
    samplers = _bench(monkeypatch, "samplers")
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
