"""FlexDiT on video (models/flexlatte): the conversion invariants against the Latte base, the per-frame sparse
grids with temporal blocks on the pooled locations, the density schedule through the method, executed MACs on real
trajectories equal to the closed form (with and without CFG), a fine-tune step on clips, the simulated device and
bf16."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import randomize_

from ditpareto.archs import FlexLayout, default_layout, dit_config, latte_config
from ditpareto.errors import InputError
from ditpareto.methods import METHODS, ModelSpec, SamplingSettings
from ditpareto.models import CheckpointError
from ditpareto.models.flexlatte import FlexLatte, flexlatte_from_latte, temporal_path
from ditpareto.models.latte import Latte
from ditpareto.spec.flexdit import FlexBudget, flexdit_macs_per_call, stage_sides

METHOD = METHODS["flexdit"]
# Six block pairs with every role present: 1 PF pair, 1 SDTM x [Sparse-Gen, 1 sparse, Dense-Rec, 1 dense], 1 top.
FULL = FlexLayout(pf=1, sdtms=1, sparse=1, dense=1, top=1)
SPEC = ModelSpec("latte-micro-2", 16, in_channels=1, num_classes=10)
SIDES = (8, 5, 3, 1)  # the full 8 x 8 grid of a frame down to one token


def latte_base(depth: int = 12, temporal_position: str = "temporal", frames: int = 4, seed: int = 0) -> Latte:
    """A latte-micro-2-shaped base with every trainable parameter random (gates included, so that no equality is
    one of zeros)."""
    config = latte_config("latte-micro-2", 16, in_channels=1, num_classes=10, depth=depth, num_frames=frames,
                          temporal_position=temporal_position)
    return randomize_(Latte(config), seed, std=0.1).eval()


def clips(batch: int = 2, frames: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, frames, 1, 16, 16, generator=g), torch.tensor([10, 700, 400][:batch]),
            torch.tensor([1, 2, 3][:batch]))


# ------------------------------------------------------------------ references built from the base's own blocks


def _mod(h, shift, scale):
    return h * (1 + scale[:, None]) + shift[:, None]


def uniform_block(block, h, c):
    """A pretrained block whose attention matrix is 1/L everywhere within each sequence (the Poolingformer)."""
    d, length = h.shape[-1], h.shape[1]
    sh1, sc1, g1, sh2, sc2, g2 = block.adaLN_modulation(c).chunk(6, dim=1)
    v = block.attn.qkv(_mod(block.norm1(h), sh1, sc1))[..., 2 * d:]
    x = h + g1[:, None] * block.attn.proj(torch.full((len(h), length, length), 1 / length) @ v)
    return x + g2[:, None] * block.mlp(_mod(block.norm2(x), sh2, sc2))


def cross_block(block, xq, xkv, c, heads):
    """A pretrained block with queries from xq and keys/values from xkv (the Q and KV thirds of its qkv), the same
    adaLN shift/scale on both, softmax attention written out."""
    d = xq.shape[-1]
    sh1, sc1, g1, sh2, sc2, g2 = block.adaLN_modulation(c).chunk(6, dim=1)
    w, b = block.attn.qkv.weight, block.attn.qkv.bias
    mq, mkv = _mod(block.norm1(xq), sh1, sc1), _mod(block.norm1(xkv), sh1, sc1)

    def split(h):
        return h.reshape(len(h), h.shape[1], heads, d // heads).transpose(1, 2)

    q = split(F.linear(mq, w[:d], b[:d]))
    k, v = split(F.linear(mkv, w[d:2 * d], b[d:2 * d])), split(F.linear(mkv, w[2 * d:], b[2 * d:]))
    attn = torch.softmax(q @ k.transpose(-1, -2) / (d // heads) ** 0.5, dim=-1) @ v
    x = xq + g1[:, None] * block.attn.proj(attn.transpose(1, 2).reshape(xq.shape))
    return x + g2[:, None] * block.mlp(_mod(block.norm2(x), sh2, sc2))


def reference_forward(base: Latte, layout: FlexLayout, x, t, y, side: int) -> torch.Tensor:
    """The converted model as the Latte base's own blocks re-routed (models/flexlatte's mapping), written out
    independently: pair i = (blocks.2i, blocks.2i+1) takes role i; the merge is Xm = Xd at conversion."""
    cfg = base.config
    n, f, d, grid, heads = *x.shape[:2], cfg.hidden_size, cfg.grid_size, cfg.num_heads
    c = base.condition(t, y)
    per_frame = c.repeat_interleave(f, 0)
    stream = cfg.temporal_position == "stream"
    pending = [stream]

    def temporal(i, h):  # base block 2i+1 across the frames at each of h's locations
        length = h.shape[1]
        seq = h.reshape(n, f, length, d).transpose(1, 2).reshape(n * length, f, d)
        seq = base.blocks[2 * i + 1](seq, c.repeat_interleave(length, 0), None if stream else base.temp_embed[0])
        return seq.reshape(n, length, f, d).transpose(1, 2).reshape(n * f, length, d)

    def frame_table(*hs):  # Latte's stream placement, once, after the first spatial block
        if not pending[0]:
            return hs
        pending[0] = False
        return tuple(h + base.temp_embed[0].repeat(n, 1)[:, None, :] for h in hs)

    def pool(h):
        return F.adaptive_avg_pool2d(h.transpose(1, 2).reshape(-1, d, grid, grid), side).flatten(2).transpose(1, 2)

    h = base.x_embedder(x.flatten(0, 1)) + base.pos_embed
    i = 0
    for _ in range(layout.pf):
        (h,) = frame_table(uniform_block(base.blocks[2 * i], h, per_frame))
        h, i = temporal(i, h), i + 1
    for _ in range(layout.sdtms):
        skip = h
        z = cross_block(base.blocks[2 * i], pool(skip), skip, per_frame, heads)
        z, skip = frame_table(z, skip)
        z, i = temporal(i, z), i + 1
        for _ in range(layout.sparse):
            z, i = temporal(i, base.blocks[2 * i](z, per_frame)), i + 1
        h = cross_block(base.blocks[2 * i], skip, z, per_frame, heads)
        h, i = temporal(i, h), i + 1
        for _ in range(layout.dense):
            h, i = temporal(i, base.blocks[2 * i](h, per_frame)), i + 1
    for _ in range(layout.top):
        h, i = temporal(i, base.blocks[2 * i](h, per_frame)), i + 1
    out = base.unpatchify(base.final_layer(h, per_frame))
    return out.reshape(n, f, *out.shape[1:])


# ------------------------------------------------------------------ conversion invariants


@pytest.mark.parametrize("layout, depth", [(FULL, 12), (None, 4)])  # PF pair first; Sparse-Gen pair first
@pytest.mark.parametrize("temporal_position", ["temporal", "stream"])
@pytest.mark.parametrize("pf_mode, w1_after", [("mean_first", False), ("per_token", True)])
def test_the_converted_model_is_the_latte_bases_blocks_rerouted_at_every_side(layout, depth, temporal_position,
                                                                            pf_mode, w1_after):
    base = latte_base(depth, temporal_position)
    model = flexlatte_from_latte(base, layout, pf_mode=pf_mode, w1_after_upsample=w1_after).eval()
    x, t, y = clips()
    with torch.no_grad():
        for side in SIDES:
            expected = reference_forward(base, model.layout, x, t, y, side)
            torch.testing.assert_close(model(x, t, y, side=side), expected, rtol=0, atol=1e-5)
        assert (model(x, t, y, side=8) - base(x, t, y)).abs().max() > 1e-3  # not the base: fine-tuning is needed


def test_poolingformer_pair_is_uniform_attention_within_each_frame():
    base = latte_base()
    x, t, y = clips()
    h = base.x_embedder(x.flatten(0, 1)) + base.pos_embed
    c = base.condition(t, y).repeat_interleave(4, 0)
    expected = uniform_block(base.blocks[0], h, c)
    for pf_mode in ("mean_first", "per_token"):
        block = flexlatte_from_latte(base, FULL, pf_mode=pf_mode).pf_blocks[0]
        torch.testing.assert_close(block(h, c), expected, rtol=0, atol=1e-5)


def test_at_full_side_sparse_gen_is_the_base_spatial_block_and_pooled_temporal_the_base_temporal_block():
    base = latte_base()
    model = flexlatte_from_latte(base, FULL).eval()
    module = model.sdtms[0]
    x, t, y = clips()
    h = base.x_embedder(x.flatten(0, 1)) + base.pos_embed
    c = base.condition(t, y)
    per_frame = c.repeat_interleave(4, 0)
    z = module.pool(h, 8, 8)
    assert torch.equal(z, h)  # pooling to the full grid is the identity
    torch.testing.assert_close(module.gen(z, h, per_frame), base.blocks[2](h, per_frame), rtol=0, atol=1e-5)
    seq = h.reshape(2, 4, 64, -1).transpose(1, 2).reshape(128, 4, -1)
    position = base.temp_embed[0]
    torch.testing.assert_close(module.gen_temporal(seq, c.repeat_interleave(64, 0), position),
                               base.blocks[3](seq, c.repeat_interleave(64, 0), position), rtol=0, atol=0)


def test_w1_before_or_after_upsampling_gives_the_same_clip():
    model = flexlatte_from_latte(latte_base(), FULL)
    randomize_(model.requires_grad_(True), seed=3).eval()  # W1 no longer zero
    after = FlexLatte(model.config, FULL, w1_after_upsample=True).eval()
    after.load_state_dict(model.state_dict())
    x, t, y = clips()
    with torch.no_grad():
        for side in (3, 5, 8):
            torch.testing.assert_close(model(x, t, y, side=side), after(x, t, y, side=side), rtol=0, atol=1e-5)


def test_an_inflated_latte_converts_to_the_image_flexdit_on_every_frame():
    """Zero-gated temporal blocks (a Latte inflated from an image DiT) add nothing, also on the pooled locations:
    the video FlexDiT is the image FlexDiT frame by frame, at every side; once the temporal gates open, frames mix."""
    from ditpareto.models.dit import DiT
    from ditpareto.models.flexdit import flexdit_from_dit
    from ditpareto.models.latte import inflate_image_dit

    image = randomize_(DiT(dit_config("dit-micro-2", 16, in_channels=1, num_classes=10, depth=6)), 2, std=0.1)
    config = latte_config("latte-micro-2", 16, in_channels=1, num_classes=10, depth=12, num_frames=4)
    video = Latte(config)
    video.load_state_dict(inflate_image_dit(image.state_dict(), config))
    model = flexlatte_from_latte(video.eval(), FULL).eval()
    reference = flexdit_from_dit(image.eval(), FULL).eval()
    x, t, y = clips()
    changed = x.clone()
    changed[:, 0] += 1.0
    with torch.no_grad():
        for side in SIDES:
            per_frame = torch.stack([reference(x[:, k], t, y, side=side) for k in range(4)], dim=1)
            torch.testing.assert_close(model(x, t, y, side=side), per_frame, rtol=0, atol=1e-5)
        assert torch.equal(model(x, t, y, side=3)[:, 1:], model(changed, t, y, side=3)[:, 1:])
        randomize_(model.sdtms[0].gen_temporal, seed=4, std=0.5)  # the temporal block on the pooled locations
        assert (model(x, t, y, side=3)[:, 1:] - model(changed, t, y, side=3)[:, 1:]).abs().max() > 1e-4


def test_init_mapping_puts_each_tensor_where_the_mapping_says():
    base = latte_base()
    b, f, c = base.state_dict(), flexlatte_from_latte(base, FULL).state_dict(), 32
    for key in ("x_embedder.proj.weight", "t_embedder.mlp.2.weight", "y_embedder.embedding_table.weight",
                "pos_embed", "temp_embed", "final_layer.linear.weight", "final_layer.adaLN_modulation.1.bias"):
        assert torch.equal(f[key], b[key]), key
    roles = FULL.block_roles()
    assert [path for path, _ in roles] == ["pf_blocks.0", "sdtms.0.gen", "sdtms.0.sparse.0", "sdtms.0.rec",
                                           "sdtms.0.dense.0", "top_blocks.0"]
    for i, (path, role) in enumerate(roles):
        spatial, temporal = f"blocks.{2 * i}", f"blocks.{2 * i + 1}"
        for name in ("mlp.fc1.weight", "mlp.fc2.bias", "adaLN_modulation.1.weight", "attn.proj.weight"):
            assert torch.equal(f[f"{path}.{name}"], b[f"{spatial}.{name}"]), (path, name)
        for name in ("attn.qkv.weight", "attn.qkv.bias", "attn.proj.bias", "mlp.fc1.bias", "adaLN_modulation.1.bias"):
            assert torch.equal(f[f"{temporal_path(path)}.{name}"], b[f"{temporal}.{name}"]), (path, name)
        qkv = b[f"{spatial}.attn.qkv.weight"]
        if role == "pf":
            assert torch.equal(f[f"{path}.attn.v.weight"], qkv[2 * c:])
        elif role == "cross":
            assert torch.equal(f[f"{path}.attn.q.weight"], qkv[:c])
            assert torch.equal(f[f"{path}.attn.kv.weight"], qkv[c:])
        else:
            assert torch.equal(f[f"{path}.attn.qkv.weight"], qkv)
    assert [temporal_path(p) for p, _ in roles] == ["pf_temporal.0", "sdtms.0.gen_temporal",
                                                    "sdtms.0.sparse_temporal.0", "sdtms.0.rec_temporal",
                                                    "sdtms.0.dense_temporal.0", "top_temporal.0"]
    assert torch.equal(f["sdtms.0.merge_sparse.weight"], torch.zeros(c, c))
    assert torch.equal(f["sdtms.0.merge_dense.weight"], torch.eye(c))


def test_layouts_over_block_pairs():
    assert flexlatte_from_latte(latte_base(4)).layout == FlexLayout(0, 1, 0, 0, 0)  # latte-micro-2
    assert default_layout(latte_config("latte-toy-2", 16).spatial_depth) == FlexLayout(1, 1, 0, 0, 1)
    assert default_layout(latte_config("latte-xl-2", 256).spatial_depth) == FlexLayout(1, 2, 3, 1, 1)
    with pytest.raises(InputError, match="has 5 block pairs, the base Latte has 6"):
        flexlatte_from_latte(latte_base(), FlexLayout(pf=1, sdtms=1, sparse=1, dense=0, top=1))


# ------------------------------------------------------------------ shapes, bad input, MACs per call


def test_temporal_blocks_inside_an_sdtm_run_on_the_pooled_locations():
    model = flexlatte_from_latte(latte_base(), FULL).eval()
    seen = {}
    for name, module in model.named_modules():
        if name.endswith(("temporal", "temporal.0")) or name in ("sdtms.0.gen", "sdtms.0.rec", "pf_blocks.0"):
            module.register_forward_hook(lambda m, args, out, name=name: seen.__setitem__(name, tuple(out.shape)))
    x, t, y = clips()
    for side in stage_sides(FlexBudget(0.61, 0.86), 8, 4):  # 5, 4, 4, 3
        m = side * side
        assert model(x, t, y, side=side).shape == (2, 4, 2, 16, 16)
        assert seen == {
            "pf_blocks.0": (8, 64, 32), "pf_temporal.0": (128, 4, 32),  # 2 clips x 4 frames; 2 x 64 locations
            "sdtms.0.gen": (8, m, 32), "sdtms.0.gen_temporal": (2 * m, 4, 32),
            "sdtms.0.sparse_temporal.0": (2 * m, 4, 32),
            "sdtms.0.rec": (8, 64, 32), "sdtms.0.rec_temporal": (128, 4, 32), "sdtms.0.dense_temporal.0": (128, 4, 32),
            "top_temporal.0": (128, 4, 32),
        }


def test_bad_sides_and_clips_are_clear_errors():
    model = flexlatte_from_latte(latte_base(), FULL)
    x, t, y = clips()
    for side in (9, 0, 2.5):
        with pytest.raises(InputError, match="does not fit the dense token grid 8x8"):
            model(x, t, y, side=side)
    with pytest.raises(InputError, match="takes 4-frame clips, got 3"):
        model(x[:, :3], t, y, side=3)


@pytest.mark.parametrize("pf_mode, w1_after", [("mean_first", False), ("per_token", True)])
@pytest.mark.parametrize("layout, depth", [(FULL, 12), (None, 4), (FlexLayout(0, 1, 2, 1, 0), 10)])
def test_counter_matches_the_latte_closed_form(pf_mode, w1_after, layout, depth):
    from ditpareto.flops import count_macs

    model = FlexLatte(latte_base(depth).config, layout, pf_mode=pf_mode, w1_after_upsample=w1_after).eval()
    x, t, y = clips(batch=1)
    for side in SIDES:
        with torch.no_grad():
            counted = count_macs(lambda: model(x, t, y, side=side))
        assert counted == flexdit_macs_per_call(model.config, model.layout, side, pf_mode, w1_after)


def test_latte_xl_closed_form_at_the_paper_setting():
    """Latte-XL/2 at 256 px (16 frames x 256 tokens), 1 PF + 2 x [1, 3, 1, 1] + 1 top: per-stage GMACs per clip and the
    mean over the four stages against the static Latte (docs/methods/flexdit.md, "On video")."""
    from ditpareto.spec.dit import dit_macs_per_call

    config = latte_config("latte-xl-2", 256)
    static = dit_macs_per_call(config) / 1e9
    assert static == pytest.approx(1893.0, abs=0.1)
    layout = default_layout(config.spatial_depth)
    per_stage = [flexdit_macs_per_call(config, layout, s) / 1e9 for s in stage_sides(FlexBudget(0.61, 0.86), 16, 4)]
    assert per_stage == pytest.approx([1219.1, 1138.1, 1065.7, 946.8], abs=0.1)
    assert sum(per_stage) / 4 / static == pytest.approx(0.577, abs=0.001)
    assert flexdit_macs_per_call(config, layout, 16) / 1e9 < static  # full grid: the PF pair still saves


# ------------------------------------------------------------------ the method on a Latte base


def converted(**options):
    parsed = METHOD.parse_options(options)
    return METHOD.convert(latte_base(4, frames=16), parsed), parsed


def trajectory_closed_form(model, plan, guided: bool) -> float:
    per_call = [flexdit_macs_per_call(model.config, model.layout, s, model.pf_mode, model.w1_after_upsample)
                for s in plan.details["sparse_sides"]]
    return (2 if guided else 1) * sum(n * m for n, m in zip(plan.details["steps_per_stage"], per_call))


@pytest.mark.parametrize("cfg", [1.0, 2.0])
def test_sampling_through_the_plan_counts_the_closed_form_on_real_trajectories(cfg):
    """The density schedule per denoising stage (DDIM 4: t = 750, 500, 250, 0, one step per stage), one side per
    CFG pair, and executed MACs counted while sampling (and per distinct step) equal to the closed form."""
    from ditpareto.sampling import counted_macs, sampled_macs

    model, options = converted()
    settings = SamplingSettings(steps=4, cfg_scale=cfg, guidance_channels="all")
    plan = METHOD.plan(model, "0.61-0.86", settings, SPEC, options)
    assert [plan.step_key(s) for s in range(4)] == [3, 2, 1, 0]
    assert plan.details["sparse_sides"] == [5, 4, 4, 3] and plan.details["steps_per_stage"] == [1, 1, 1, 1]
    assert plan.details["frames"] == 16 and plan.details["dense_tokens"] == 64
    expected = trajectory_closed_form(model, plan, settings.guided)
    assert sampled_macs(plan, SPEC, settings, num_samples=2, batch_size=2)["macs_per_image"] == expected
    assert counted_macs(plan, model.config.sample_shape)["macs_per_image"] == expected
    used = []
    forward = model.forward
    model.forward = lambda x, t, y, side: used.append((len(x), side)) or forward(x, t, y, side=side)
    x, _, y = clips(frames=16)
    plan.denoise(x, 0, torch.full((2,), 750), y)
    plan.denoise(x, 3, torch.full((2,), 0), y)
    calls = 4 if settings.guided else 2
    assert used == [(calls, 3), (calls, 5)]


def test_the_sample_command_draws_clips_and_records_the_closed_form(tmp_path):
    """`sample --method flexdit` on a converted latte-micro-2 checkpoint: clips (N, F, H, W, C); recorded GMACs
    equal to the closed form with and without guidance; full@ runs every stage at the full grid."""
    from ditpareto.cli import main
    from ditpareto.npzfiles import load_samples

    model, _ = converted()
    torch.save(METHOD.state_to_save(model), tmp_path / "flexdit.pt")
    video = ["--model", "latte-micro-2", "--image-size", "16", "--in-channels", "1", "--num-classes", "10"]
    for budget, cfg, sides in (("0.61-0.86", "1.0", [5, 4, 4, 3]), ("0.61-0.86", "2.0", [5, 4, 4, 3]),
                               ("full@0.61-0.86", "2.0", [8] * 4)):
        stem = str(tmp_path / f"{budget}-{cfg}")
        main(["sample", "--method", "flexdit", "--budget", budget, "--seed", "0", "--checkpoint",
              str(tmp_path / "flexdit.pt"), *video, "--steps", "4", "--num-samples", "3", "--batch-size", "2",
              "--cfg-scale", cfg, "--guidance-channels", "all", "--out", f"{stem}.npz", "--record", f"{stem}.json"])
        record = json.loads(Path(f"{stem}.json").read_text())
        per_call = [flexdit_macs_per_call(model.config, model.layout, s) for s in sides]
        calls = 2 if cfg == "2.0" else 1
        assert record["params"]["sparse_sides"] == sides
        assert record["gmacs_per_image"] * 1e9 == pytest.approx(calls * sum(per_call), rel=1e-12)
    samples = load_samples(tmp_path / "0.61-0.86-1.0.npz")
    assert samples["images"].shape == (3, 16, 16, 16, 1)


def test_load_model_validates_and_round_trips(tmp_path):
    from ditpareto.models.dit import DiT

    model, options = converted(pos_reinject=True)
    torch.save(METHOD.state_to_save(model), tmp_path / "flexdit.pt")
    loaded = METHOD.load_model(tmp_path / "flexdit.pt", SPEC, options)
    assert isinstance(loaded, FlexLatte) and not loaded.training
    x, t, y = clips(frames=16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, y, side=3), model(x, t, y, side=3), rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="flexdit on video latte-micro-2"):  # the Latte base itself
        METHOD.load_model(latte_base(4, frames=16).state_dict(), SPEC, options)
    image = METHOD.convert(DiT(dit_config("dit-micro-2", 16, in_channels=1, num_classes=10)), options)
    with pytest.raises(CheckpointError, match="missing keys .*temporal"):  # an image FlexDiT
        METHOD.load_model(METHOD.state_to_save(image), SPEC, options)


def clip_set(count: int = 8, frames: int = 16):
    from ditpareto.clipsets import ClipSet

    g = torch.Generator().manual_seed(0)
    return ClipSet((torch.rand(count, frames, 16, 16, 1, generator=g) * 255).to(torch.uint8).numpy(),
                   np.arange(count) % 10)


def test_one_finetune_step_on_clips_runs_and_counts_its_training_macs(tmp_path):
    from ditpareto.diffusion import GaussianDiffusion
    from ditpareto.methods.flexdit import stratified_loss
    from ditpareto.study import TrainConfig

    model, options = converted()
    base_state = copy.deepcopy(model.state_dict())
    data = clip_set()
    x0 = data.as_model_input()
    assert x0.shape == (8, 16, 1, 16, 16)
    budget = METHOD.parse_budget("0.61-0.86")
    macs = METHOD.train_step_macs(model, x0, torch.from_numpy(data.labels), options, budget)(0)
    # forward: two clips per stage at its side (the closed form); backward: about twice that
    forward = sum(2 * flexdit_macs_per_call(model.config, model.layout, s) for s in (5, 4, 4, 3))
    assert 2.5 * forward < macs < 3.5 * forward
    calls = []
    model_forward = model.forward
    model.forward = lambda x, t, y, side: calls.append((tuple(x.shape), side)) or model_forward(x, t, y, side=side)
    stratified_loss([5, 4, 4, 3])(model, x0, torch.from_numpy(data.labels), GaussianDiffusion.base())
    assert calls == [((2, 16, 1, 16, 16), s) for s in (5, 4, 4, 3)]  # clips split into one micro-batch per stage
    del model.forward
    train = TrainConfig(steps=1, batch_size=4, lr=1e-3, ema_decay=0.0, checkpoint_every=10, log_every=1)
    ema = METHOD.finetune(model, data, options, budget, train, tmp_path / "state.pt", tmp_path / "loss.csv")
    rows = list(csv.DictReader((tmp_path / "loss.csv").open()))
    assert len(rows) == 1 and np.isfinite(float(rows[0]["loss"])) and "loss_stage3" in rows[0]
    state = ema.state_dict()
    assert torch.equal(state["pos_embed"], base_state["pos_embed"])  # the sin-cos tables stay fixed
    assert torch.equal(state["temp_embed"], base_state["temp_embed"])
    assert not torch.equal(state["sdtms.0.merge_sparse.weight"], base_state["sdtms.0.merge_sparse.weight"])
    assert not torch.equal(state["sdtms.0.gen_temporal.attn.qkv.weight"],
                           base_state["sdtms.0.gen_temporal.attn.qkv.weight"])
    with pytest.raises(InputError, match="once per budget"):
        METHOD.finetune(model, data, options, None, train, tmp_path / "s2.pt", tmp_path / "l2.csv")


# ------------------------------------------------------------------ the simulated device and bf16


def denoise_all_steps(plan, x, y) -> list[torch.Tensor]:
    outs = []
    for step in range(plan.num_steps):
        index = torch.full((len(x),), plan.num_steps - 1 - step, dtype=torch.long, device=x.device)
        outs.append(plan.denoise(x, step, plan.diffusion.model_timesteps(index), y))
    return outs


def random_model(seed: int = 1):
    """The converted model with every parameter random (W1 too), as a fine-tune leaves it."""
    model, options = converted()
    randomize_(model.requires_grad_(True), seed=seed, std=0.05)
    return model.requires_grad_(False).eval(), options


def test_the_plan_samples_and_counts_on_the_device(budget="0.61-0.86"):
    """Plan built after the move: every step's output on the device and equal to the CPU's; the same clips and
    MACs from the sampler and the counter."""
    from simulated_device import OnDevice, simulated_device

    from ditpareto.sampling import counted_macs, generate

    model, options = random_model()
    settings = SamplingSettings(steps=3, cfg_scale=2.0, guidance_channels="all")
    cpu_plan = METHOD.plan(copy.deepcopy(model), METHOD.parse_budget(budget), settings, SPEC, options)
    x, _, y = clips(frames=16)
    expected = denoise_all_steps(cpu_plan, x, y)
    clips_cpu, _ = generate(cpu_plan, SPEC, settings, seed=0, indices=range(2), batch_size=2, progress=False)
    macs_cpu = counted_macs(cpu_plan, model.config.sample_shape)
    with simulated_device() as device:
        plan = METHOD.plan(model.to(device), METHOD.parse_budget(budget), settings, SPEC, options)
        assert plan.device == device
        outs = denoise_all_steps(plan, x.to(device), y.to(device))
        assert all(isinstance(out, OnDevice) for out in outs)
        outs = [out.cpu() for out in outs]
        batch, _ = generate(plan, SPEC, settings, seed=0, indices=range(2), batch_size=2, progress=False)
        macs = counted_macs(plan, model.config.sample_shape)
    for out, ref in zip(outs, expected):
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(batch.images, clips_cpu.images)
    assert macs["macs_per_image"] == macs_cpu["macs_per_image"] > 0


def test_the_plan_samples_clips_in_bf16():
    from ditpareto.runtime import precision_scope
    from ditpareto.sampling import generate

    model, options = random_model()
    settings = SamplingSettings(steps=3, cfg_scale=2.0, guidance_channels="all")
    plan = METHOD.plan(model, "0.61-0.86", settings, SPEC, options)
    reference, _ = generate(plan, SPEC, settings, seed=0, indices=range(3), batch_size=3, progress=False)
    with precision_scope("bf16", "cpu"):
        batch, _ = generate(plan, SPEC, settings, seed=0, indices=range(3), batch_size=3, progress=False)
        out = plan.denoise(*clips(frames=16)[:1], 0, torch.full((2,), 999), torch.tensor([1, 2]))
    assert out.dtype in (torch.bfloat16, torch.float32) and bool(torch.isfinite(out).all())
    difference = np.abs(batch.images.astype(int) - reference.images.astype(int))
    assert difference.mean() < 8 and np.median(difference) <= 2


@pytest.mark.parametrize("precision", ["bf16", "device"])
def test_the_finetune_trains_on_the_device_and_in_bf16(precision, monkeypatch, tmp_path):
    """Two steps of the stratified loss on clips through the training loop, on the simulated device or in bf16
    autocast: finite losses, float32 CPU weights back."""
    from simulated_device import OnDevice, simulated_device

    import ditpareto.train as train_module
    from ditpareto.runtime import precision_scope
    from ditpareto.study import TrainConfig

    model, options = random_model()
    train = TrainConfig(steps=2, batch_size=4, lr=1e-4, checkpoint_every=100, log_every=1,
                        precision="bf16" if precision == "bf16" else "fp32")
    scope = simulated_device() if precision == "device" else precision_scope("fp32", "cpu")
    with scope as device:
        if precision == "device":
            monkeypatch.setattr(train_module, "resolve_device", lambda name: device)
        ema = METHOD.finetune(model, clip_set(), options, METHOD.parse_budget("0.61-0.86"), train,
                              tmp_path / "state.pt", tmp_path / "loss.csv")
    weights = list(ema.parameters())
    assert all(not isinstance(p, OnDevice) and p.device.type == "cpu" and p.dtype == torch.float32 for p in weights)
    assert all(bool(torch.isfinite(p).all()) for p in weights)
    losses = [float(line.split(",")[1]) for line in (tmp_path / "loss.csv").read_text().splitlines()[1:]]
    assert len(losses) == 2 and all(np.isfinite(losses))
