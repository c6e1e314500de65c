"""The walkthrough notebook runs top to bottom on the embedded pair (public API only)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"
SMALLER = {"STEPS, SHIFT = 16, 3.0": "STEPS, SHIFT = 8, 3.0", "n_trials=16": "n_trials=6"}


def test_walkthrough_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # Every cell runs as written, on a shorter grid and study than the rendered notebook's (16 steps,
    # 16 trials: `python notebooks/run_notebook.py --inplace` renders it), so the suite stays within its minutes.
    for old, new in SMALLER.items():
        cells = [cell for cell in nb.cells if cell.cell_type == "code" and old in cell.source]
        assert len(cells) == 1, f"the notebook no longer says {old!r}: update SMALLER"
        cells[0].source = cells[0].source.replace(old, new)
    # The kernel takes this test's share of the cores (one each when `make test` runs a worker per core).
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4
    source = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
    assert "adaptive._" not in source and "from adaptive.calibration" not in source  # public API only
