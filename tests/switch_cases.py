"""Seeded sampling runs whose outputs were recorded before the switch became a denoiser (issue #16).

``tests/data/switch_reference.safetensors`` holds what these cases returned on commit 23733e8 (the sampler
that decided per step inside its loop, and the drop-in with its own step counter); made with
``python tests/switch_cases.py tests/data/switch_reference.safetensors``. ``test_switch.py`` reruns them and
asks for the same tensors, bit for bit, and the same decisions.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))

from conftest import tiny_wan  # noqa: E402

from adaptive import ModelPair, Profile, Schedule, TransformerDenoiser, fingerprint, sample, sample_heun, sigmas  # noqa: E402
from adaptive.controller import ControllerConfig  # noqa: E402
from adaptive.profiles import prompt_key  # noqa: E402

STEPS = 10
SCHEDULES = {
    "large_only": None,
    "lsl": Schedule.lsl(0.8, 0.3),
    "small_first": Schedule.small_first(0.6),
    "large_first": Schedule.large_first(0.5),
    "three_models": Schedule.from_stages([(1.0, 0.7, "large"), (0.7, 0.4, "medium"), (0.4, 0.0, "small")]),
}


def wan_models() -> dict[str, Any]:
    large, small = tiny_wan(heads=2, layers=2, seed=0), tiny_wan(heads=1, layers=1, seed=1)
    medium = tiny_wan(heads=1, layers=2, seed=2)
    return {name: TransformerDenoiser(m) for name, m in (("large", large), ("small", small), ("medium", medium))}


def wan_inputs(batch: int = 3) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(batch, 16, 2, 2, 2, generator=g)
    return noise, {"encoder_hidden_states": torch.randn(batch, 6, 32, generator=g)}


CUT_DIRECTION = torch.tensor([1.0, -1.0, 1.0, -1.0]) / 2


def cut_large(x: torch.Tensor, sigma: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
    return -x


def cut_small(x: torch.Tensor, sigma: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
    """Small is 2% off inside (0.15, c] and 200% off elsewhere: prompt ``c`` has a known window."""
    assert c is not None
    s = sigma.view(-1, 1)
    bad = (s > c[:, :1]) | (s < 0.15)
    error = torch.where(bad, torch.full_like(s, 2.0), torch.full_like(s, 0.02))
    return -x + error * x.norm(dim=1, keepdim=True) * CUT_DIRECTION


CONTROLLERS = {
    "raw": ControllerConfig(threshold=0.1, sigma_out=0.15, smoothing=1.0, probe_budget=20),
    "smoothed_patience": ControllerConfig(threshold=0.1, sigma_out=0.2, smoothing=0.5, patience=2, probe_budget=8),
    "span_checks": ControllerConfig(threshold=0.1, smoothing=1.0, probe_budget=20, small_span=2, monitor_every=2,
                                    monitor_threshold=0.5, large_probe_budget=3),
    "span_only": ControllerConfig(threshold=0.1, smoothing=1.0, probe_budget=20, small_span=3),
}


def cut_inputs() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    noise = torch.randn(4, 4, generator=torch.Generator().manual_seed(1))
    return noise, {"c": torch.tensor([0.9, 0.7, 0.5, 0.3]).view(-1, 1)}


def decisions_record(d: Any) -> dict[str, Any]:
    return {"models": d.models, "probes": d.probes, "monitors": d.monitors, "hand_in": d.hand_in, "back": d.back,
            "reason": d.reason}


def sampler_cases() -> dict[str, Callable[[], Any]]:
    cases: dict[str, Callable[[], Any]] = {}
    for sampler in (sample, sample_heun):
        for name, schedule in SCHEDULES.items():
            def run(sampler: Any = sampler, schedule: Any = schedule) -> Any:
                noise, cond = wan_inputs()
                return sampler(wan_models(), noise, sigmas(STEPS, 3.0), schedule, **cond)
            cases[f"{sampler.__name__}/{name}"] = run
    for name, config in CONTROLLERS.items():
        for mode in ("split", "shared"):
            def run_online(config: ControllerConfig = config, mode: str = mode) -> Any:
                noise, cond = cut_inputs()
                x, d = sample(ModelPair(cut_large, cut_small), noise, sigmas(20), config, batch_decisions=mode,
                              return_decisions=True, **cond)
                return x, decisions_record(d)
            cases[f"online/{name}/{mode}"] = run_online

    def run_wan_online() -> Any:
        noise, cond = wan_inputs()
        pair = ModelPair(*(wan_models()[k] for k in ("large", "small")))
        config = ControllerConfig(threshold=1e6, sigma_out=0.4, sigma_in_max=0.95, probe_budget=3)
        x, d = sample(pair, noise, sigmas(STEPS, 3.0), config, return_decisions=True, **cond)
        return x, decisions_record(d)
    cases["online/wan_hand_over_first_chance"] = run_wan_online

    def run_per_prompt() -> Any:
        noise, cond = wan_inputs()
        pair = ModelPair(*(wan_models()[k] for k in ("large", "small")))
        keys = [prompt_key({"encoder_hidden_states": cond["encoder_hidden_states"][b:b + 1]}) for b in range(2)]
        grid = sigmas(STEPS, 3.0).tolist()
        profile = Profile(pair_fingerprint=fingerprint(pair), sampler=f"euler-{STEPS}-shift3", num_steps=STEPS, shift=3.0,
                          sigma_in=0.8, sigma_out=0.3,
                          per_prompt={"windows": {keys[0]: {"start": 1, "stop": 5, "sigma_in": grid[1], "sigma_out": grid[5]},
                                                  keys[1]: {"start": 3, "stop": 8, "sigma_in": grid[3], "sigma_out": grid[8]}}})
        x, d = sample(pair, noise, sigmas(STEPS, 3.0), profile, return_decisions=True, **cond)
        return x, decisions_record(d)
    cases["per_prompt/profile"] = run_per_prompt
    return cases


def _wan_pipe(large: Any, scheduler: str) -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler, WanPipeline

    flow = FlowMatchEulerDiscreteScheduler(shift=3.0) if scheduler == "euler" else \
        UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return WanPipeline(tokenizer=None, text_encoder=None, transformer=large, vae=None, scheduler=flow)


def _run_pipe(pipe: Any, steps: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 16, 2, 2, 2, generator=g)
    prompt, null = torch.randn(1, 6, 32, generator=g), torch.zeros(1, 6, 32)
    return pipe(prompt_embeds=prompt, negative_prompt_embeds=null, latents=latents, height=16, width=16,
                num_frames=5, num_inference_steps=steps, guidance_scale=4.0, output_type="latent").frames


def dropin_cases() -> dict[str, Callable[[], Any]]:
    from adaptive.blend import blend

    cases: dict[str, Callable[[], Any]] = {}
    for scheduler in ("euler", "unipc"):
        def run_fixed(scheduler: str = scheduler) -> Any:
            pipe = blend(_wan_pipe(tiny_wan(seed=0), scheduler), tiny_wan(heads=1, layers=1, seed=1),
                         Schedule.lsl(0.9, 0.4), num_inference_steps=8)
            out = _run_pipe(pipe)
            return out, [name for _, name in pipe.transformer.trace], decisions_record(pipe.transformer.decisions)
        cases[f"dropin/fixed/{scheduler}"] = run_fixed

    def run_no_grid() -> Any:  # no num_inference_steps: the grid is read when the pipeline runs
        pipe = blend(_wan_pipe(tiny_wan(seed=0), "euler"), tiny_wan(heads=1, layers=1, seed=1), Schedule.lsl(0.9, 0.4))
        return _run_pipe(pipe), [name for _, name in pipe.transformer.trace]
    cases["dropin/fixed/grid_at_run"] = run_no_grid

    def span_checks() -> ControllerConfig:
        """A threshold the probes cross downwards (found with a run that never hands over)."""
        pipe = blend(_wan_pipe(tiny_wan(seed=0), "euler"), tiny_wan(heads=1, layers=1, seed=1),
                     ControllerConfig(threshold=0.0, smoothing=1.0, probe_budget=4), num_inference_steps=8)
        _run_pipe(pipe)
        values = [p[2] for p in pipe.transformer.decisions.probes[0]]
        k = next(i for i in range(1, len(values)) if values[i] < max(values[:i]))
        return ControllerConfig(threshold=values[k], smoothing=1.0, probe_budget=4, small_span=2, monitor_every=2,
                                monitor_threshold=0.0, large_probe_budget=2)

    for name, make in {
        "first_chance": lambda: ControllerConfig(threshold=1e6, sigma_out=0.4, sigma_in_max=0.95, probe_budget=3),
        "span_checks": span_checks,
    }.items():
        def run_online(make: Callable[[], ControllerConfig] = make) -> Any:
            config = make()
            pipe = blend(_wan_pipe(tiny_wan(seed=0), "euler"), tiny_wan(heads=1, layers=1, seed=1), config,
                         num_inference_steps=8)
            first = _run_pipe(pipe)
            again = _run_pipe(pipe)  # a second run starts a fresh controller
            return first, again, decisions_record(pipe.transformer.decisions)
        cases[f"dropin/online/{name}"] = run_online
    return cases


def all_cases() -> dict[str, Callable[[], Any]]:
    return {**sampler_cases(), **dropin_cases()}


def run_all() -> dict[str, Any]:
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {name: run() for name, run in all_cases().items()}


def save_results(results: dict[str, Any], out: Path) -> None:
    """Tensors to ``out`` (safetensors, keyed ``<case>/<path>``), everything else to ``out`` with
    ``.json``, a tensor standing there as ``{"tensor": key}`` (no pickle)."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}

    def encode(value: Any, key: str) -> Any:
        if isinstance(value, torch.Tensor):
            tensors[key] = value.detach().cpu().contiguous().clone()
            return {"tensor": key}
        if isinstance(value, (list, tuple)):
            return [encode(v, f"{key}/{i}") for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {str(k): encode(v, f"{key}/{k}") for k, v in value.items()}
        return value

    structure = {name: encode(value, name) for name, value in results.items()}
    save_file(tensors, str(out))
    out.with_suffix(".json").write_text(json.dumps(structure) + "\n")


def load_results(path: Path) -> dict[str, Any]:
    """What :func:`save_results` wrote."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))

    def decode(value: Any) -> Any:
        if isinstance(value, dict):
            return tensors[value["tensor"]] if set(value) == {"tensor"} else {k: decode(v) for k, v in value.items()}
        if isinstance(value, list):
            return [decode(v) for v in value]
        return value

    return {name: decode(v) for name, v in json.loads(path.with_suffix(".json").read_text()).items()}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    results = run_all()
    save_results(results, out)
    print(f"wrote {len(results)} cases to {out} and {out.with_suffix('.json')}")
