"""Video: bouncing-glyph clips, the H.264 (PyAV) / decord round trip, and the Latte-style video DiT."""

from __future__ import annotations

import numpy as np
import pytest

from ditpareto.errors import InputError


@pytest.fixture(scope="module")
def clips():
    from ditpareto.glyph_clips import draw_clips

    return draw_clips("train", 6)


def test_the_smallest_encoded_frames_round_trip_through_h264_and_decord(clips, tmp_path):
    """32 x 32 frames (the render side; 16 x 16 would be one macroblock) come back close, the same on every
    encode, and a clip decodes the same alone as among others (closed GOPs, constant quantiser)."""
    from ditpareto.glyph_clips import RENDER_SIZE
    from ditpareto.videoio import read_clips, write_clips

    assert clips.clips.shape == (6, 16, RENDER_SIZE, RENDER_SIZE, 1) and RENDER_SIZE == 32
    write_clips(tmp_path / "all.mp4", clips.clips)
    decoded = read_clips(tmp_path / "all.mp4", 16)
    assert decoded.shape == clips.clips.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - clips.clips).mean() < 1.5
    write_clips(tmp_path / "again.mp4", clips.clips)
    assert (tmp_path / "again.mp4").read_bytes() == (tmp_path / "all.mp4").read_bytes()
    write_clips(tmp_path / "one.mp4", clips.clips[4:5])
    np.testing.assert_array_equal(read_clips(tmp_path / "one.mp4", 16)[0], decoded[4])
    np.testing.assert_array_equal(read_clips(tmp_path / "all.mp4", 16, clips=[4])[0], decoded[4])
    assert not list(tmp_path.glob("*.partial*"))


def test_bad_clips_and_files_are_refused_with_one_clear_message(tmp_path):
    from ditpareto.videoio import read_clips, write_clips

    with pytest.raises(InputError, match="at least 16 x 16"):
        write_clips(tmp_path / "x.mp4", np.zeros((1, 16, 8, 8, 1), np.uint8))
    with pytest.raises(InputError, match="uint8 array"):
        write_clips(tmp_path / "x.mp4", np.zeros((1, 16, 32, 32, 1), np.float32))
    with pytest.raises(InputError, match="does not exist"):
        read_clips(tmp_path / "missing.mp4", 16)
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(InputError, match="not a readable video"):
        read_clips(tmp_path / "junk.mp4", 16)
    write_clips(tmp_path / "two.mp4", np.zeros((2, 16, 32, 32, 1), np.uint8))
    with pytest.raises(InputError, match="whole number of 12-frame clips"):
        read_clips(tmp_path / "two.mp4", 12)


def test_a_clip_depends_only_on_seed_draw_and_index(clips):
    from ditpareto.glyph_clips import ATTRIBUTES, draw_clips

    again = draw_clips("train", 3)
    np.testing.assert_array_equal(again.clips, clips.clips[:3])
    other = draw_clips("reference", 3)
    assert not np.array_equal(other.clips, clips.clips[:3])
    assert set(clips.attributes) == set(ATTRIBUTES)
    np.testing.assert_array_equal(clips.labels, clips.attributes["digit"])


def test_glyphs_move_over_a_static_background(clips):
    """Frames differ (motion), the background does not (a large share of temporally redundant tokens), and the
    bounce follows the reflection closed form."""
    from ditpareto.glyph_clips import _bounce, downsample, static_token_fraction

    small = downsample(clips.clips)
    assert small.shape == (6, 16, 16, 16, 1)
    assert all(not np.array_equal(c[0], c[-1]) for c in small)
    assert 0.3 < static_token_fraction(small) < 0.95
    frozen = np.repeat(small[:, :1], 16, axis=1)
    assert static_token_fraction(frozen) == 1.0
    positions, bounces = _bounce(0.9, 0.2, 4, 1.0)
    np.testing.assert_allclose(positions, [0.9, 0.9, 0.7, 0.5])  # 1.1 reflects to 0.9
    assert bounces == 1


def _randomised(module, seed=0):
    """Every parameter random (adaLN gates included), so an equality is not one of zeros."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    return module


def _image_and_video(temporal_position):
    import torch

    from ditpareto.archs import dit_config, latte_config
    from ditpareto.models.dit import DiT
    from ditpareto.models.latte import Latte, inflate_image_dit

    image = _randomised(DiT(dit_config("dit-micro-2", 16, in_channels=1, num_classes=10))).eval()
    config = latte_config("latte-micro-2", 16, in_channels=1, num_classes=10, num_frames=4,
                          temporal_position=temporal_position)
    video = Latte(config).eval()
    video.load_state_dict(inflate_image_dit(image.state_dict(), config))
    x = torch.randn(3, 4, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    t, y = torch.tensor([10, 500, 999]), torch.tensor([1, 2, 3])
    return image, video, x, t, y


def test_an_inflated_video_model_equals_the_image_model_frame_by_frame():
    """Zero-gated temporal blocks add nothing; with the frame embedding on the temporal attention's input the
    video model is the image model on every frame. Latte's own placement (on the stream) is not."""
    import torch

    image, video, x, t, y = _image_and_video("temporal")
    with torch.no_grad():
        out = video(x, t, y)
        per_frame = torch.stack([image(x[:, f], t, y) for f in range(4)], dim=1)
    assert out.shape == (3, 4, 2, 16, 16)
    torch.testing.assert_close(out, per_frame, rtol=0, atol=1e-6)
    image, stream, x, t, y = _image_and_video("stream")
    with torch.no_grad():
        assert (stream(x, t, y) - per_frame).abs().max() > 1e-3


def test_temporal_blocks_mix_frames_once_their_gates_open():
    import torch

    _, video, x, t, y = _image_and_video("temporal")
    changed = x.clone()
    changed[:, 0] += 1.0
    with torch.no_grad():
        assert torch.equal(video(x, t, y)[:, 1:], video(changed, t, y)[:, 1:])  # zero gates: frames independent
        for i in range(1, len(video.blocks), 2):
            _randomised(video.blocks[i], seed=i)
        assert (video(x, t, y)[:, 1:] - video(changed, t, y)[:, 1:]).abs().max() > 1e-4


def test_latte_has_the_official_parameter_layout():
    """Latte's names: blocks.{2i} spatial, blocks.{2i+1} temporal, a (1, F, D) temp_embed, no y_embedder when
    unconditional; a wrong image base is refused by name."""
    from ditpareto.archs import dit_config, latte_config
    from ditpareto.models.dit import DiT
    from ditpareto.models.latte import Latte, inflate_image_dit

    config = latte_config("latte-micro-2", 32, num_classes=0)
    state = Latte(config).state_dict()
    assert state["temp_embed"].shape == (1, 16, 32) and state["pos_embed"].shape == (1, 4, 32)
    assert not any(k.startswith("y_embedder") for k in state)
    assert {int(k.split(".")[1]) for k in state if k.startswith("blocks.")} == set(range(4))
    assert state["blocks.1.attn.qkv.weight"].shape == (96, 32)
    image = DiT(dit_config("dit-micro-2", 32)).state_dict()
    inflated = inflate_image_dit(image, config)  # the class embedding is dropped
    assert set(inflated) == set(state)
    with pytest.raises(InputError, match="has 4 blocks; 2 spatial"):
        inflate_image_dit(DiT(dit_config("dit-tiny-2", 32)).state_dict(), config)
    with pytest.raises(InputError, match="depth must be even"):
        latte_config("latte-micro-2", 32, depth=3)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_clips_sample_and_train_through_the_image_diffusion_code(sampler):
    """Clips (N, F, C, H, W) carry the learned variance on dim 2, as Latte's diffusion does: an inflated model
    sampled from the same noise gives the image model's per-frame samples (DDIM), every clip finite (DDPM); the
    training loss has one value per clip, with its VLB term."""
    import torch

    from ditpareto.diffusion import GaussianDiffusion, sample_generators, sample_loop

    image, video, x, t, y = _image_and_video("temporal")
    diffusion = GaussianDiffusion.respaced(sampler, 4)
    with torch.no_grad():
        clips = sample_loop(diffusion, lambda z, step, mt: video(z, mt, y), x.clone(), sample_generators(0, [0, 1, 2]),
                            sampler)
        assert clips.shape == x.shape and torch.isfinite(clips).all()
        if sampler == "ddim":
            frames = torch.stack([sample_loop(diffusion, lambda z, step, mt: image(z, mt, y), x[:, f].clone(),
                                              sample_generators(0, [0, 1, 2]), sampler) for f in range(4)], dim=1)
            torch.testing.assert_close(clips, frames, rtol=0, atol=1e-5)
        losses = diffusion.training_losses(video, x, torch.tensor([1, 2, 3]), {"y": y}, torch.randn_like(x))
    assert losses["loss"].shape == (3,) and torch.isfinite(losses["vb"]).all()


def test_the_clip_extractor_perturbations_do_what_they_say(clips):
    from ditpareto.clip_extractor import perturb
    from ditpareto.glyph_clips import downsample

    small = downsample(clips.clips)
    shuffled = perturb(small, "shuffled", seed=1)
    for a, b in zip(small, shuffled):  # the same frames, another order
        assert sorted(f.tobytes() for f in a) == sorted(f.tobytes() for f in b)
    assert not np.array_equal(shuffled, small)
    assert (perturb(small, "frozen") == small[:, :1]).all()
    np.testing.assert_array_equal(perturb(small, "reversed")[:, 0], small[:, -1])
    jittered = perturb(small, "jittered", seed=2)
    padded = np.pad(small, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    shifts = [padded[:, :, dy:dy + 16, dx:dx + 16] for dy in range(3) for dx in range(3)]
    matches = np.stack([(jittered == s).all(axis=(2, 3, 4)) for s in shifts])  # (9 shifts, N, T)
    assert matches.any(axis=0).all()  # every frame is its original moved by at most one pixel each way
    assert not matches[4].all()  # and not all of them unmoved
    with pytest.raises(InputError, match="unknown perturbation"):
        perturb(small, "blurred")


def test_prepare_clips_writes_decodable_clips_and_their_frames(tmp_path):
    """prepare-clips: H.264 + labels (the record's codec error and frame size), every decoded frame as an image
    draw; pretrain-video refuses an image model by name before any work (the chain itself: the miniature study)."""
    import json

    from ditpareto.cli import main
    from ditpareto.clipsets import load_clip_draw
    from ditpareto.data import load_draw

    main(["prepare-clips", "--draw", "train", "--num", "12", "--out", str(tmp_path / "train.npz"),
          "--video", str(tmp_path / "train.mp4"), "--frames-out", str(tmp_path / "frames.npz")])
    record = json.loads((tmp_path / "train.npz.json").read_text())
    assert record["frames"] == 16 and record["frame_size"] == 16 and record["codec_mean_abs_error"] < 1.5
    clips, attributes = load_clip_draw(tmp_path / "train.npz", tmp_path / "train.mp4")
    assert clips.clips.shape == (12, 16, 16, 16, 1) and set(attributes) >= {"direction_bin", "bounces"}
    np.testing.assert_array_equal(load_draw(tmp_path / "frames.npz").images, clips.frames())
    image = ["--model", "dit-micro-2", "--image-size", "16", "--in-channels", "1", "--num-classes", "10"]
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain-video", *image, "--data", str(tmp_path / "train.npz"), "--image-base", str(tmp_path / "x.pt"),
              "--steps", "1", "--state", str(tmp_path / "s.pt"), "--log-csv", str(tmp_path / "v.csv"),
              "--out", str(tmp_path / "x.pt")])
    assert exit_info.value.code == 2
    # a second stage: --init continues a Latte checkpoint (sha256-checked first; a wrong arch is named)
    import torch

    from ditpareto.models import build_model

    latte = ["--model", "latte-micro-2", "--image-size", "16", "--in-channels", "1", "--num-classes", "10"]
    torch.save(build_model("latte-micro-2", 16, in_channels=1, num_classes=10).state_dict(), tmp_path / "s1.pt")
    stage = ["pretrain-video", *latte, "--data", str(tmp_path / "train.npz"), "--init", str(tmp_path / "s1.pt"),
             "--steps", "1", "--batch-size", "4", "--state", str(tmp_path / "s.pt"),
             "--log-csv", str(tmp_path / "v.csv"), "--out", str(tmp_path / "s2.pt")]
    with pytest.raises(SystemExit) as exit_info:
        main([*stage, "--init-sha256", "0" * 64])
    assert exit_info.value.code != 0 and not (tmp_path / "s2.pt").exists()
    main(stage)
    assert json.loads((tmp_path / "s2.pt.pretrain.json").read_text())["init_sha256"]
    torch.save(build_model("dit-micro-2", 16, in_channels=1, num_classes=10).state_dict(), tmp_path / "dit.pt")
    with pytest.raises(SystemExit):
        main([*stage[:8], "--init", str(tmp_path / "dit.pt"), *stage[10:]])


def test_the_static_ladder_samples_clips_and_counts_latte_macs_in_closed_form(tmp_path):
    """`sample --method dit` on a Latte checkpoint: clips (N, F, H, W, C), paired noise per clip, executed MACs
    equal to the closed form (spatial adaLN per frame, temporal per location) with and without guidance."""
    import json

    import torch

    from ditpareto.archs import latte_config
    from ditpareto.cli import main
    from ditpareto.models.latte import Latte
    from ditpareto.npzfiles import load_samples
    from ditpareto.spec.dit import dit_macs_per_call

    config = latte_config("latte-micro-2", 16, in_channels=1, num_classes=10)
    torch.manual_seed(0)
    torch.save(_randomised(Latte(config)).state_dict(), tmp_path / "latte.pt")
    video = ["--model", "latte-micro-2", "--image-size", "16", "--in-channels", "1", "--num-classes", "10"]
    for cfg in ("1.0", "2.0"):
        main(["sample", "--method", "dit", "--budget", "3", "--seed", "0", "--checkpoint", str(tmp_path / "latte.pt"),
              *video, "--num-samples", "3", "--batch-size", "2", "--cfg-scale", cfg, "--guidance-channels", "all",
              "--out", str(tmp_path / f"s{cfg}.npz"), "--record", str(tmp_path / f"s{cfg}.json")])
        record = json.loads((tmp_path / f"s{cfg}.json").read_text())
        calls = 3 * (2 if cfg == "2.0" else 1)
        assert record["gmacs_per_image"] * 1e9 == pytest.approx(calls * dit_macs_per_call(config), rel=1e-9)
    samples = load_samples(tmp_path / "s1.0.npz")
    assert samples["images"].shape == (3, 16, 16, 16, 1)
    assert not np.array_equal(samples["images"], load_samples(tmp_path / "s2.0.npz")["images"])


def test_evaluate_video_refuses_image_samples_before_any_compute(tmp_path):
    import json

    from ditpareto.cli import main
    from ditpareto.npzfiles import save_npz

    save_npz({"images": np.zeros((4, 16, 16, 1), np.uint8), "labels": np.zeros(4, np.int64),
              "indices": np.arange(4)}, tmp_path / "img.npz")
    record = {"method": "dit", "budget": "10", "steps": 10, "ft": "0.00", "cfg_scale": 1.0, "seed": 0,
              "gmacs_per_image": 4.5, "params": {"num_samples": 4}}
    (tmp_path / "img.json").write_text(json.dumps(record))
    (tmp_path / "w.pt").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate-video", "--samples", str(tmp_path / "img.npz"), "--record", str(tmp_path / "img.json"),
              "--reference", str(tmp_path / "missing.npz"), "--clip-extractor", str(tmp_path / "w.pt"),
              "--extractor-weights", str(tmp_path / "w.pt"), "--out", str(tmp_path / "x.json")])
    assert exit_info.value.code == 2 and not (tmp_path / "x.json").exists()


def test_the_miniature_video_study_runs_from_clips_to_figures(venv_env, tmp_path):
    """config/video-mini.yaml through Snakemake: clip draws, image base -> inflated Latte base (bf16), the clip
    extractor and its validation, the static ladders (dit, and dit-ft after the equal-compute fine-tune on clips),
    FlexiDiT (fine-tuned at the same compute, weak (2, 2, 2) steps first), DyDiT and FlexDiT (one fine-tune per
    budget at the same compute) sampled and scored (FVD-toy with CI,
    per-frame FID), the table, the verdicts, the pareto, the frame strip and the clips."""
    import pandas as pd
    from PIL import Image

    from conftest import REPO, run_snakemake

    run_snakemake(venv_env, tmp_path, REPO / "config/video-mini.yaml", "--cores", "2")
    table = pd.read_csv(tmp_path / "results/video/tables/metrics.csv", dtype={"budget": str})
    assert sorted(zip(table["method"], table["budget"])) == [("dit", "2"), ("dit", "3"), ("dit-ft", "3"),
                                                             ("dydit", "0.50"), ("flexdit", "0.61-0.86"),
                                                             ("flexidit", "0.67")]
    trained = dict(zip(table["method"], table["train_gmacs"] > 0))
    assert (table["fvd_toy"] >= 0).all() and trained == {"dit": False, "dit-ft": True, "dydit": True, "flexdit": True,
                                                         "flexidit": True}
    assert (tmp_path / "results/video/checkpoints/dydit/budget~0.50/finetuned.pt").is_file()  # one per budget
    flexidit = table[table["method"] == "flexidit"].iloc[0]  # 2 of 3 steps at (2, 2, 2): below dit at 3 steps
    assert flexidit["gmacs_per_image"] < table[(table["method"] == "dit") & (table["budget"] == "3")].iloc[0][
        "gmacs_per_image"]
    assert table["frame_fid"].notna().all() and (table["fvd_toy_ci_high"] >= table["fvd_toy_ci_low"]).all()
    assert table["gmacs_per_image"].iloc[0] < table["gmacs_per_image"].iloc[1]  # 2 steps < 3 steps
    validation = pd.read_csv(tmp_path / "results/video/tables/clip_validation.csv")
    assert set(validation["perturbation"]) == {"none (floor)", "shuffled", "frozen", "jittered", "reversed"}
    for name in ("pareto.png", "samples.png"):
        assert (tmp_path / "results/video/figures" / name).stat().st_size > 1000
    with Image.open(tmp_path / "results/video/figures/clips.gif") as gif:
        assert gif.n_frames == 16
    verdicts = pd.read_csv(tmp_path / "results/video/tables/verdicts.csv")
    claim = verdicts[verdicts["claim"].str.contains("75 % compute")].iloc[0]  # FlexiDiT's, at its nearest budget
    assert claim["method"] == "flexidit" and claim["toy_analogue"].startswith("flexidit 0.67 at 3 steps")
    assert claim["ci_low"] <= claim["estimate"] <= claim["ci_high"] and claim["tolerance"] > 0
