"""The switch as a denoiser (issue #16): same samples and decisions as before, for every path.

``tests/data/switch_reference.pt`` was recorded by ``tests/switch_cases.py`` on the code before the
switch moved into a denoiser; each case here is rerun and must match it bit for bit.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from switch_cases import all_cases

REFERENCE = torch.load(Path(__file__).parent / "data" / "switch_reference.pt", weights_only=False)


def _same(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def test_every_recorded_case_is_still_run():
    assert sorted(all_cases()) == sorted(REFERENCE)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_samples_and_decisions_match_the_code_before_the_switch_moved(name):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the recording's thread count: same reduction order, same bits
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = all_cases()[name]()
    finally:
        torch.set_num_threads(threads)
    assert _same(got, REFERENCE[name]), name
