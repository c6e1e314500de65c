"""The embedded pair: data, shipped weights, encoder and metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptive import FeatureSimilarity, Schedule, frechet_distance
from adaptive.toy import WEIGHTS_DIR, encode_prompts, generate, load_pair, make_videos, parse_prompt, prompt_for
from adaptive.toy.data import glyphs
from adaptive.toy.harness import Harness, load_encoder


def test_videos_are_deterministic_and_in_range():
    a = make_videos(6, np.random.default_rng(3))
    b = make_videos(6, np.random.default_rng(3))
    assert np.array_equal(a.videos, b.videos) and a.videos.shape == (6, 1, 8, 32, 32)
    assert a.videos.min() >= -1 and a.videos.max() <= 1
    assert parse_prompt(a.prompts[0]) == (a.digits[0], a.directions[0])


def test_grain_variant_keeps_the_plain_video_and_dims_ink_only():
    plain = make_videos(6, np.random.default_rng(3))
    grain = make_videos(6, np.random.default_rng(3), variant="grain")
    assert np.array_equal(plain.digits, grain.digits) and np.all(plain.grain == 0)
    assert np.all((grain.grain >= 0.3) & (grain.grain <= 0.6))
    background = plain.videos == -1
    assert np.array_equal(grain.videos[background], plain.videos[background])
    ink = plain.videos > 0
    dimmed = grain.videos[ink] < plain.videos[ink]
    assert 0.3 < dimmed.mean() < 0.7  # about half the ink pixels, independently per frame
    with pytest.raises(ValueError, match="variant"):
        make_videos(2, np.random.default_rng(0), variant="sparkly")


@pytest.mark.parametrize("variant", ["texture", "multi"])
def test_textured_variants_keep_the_prompted_glyph_on_a_scrolling_background(variant):
    """Issue #18's candidate data: the prompted digit where the plain video has it (ink textured, never
    brightened), a power-law background under it that moves from frame to frame, same shape."""
    plain = make_videos(6, np.random.default_rng(3))
    textured = make_videos(6, np.random.default_rng(3), variant=variant)
    assert textured.videos.shape == plain.videos.shape and np.array_equal(plain.digits, textured.digits)
    assert textured.videos.min() >= -1 and textured.videos.max() <= 1
    assert np.all((textured.grain >= 0.3) & (textured.grain <= 0.6))
    ink = plain.videos > 0
    if variant == "texture":  # (in "multi" the second digit may cross the first)
        assert np.all(textured.videos[ink] <= plain.videos[ink] + 1e-6)
    background = textured.videos[plain.videos == -1]
    assert background.std() > 0.02 and background.max() < 0  # textured
    assert textured.videos[ink].mean() > background.mean() + 0.5  # the prompted digit stands out
    frames = textured.videos[:, 0]
    assert np.abs(np.diff(frames, axis=1)).mean() > np.abs(np.diff(plain.videos[:, 0], axis=1)).mean()


def test_power_law_field_has_the_asked_spectrum():
    from adaptive.toy.data import power_law_field

    fields = power_law_field(256, 32, np.random.default_rng(0), exponent=1.0)
    assert fields.shape == (256, 32, 32) and fields.min() == 0 and fields.max() == 1
    power = (np.abs(np.fft.fft2(fields - fields.mean(axis=(1, 2), keepdims=True))) ** 2).mean(0)
    # amplitude ~ 1/|f|: power at frequency 2 is 4x that at frequency 4 and 16x that at frequency 8
    assert power[0, 2] / power[0, 4] == pytest.approx(4, rel=0.35)
    assert power[0, 2] / power[0, 8] == pytest.approx(16, rel=0.35)


def test_train_and_heldout_glyphs_are_disjoint():
    train, _ = glyphs("train")
    held, _ = glyphs("heldout")
    flat_train = {t.tobytes() for t in train}
    assert not any(h.tobytes() in flat_train for h in held)


def test_prompts_and_text_encoder():
    emb = encode_prompts([prompt_for(7, 4), ""])
    assert emb.shape == (2, 4, 32) and torch.count_nonzero(emb[1]) == 0
    assert torch.equal(encode_prompts([prompt_for(7, 4)]), emb[:1])
    with pytest.raises(ValueError, match="vocabulary"):
        encode_prompts(["a cat moving sideways"])


@pytest.fixture(scope="module")
def harness():
    return Harness()


def test_encoder_reads_real_heldout_videos(harness):
    real = make_videos(256, np.random.default_rng(11), "heldout", variant=harness.variant)
    digit_acc, direction_acc = harness.alignment(torch.from_numpy(real.videos), real.digits, real.directions)
    assert digit_acc > 0.8 and direction_acc > 0.9


def test_encoder_reads_grain_and_its_loss():
    harness = Harness(variant="grain")
    if not harness.encoder.reads_grain:
        pytest.skip("the shipped encoder was trained on plain data")
    real = make_videos(128, np.random.default_rng(13), "heldout", variant="grain")
    videos = torch.from_numpy(real.videos)
    readings = harness.encoder.grain(videos).detach().numpy()
    assert np.abs(readings - real.grain).mean() < 0.1
    assert np.corrcoef(readings, real.grain)[0, 1] > 0.7
    # What an early-stopped sampler leaves: the grain averaged away (a 3x3 blur of each frame).
    blurred = torch.nn.functional.avg_pool3d(videos, (1, 3, 3), stride=1, padding=(0, 1, 1), count_include_pad=False)
    assert harness.grain(blurred) < harness.grain(videos) - 0.1


def test_plain_encoders_load_without_grain_and_say_so(tmp_path):
    import json

    from safetensors.torch import load_file, save_file

    from adaptive.toy import WEIGHTS_DIR
    from adaptive.toy.data import variant_of

    state = {k: v for k, v in load_file(str(WEIGHTS_DIR / "encoder.safetensors")).items()
             if not k.startswith("grain_head.")}
    save_file(state, str(tmp_path / "encoder.safetensors"))
    plain = Harness(load_encoder(tmp_path / "encoder.safetensors"), variant=variant_of(tmp_path))
    assert plain.variant == "plain" and not plain.encoder.reads_grain
    videos = torch.from_numpy(make_videos(4, np.random.default_rng(0)).videos)
    assert "grain" not in plain.report(videos, np.zeros(4, int), np.zeros(4, int))
    with pytest.raises(ValueError, match="cannot read grain"):
        plain.grain(videos)
    (tmp_path / "encoder.json").write_text(json.dumps({"data": "sparkly"}))
    with pytest.raises(ValueError, match="known variants"):
        variant_of(tmp_path)


def test_metrics_behave(harness):
    real = make_videos(64, np.random.default_rng(12), "heldout", variant=harness.variant)
    videos = torch.from_numpy(real.videos)
    assert torch.allclose(harness.similarity(videos, videos), torch.ones(64), atol=1e-5)
    feats = harness.features(videos).numpy()
    assert frechet_distance(feats, feats) < 1e-3
    shuffled = np.random.default_rng(0).permutation(real.digits)
    assert harness.alignment(videos, shuffled, real.directions)[0] < harness.alignment(videos, real.digits,
                                                                                         real.directions)[0]
    noise = torch.rand_like(videos) * 2 - 1
    assert harness.frechet(noise, real=256) > harness.frechet(videos, real=256)


def test_vision_backbone_features_with_a_tiny_dinov2():
    transformers = pytest.importorskip("transformers")
    from adaptive.metrics import VisionModelFeatures

    config = transformers.Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32, image_size=28, patch_size=14)
    torch.manual_seed(0)
    metric = FeatureSimilarity(VisionModelFeatures(transformers.Dinov2Model(config)))
    videos = torch.rand(2, 1, 3, 32, 32) * 2 - 1
    assert torch.allclose(metric(videos, videos), torch.ones(2), atol=1e-5)
    assert float(metric(videos, -videos).mean()) < 0.9999


def test_shipped_pair_samples_reproducibly():
    pair, encode = load_pair()
    videos = generate(pair, [prompt_for(3, 1), prompt_for(8, 6)], seeds=[0, 1], num_steps=6)
    again = generate(pair, [prompt_for(3, 1), prompt_for(8, 6)], seeds=[0, 1], num_steps=6)
    assert torch.equal(videos, again)
    blended = generate(pair, [prompt_for(3, 1)], seeds=[0], schedule=Schedule.lsl(0.9, 0.3), num_steps=6)
    assert not torch.equal(blended[0], videos[0])
    # A fixed slice of the shipped Large model's output (regression check of weights and sampler).
    expected = torch.tensor(EXPECTED_SLICE)
    torch.testing.assert_close(videos[0, 0, 3, 12, 10:16], expected, rtol=0, atol=5e-3)



def test_bf16_pair_from_pretrained_samples_close_to_fp32():
    # from_pretrained(torch_dtype=bf16) keeps Wan's norms and time embedder in fp32 and the text
    # embeddings arrive in fp32: the denoiser must cast both ways for the pair to run at all.
    prompts, seeds = [prompt_for(3, 1)], [0]
    fp32 = generate(load_pair()[0], prompts, seeds, num_steps=4)
    bf16 = generate(load_pair(dtype=torch.bfloat16)[0], prompts, seeds, num_steps=4)
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    rel = float((bf16 - fp32).norm() / fp32.norm())
    assert rel < 0.1, rel


EXPECTED_SLICE = [-0.1739, -0.3151, 0.0541, 0.2664, 0.6567, -0.0681]


def test_training_script_records_data_steps_and_history(tmp_path):
    import json

    from adaptive.toy.data import variant_of
    from adaptive.toy.train import main as train

    tiny = ["--threads", "1", "--batch", "2", "--encoder-batch", "2"]
    train(["all", "--out", str(tmp_path / "a"), "--encoder-steps", "2", "--small-steps", "2", "--large-steps", "2",
           *tiny])
    # No --data: the shipped pair's variant, so the new weights and the shipped harness agree.
    assert variant_of(tmp_path / "a") == variant_of(WEIGHTS_DIR)
    record = json.loads((tmp_path / "a" / "small" / "training.json").read_text())
    assert record["steps"] == 2 and record["data"] == variant_of(tmp_path / "a") and record["device"] == "cpu"
    pair, _ = load_pair(tmp_path / "a")  # loads through from_pretrained like the shipped folder
    assert generate(pair, [prompt_for(1, 2)], seeds=[0], num_steps=2).shape == (1, 1, 8, 32, 32)
    # Continuing with a time limit stops after the first step but still saves and counts every run.
    train(["small", "--init", str(tmp_path / "a"), "--out", str(tmp_path / "b"), "--small-steps", "50",
           "--max-minutes", "0", *tiny])
    again = json.loads((tmp_path / "b" / "small" / "training.json").read_text())
    assert again["steps"] == 3 and again["previous_steps"] == 2 and len(again["history"]) == 1


def test_a_pruned_large_keeps_the_blocks_asked_for_and_refuses_others():
    """``pruned_copy``: every block kept is the Large itself (same output); a subset is a shallower model
    of the same widths whose blocks are the Large's; a block that does not exist is refused."""
    from diffusers import WanTransformer3DModel

    from adaptive.toy.models import LARGE_CONFIG
    from adaptive.toy.train import pruned_copy

    torch.manual_seed(0)
    large = WanTransformer3DModel(**dict(LARGE_CONFIG, num_layers=3, num_attention_heads=1, ffn_dim=32)).eval()
    x, t, cond = torch.randn(1, 1, 8, 32, 32), torch.tensor([500.0]), torch.randn(1, 4, LARGE_CONFIG["text_dim"])
    with torch.no_grad():
        full, same = (m(x, t, cond, return_dict=False)[0] for m in (large, pruned_copy(large, [0, 1, 2]).eval()))
    assert torch.allclose(full, same, atol=1e-6)
    small = pruned_copy(large, [0, 2])
    assert small.config.num_layers == 2 and small.config.ffn_dim == 32
    assert torch.equal(small.blocks[1].attn1.to_q.weight, large.blocks[2].attn1.to_q.weight)
    for bad in ([], [3], [1, 1]):
        with pytest.raises(ValueError, match="distinct blocks of the 3"):
            pruned_copy(large, bad)


def test_the_pairs_metric_fails_garbled_videos_that_the_pooled_features_let_through():
    """(c) Smeared (doubled), torn (halves swapped) and blotched copies of real videos score below a
    clean copy and below the default target on the embedded pair's metric; the pooled feature
    cosine alone passes at least one of them, which is how broken blends were shipped."""
    import numpy as np

    from adaptive.calibration import DEFAULT_QUALITY_TARGET
    from adaptive.metrics import WorstOf
    from adaptive.toy import load_pair
    from adaptive.toy.data import make_videos

    metric = load_pair()[0].metric
    assert isinstance(metric, WorstOf)
    real = torch.from_numpy(make_videos(16, np.random.default_rng(3), "heldout").videos)
    clean = (real + 0.01 * torch.randn(real.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    smeared = (0.5 * real + 0.5 * real.roll(3, dims=-1)).clamp(-1, 1)
    torn = torch.cat([real[..., 16:, :], real[..., :16, :]], dim=-2)
    blotched = real.clone()
    blotched[..., 8:14, 8:14] = -blotched[..., 8:14, 8:14]
    clean_score = metric(clean, real).mean()
    assert clean_score > 0.99
    features = metric.metrics[0]
    passed_by_features = 0
    for garbled in (smeared, torn, blotched):
        score = metric(garbled, real).mean()
        assert score < DEFAULT_QUALITY_TARGET < clean_score
        passed_by_features += float(features(garbled, real).mean()) >= DEFAULT_QUALITY_TARGET
    assert passed_by_features >= 1
