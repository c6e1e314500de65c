"""``flowblend`` on diffusers pipeline folders (``--pipeline``): a Wan 2.2 pipeline with two experts and a
Wan 2.1 one on UniPC, tiny random models saved with save_pretrained; the profile the CLI stores is the one
the library finds, and ``blend(pipe, small, "auto")`` then runs it call by call."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import tiny_wan

from adaptive import Schedule, calibrate_pool
from adaptive.blend import blend
from adaptive.cli import main
from adaptive.pool_profiles import find_pool_profile, key_of, pipeline_pool
from adaptive.profile_store import ProfileStore
from adaptive.samplers import Sampler

SIZE = ["--height", "16", "--width", "16", "--frames", "5"]  # latent (16, 2, 2, 2)


def _save_pipeline(folder, two_experts: bool):
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline

    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    unipc = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    extra = {"transformer_2": tiny_wan(seed=2), "boundary_ratio": 0.875} if two_experts else {}
    WanPipeline(tokenizer=None, text_encoder=None, transformer=tiny_wan(seed=0), vae=vae, scheduler=unipc,
                **extra).save_pretrained(folder)


def _load_pipeline(folder):
    from diffusers import WanPipeline

    return WanPipeline.from_pretrained(folder, tokenizer=None, text_encoder=None, local_files_only=True)


@pytest.fixture
def saved(tmp_path):
    """Folders of a Wan 2.2 pipeline, a Wan 2.1 one, a Small and two prompts' embeddings."""
    from safetensors.torch import save_file

    _save_pipeline(tmp_path / "wan22", two_experts=True)
    _save_pipeline(tmp_path / "wan21", two_experts=False)
    tiny_wan(heads=1, layers=1, seed=1).save_pretrained(tmp_path / "small")
    prompts = torch.randn(2, 6, 32, generator=torch.Generator().manual_seed(3))
    save_file({"prompt_embeds": prompts, "negative_prompt_embeds": torch.zeros(1, 6, 32)},
              str(tmp_path / "emb.safetensors"))
    return tmp_path


def _args(saved, pipeline: str) -> list[str]:
    return ["--pipeline", str(saved / pipeline), "--small", str(saved / "small"), "--embeddings",
            str(saved / "emb.safetensors"), "--store", str(saved / "store"), *SIZE, "--steps", "8"]


def test_wan22_folder_calibrates_the_pool_and_auto_runs_its_plan(saved, capsys):
    from safetensors.torch import load_file

    args = _args(saved, "wan22")
    assert main(["calibrate", *args, "--guidance", "4", "--guidance-2", "3", "--seeds", "1", "--trials", "4",
                 "--target", "0.9", "--out", str(saved / "out")]) == 0
    printed = capsys.readouterr().out
    solver = Sampler.of(_load_pipeline(saved / "wan22").scheduler)  # the pool is judged on what the pipeline runs
    assert "Wan 2.2" in printed and solver.signature(8) in printed.split("sampler")[1].split("\n")[0]

    from diffusers import AutoModel

    pipe, small = _load_pipeline(saved / "wan22"), AutoModel.from_pretrained(str(saved / "small"))
    embeds = load_file(str(saved / "emb.safetensors"))
    uncond = {"encoder_hidden_states": embeds["negative_prompt_embeds"]}
    pool = pipeline_pool(pipe, small, 4.0, 3.0, uncond, x=torch.zeros(1, 16, 2, 2, 2),
                         encoder_hidden_states=embeds["prompt_embeds"][:1])
    stored = find_pool_profile(key_of(pool)[0], Sampler.of(pipe.scheduler).grid(8), Sampler.of(pipe.scheduler),
                               ProfileStore(saved / "store"), reference=Schedule.experts(0.875))
    assert stored.sampler == solver.signature(8) and solver.name == "unipc" and stored.pool_name == "wan22"
    # The same search in the library, on the same inputs, finds the same plan.
    conds = [{"encoder_hidden_states": embeds["prompt_embeds"][i:i + 1]} for i in range(2)]
    by_hand = calibrate_pool(pipe, conds, small=small, guidance_scale=4.0, guidance_scale_2=3.0, uncond=uncond,
                             num_steps=8, shape=(16, 2, 2, 2), seeds=[0], target=0.9, n_trials=4, save=False)
    assert by_hand.schedule() == stored.schedule()

    # "auto" runs the stored plan call by call, found for the pipeline's own sampler (no warning); sample from
    # the folder does the same and writes GIFs.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        blend(pipe, small, "auto", num_inference_steps=8, guidance_scale=4.0, guidance_scale_2=3.0,
              store=saved / "store")
    pipe(prompt_embeds=conds[0]["encoder_hidden_states"], negative_prompt_embeds=uncond["encoder_hidden_states"],
         height=16, width=16, num_frames=5, num_inference_steps=8, guidance_scale=4.0, guidance_scale_2=3.0,
         output_type="latent")
    assert pipe.transformer.decisions.models[0] == stored.schedule().step_models(pipe.scheduler.sigmas)
    out = saved / "samples"
    assert main(["sample", *args, "--guidance", "4", "--guidance-2", "3", "--num", "2", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.gif")) == ["sample_000.gif", "sample_001.gif"]


def test_wan21_folder_calibrates_on_its_own_scheduler_and_auto_finds_it(saved, capsys):
    args = _args(saved, "wan21")
    assert main(["calibrate", *args, "--guidance", "4", "--seeds", "1", "--trials", "2", "--out",
                 str(saved / "out")]) == 0
    assert "unipc-8-shift3" in capsys.readouterr().out  # judged on the pipeline's UniPC, stored under it
    from diffusers import AutoModel

    pipe = _load_pipeline(saved / "wan21")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        blend(pipe, AutoModel.from_pretrained(str(saved / "small")), "auto", num_inference_steps=8, guidance_scale=4.0,
              store=saved / "store")
    assert [p.name.split("__")[1] for p in (saved / "store").glob("*__*.json")] == ["unipc-8-shift3.json"]
    assert not [w for w in caught if "euler" in str(w.message).lower()]  # its own sampler's profile, said nowhere else


@pytest.mark.parametrize("extra, message", [
    (["--sampler", "euler"], "the pipeline runs unipc"),
    (["--shift", "5"], "shifts by 3"),
    (["--large", "x"], "leave out --large"),
    (["--guidance-2", "3"], "has one transformer"),
])
def test_pipeline_arguments_refused_before_loading(saved, capsys, extra, message):
    with pytest.raises(SystemExit):
        main(["calibrate", *_args(saved, "wan21"), *extra])
    assert message in capsys.readouterr().err


def test_pipeline_needs_small_and_frontier_refuses_two_experts(saved, capsys):
    with pytest.raises(SystemExit):
        main(["calibrate", "--pipeline", str(saved / "wan22"), "--embeddings", str(saved / "emb.safetensors")])
    assert "--pipeline needs --small" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["frontier", *_args(saved, "wan22")])
    assert "frontier measures two-model pairs" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # no text encoder saved: the prompts must come as embeddings
        main(["sample", "--pipeline", str(saved / "wan22"), "--small", str(saved / "small"), "--prompt", "a cat"])
    assert "give --embeddings" in capsys.readouterr().err
