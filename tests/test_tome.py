"""tome: token merging for DiT (tomesd-style), training-free. Exactness at ratio 0, agreement with tomesd's own
matching, MAC closed form vs the executed-ops counter, the sampling plan, bf16, and input validation."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import randomize_

from ditpareto.archs import dit_config, latte_config
from ditpareto.diffusion import sample_loop
from ditpareto.errors import InputError
from ditpareto.flops import count_macs, plan_macs
from ditpareto.methods.dit import StaticDiT
from ditpareto.methods.tome import ToMeMethod
from ditpareto.models import build_dit, build_model
from ditpareto.models.dit import modulate
from ditpareto.models.tome import bipartite_soft_matching, tome_block_forward, tome_forward
from ditpareto.runtime import precision_scope
from ditpareto.spec import METHOD_COLORS
from ditpareto.spec.dit import dit_macs_per_call
from ditpareto.spec.tome import TOME, ToMeOptions, tome_macs_per_call, tome_merged_tokens
from ditpareto.study import ModelSpec, SamplingSettings

SPEC = ModelSpec("dit-micro-2", 16, in_channels=1, num_classes=10)  # 8 x 8 = 64 tokens
METHOD = ToMeMethod()
OPTION_PAIRS = [(True, True), (True, False), (False, True)]


def model(std: float = 0.05, image_size: int = 16):
    torch.manual_seed(0)
    return randomize_(build_dit(SPEC.name, image_size, **SPEC.overrides()), 0, std).eval()


def inputs(batch: int = 2, side: int = 16, smooth: bool = False):
    gen = torch.Generator().manual_seed(1)
    if smooth:
        ramp = torch.linspace(-1, 1, side)
        x = (ramp[None, :] + 0.5 * ramp[:, None]).expand(batch, 1, side, side).clone()
    else:
        x = torch.randn(batch, 1, side, side, generator=gen)
    return x, torch.tensor([500, 100, 900, 20][:batch]), torch.tensor([3, 7, 0, 9][:batch])


def tomesd_merge_unmerge(metric: torch.Tensor, w: int, h: int, r: int):
    """tomesd's ``bipartite_soft_matching_random2d`` (sx = sy = 2, no_rand=True: the top-left dst of each window),
    transcribed from tomesd/merge.py as the reference."""
    B, N, _ = metric.shape
    hsy, wsx = h // 2, w // 2
    rand_idx = torch.zeros(hsy, wsx, 1, dtype=torch.int64)
    idx_buffer_view = torch.zeros(hsy, wsx, 4, dtype=torch.int64)
    idx_buffer_view.scatter_(dim=2, index=rand_idx, src=-torch.ones_like(rand_idx))
    idx_buffer_view = idx_buffer_view.view(hsy, wsx, 2, 2).transpose(1, 2).reshape(hsy * 2, wsx * 2)
    idx_buffer = torch.zeros(h, w, dtype=torch.int64)
    idx_buffer[:hsy * 2, :wsx * 2] = idx_buffer_view
    rand_idx = idx_buffer.reshape(1, -1, 1).argsort(dim=1)
    num_dst = hsy * wsx
    a_idx, b_idx = rand_idx[:, num_dst:, :], rand_idx[:, :num_dst, :]

    def split(x):
        c = x.shape[-1]
        return x.gather(1, a_idx.expand(B, N - num_dst, c)), x.gather(1, b_idx.expand(B, num_dst, c))

    metric = metric / metric.norm(dim=-1, keepdim=True)
    a, b = split(metric)
    scores = a @ b.transpose(-1, -2)
    r = min(a.shape[1], r)
    node_max, node_idx = scores.max(dim=-1)
    edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
    unm_idx, src_idx = edge_idx[..., r:, :], edge_idx[..., :r, :]
    dst_idx = node_idx[..., None].gather(-2, src_idx)

    def merge(x):
        src, dst = split(x)
        n, t1, c = src.shape
        unm = src.gather(-2, unm_idx.expand(n, t1 - r, c))
        src = src.gather(-2, src_idx.expand(n, r, c))
        dst = dst.scatter_reduce(-2, dst_idx.expand(n, r, c), src, reduce="mean")
        return torch.cat([unm, dst], dim=1)

    def unmerge(x):
        unm_len = unm_idx.shape[1]
        unm, dst = x[..., :unm_len, :], x[..., unm_len:, :]
        c = unm.shape[-1]
        src = dst.gather(-2, dst_idx.expand(B, r, c))
        out = torch.zeros(B, N, c, dtype=x.dtype)
        out.scatter_(-2, b_idx.expand(B, num_dst, c), dst)
        out.scatter_(-2, a_idx.expand(B, a_idx.shape[1], 1).gather(1, unm_idx).expand(B, unm_len, c), unm)
        out.scatter_(-2, a_idx.expand(B, a_idx.shape[1], 1).gather(1, src_idx).expand(B, r, c), src)
        return out

    return merge, unmerge


# ------------------------------------------------------------------------------ exactness and matching


@torch.no_grad()
def test_ratio_zero_is_the_static_dit_bit_for_bit():
    dit, (x, t, y) = model(), inputs()
    static = dit(x, t, y)
    for merge_attn, merge_mlp in OPTION_PAIRS:
        assert torch.equal(tome_forward(dit, x, t, y, 0.0, merge_attn, merge_mlp), static)
    assert torch.equal(tome_forward(dit, x, t, y, 0.01), static)  # floor(0.01 * 64) = 0 tokens
    assert torch.equal(tome_forward(dit, x, t, y, 0.5, False, False), static)  # nothing merges


@torch.no_grad()
def test_matching_equals_tomesd_on_its_own_terms():
    """merge -> row-wise map -> unmerge equals tomesd's, position by position, on an 8 x 8 and a 7 x 7 grid."""
    gen = torch.Generator().manual_seed(3)
    for grid in (8, 7):
        metric = torch.randn(3, grid * grid, 16, generator=gen)
        x = torch.randn(3, grid * grid, 16, generator=gen)
        for r in (1, 10, math.floor(0.75 * grid * grid)):
            ours = bipartite_soft_matching(metric, grid, r)
            merge, unmerge = tomesd_merge_unmerge(metric, grid, grid, r)
            merged = ours.merge(x)
            assert merged.shape == (3, grid * grid - r, 16)
            torch.testing.assert_close(ours.unmerge(torch.tanh(merged)), unmerge(torch.tanh(merge(x))))


@torch.no_grad()
def test_identical_sources_merge_into_their_window_destination():
    """Sources equal to their 2x2 window's top-left token are the most similar: exactly they merge, into it."""
    grid, dim = 8, 8
    gen = torch.Generator().manual_seed(4)
    metric = torch.randn(1, grid * grid, dim, generator=gen)
    copies = [(1, 0), (9, 0), (8, 0), (27, 18), (63, 54)]  # (source, its window's top-left)
    for src, dst in copies:
        metric[0, src] = metric[0, dst]
    tm = bipartite_soft_matching(metric, grid, len(copies))
    x = torch.randn(1, grid * grid, dim, generator=gen)
    out = tm.unmerge(tm.merge(x))
    for dst in {d for _, d in copies}:
        group = [dst] + [s for s, d in copies if d == dst]
        torch.testing.assert_close(out[0, group], x[0, group].mean(0).expand(len(group), dim))
    untouched = sorted(set(range(grid * grid)) - {i for pair in copies for i in pair})
    assert torch.equal(out[0, untouched], x[0, untouched])


@torch.no_grad()
def test_the_block_is_dits_block_around_tomesds_merge():
    """One merged block against DiT's block equations written out with tomesd's merge and unmerge."""
    dit, (x, t, y) = model(0.1), inputs()
    block, c = dit.blocks[0], dit.condition(t, y)
    h = dit.x_embedder(x) + dit.pos_embed
    r = 24
    for merge_attn, merge_mlp in OPTION_PAIRS:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = block.adaLN_modulation(c).chunk(6, dim=1)
        a = modulate(block.norm1(h), shift_msa, scale_msa)
        merge, unmerge = tomesd_merge_unmerge(a, 8, 8, r)
        ref = h + gate_msa.unsqueeze(1) * (unmerge(block.attn(merge(a))) if merge_attn else block.attn(a))
        m = modulate(block.norm2(ref), shift_mlp, scale_mlp)
        ref = ref + gate_mlp.unsqueeze(1) * (unmerge(block.mlp(merge(m))) if merge_mlp else block.mlp(m))
        torch.testing.assert_close(tome_block_forward(block, h, c, 8, r, merge_attn, merge_mlp), ref)


@torch.no_grad()
def test_merging_changes_the_output_a_little_and_merges_exactly_r_tokens():
    dit, (x, t, y) = model(0.1), inputs(smooth=True)
    static = dit(x, t, y)
    c = dit.condition(t, y)
    no_blocks = dit.unpatchify(dit.final_layer(dit.x_embedder(x) + dit.pos_embed, c))
    blocks_effect = (static - no_blocks).norm()
    seen: dict[str, list[int]] = {"attn": [], "mlp": []}
    hooks = [getattr(b, name).register_forward_hook(lambda mod, args, out, name=name: seen[name].append(
        args[0].shape[1])) for b in dit.blocks for name in seen]
    errors = []
    for ratio in (0.25, 0.5, 0.75):
        for merge_attn, merge_mlp in OPTION_PAIRS:
            seen["attn"].clear(), seen["mlp"].clear()
            out = tome_forward(dit, x, t, y, ratio, merge_attn, merge_mlp)
            r = math.floor(ratio * 64)
            assert seen["attn"] == [64 - r if merge_attn else 64] * len(dit.blocks)
            assert seen["mlp"] == [64 - r if merge_mlp else 64] * len(dit.blocks)
            assert not torch.equal(out, static)
        errors.append((tome_forward(dit, x, t, y, ratio) - static).norm() / blocks_effect)
    for hook in hooks:
        hook.remove()
    assert 0 < errors[0] < 0.25 and errors[0] < errors[-1]


@torch.no_grad()
def test_images_merge_independently_in_a_batch():
    """A CFG-doubled batch: each image's matching is its own (batched = one image at a time)."""
    dit, (x, t, y) = model(0.1), inputs(batch=4)
    batched = tome_forward(dit, x, t, y, 0.5)
    single = torch.cat([tome_forward(dit, x[i:i + 1], t[i:i + 1], y[i:i + 1], 0.5) for i in range(4)])
    torch.testing.assert_close(batched, single)


@torch.no_grad()
def test_weights_are_the_dits_untouched():
    dit, (x, t, y) = model(), inputs()
    before = {k: v.clone() for k, v in dit.state_dict().items()}
    tome_forward(dit, x, t, y, 0.5)
    after = dit.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert METHOD.convert(dit, METHOD.parse_options(None)) is dit and not dit.training
    loaded = METHOD.load_model(before, SPEC, METHOD.parse_options(None))
    assert torch.equal(tome_forward(loaded, x, t, y, 0.5), tome_forward(dit, x, t, y, 0.5))


# ------------------------------------------------------------------------------ compute


@pytest.mark.parametrize("image_size", [16, 14])  # 8 x 8 and 7 x 7 token grids
def test_counted_macs_equal_the_closed_form(image_size):
    dit = model(image_size=image_size)
    x, t, y = inputs(batch=1, side=image_size)
    static = dit_macs_per_call(dit.config)
    assert count_macs(lambda: tome_forward(dit, x, t, y, 0.0)) == tome_macs_per_call(dit.config, 0.0) == static
    for ratio in (0.1, 0.25, 0.5, 0.75):
        for merge_attn, merge_mlp in OPTION_PAIRS:
            counted = count_macs(lambda: tome_forward(dit, x, t, y, ratio, merge_attn, merge_mlp))
            assert counted == tome_macs_per_call(dit.config, ratio, merge_attn, merge_mlp) < static


def test_closed_form_at_dit_xl_2():
    config = dit_config("dit-xl-2", 256)  # 256 tokens: 64 destinations, 192 sources
    assert tome_merged_tokens(config, 0.5) == 128
    static = dit_macs_per_call(config)
    d, h = 1152, 4608
    merged = 128
    saved = 28 * (merged * (4 * d * d + 2 * d * h) + 2 * (256**2 - 128**2) * d - 192 * 64 * d)
    assert tome_macs_per_call(config, 0.5) == static - saved
    ratios = [tome_macs_per_call(config, r) / static for r in (0.25, 0.5, 0.75)]
    assert ratios == sorted(ratios, reverse=True) and 0.24 < ratios[-1] < 0.26


def test_plan_samples_and_spends_less_with_more_merging():
    dit = model(0.1)
    settings = SamplingSettings(steps=3, cfg_scale=1.5)
    noise = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    y = torch.tensor([1, 2])
    per_call, samples = [], {}
    for budget in ("0.00", "0.25", "0.50", "0.75"):
        plan = METHOD.plan(dit, budget, settings, SPEC, {"merge_mlp": True})
        assert plan.calls_per_step == 2 and plan.details["merged_tokens_per_block"] == math.floor(float(budget) * 64)
        samples[budget] = sample_loop(plan.diffusion, lambda x, step, t: plan.denoise(x, step, t, y), noise,
                                      [torch.Generator().manual_seed(i) for i in range(2)])
        assert samples[budget].shape == noise.shape and bool(torch.isfinite(samples[budget]).all())
        macs = plan_macs(plan, (1, 16, 16))
        assert macs["network_calls_per_image"] == 6
        assert macs["macs_per_call"] == tome_macs_per_call(dit.config, float(budget))
        assert plan.details["analytic_gmacs_per_call"] == macs["macs_per_call"] / 1e9
        per_call.append(macs["macs_per_call"])
    assert per_call == sorted(per_call, reverse=True) and len(set(per_call)) == 4
    static = StaticDiT().plan(dit, 3, settings, SPEC)
    reference = sample_loop(static.diffusion, lambda x, step, t: static.denoise(x, step, t, y), noise,
                            [torch.Generator().manual_seed(i) for i in range(2)])
    assert torch.equal(samples["0.00"], reference) and not torch.equal(samples["0.50"], reference)
    unguided = METHOD.plan(dit, "0.50", SamplingSettings(steps=3, cfg_scale=1.0), SPEC)
    assert unguided.calls_per_step == 1 and plan_macs(unguided, (1, 16, 16))["macs_per_image"] == 3 * per_call[2]


# ------------------------------------------------------------------------------ numerics


@torch.no_grad()
def test_bf16_autocast_and_pure_bf16_blocks():
    dit, (x, t, y) = model(0.1), inputs()
    reference = tome_forward(dit, x, t, y, 0.5)
    with precision_scope("bf16", "cpu"):  # the pipeline's bf16: autocast, float32 weights
        out = tome_forward(dit, x, t, y, 0.5)
    assert out.shape == reference.shape and bool(torch.isfinite(out).all())
    assert (out.float() - reference).norm() < 0.05 * reference.norm()
    block = dit.blocks[1].to(torch.bfloat16)  # every tensor the merge creates follows the input's dtype
    c = dit.condition(t, y).to(torch.bfloat16)
    h = (dit.x_embedder(x) + dit.pos_embed).to(torch.bfloat16)
    merged = tome_block_forward(block, h, c, 8, 32)
    assert merged.dtype == torch.bfloat16 and bool(torch.isfinite(merged).all())
    full = tome_block_forward(block.float(), h.float(), c.float(), 8, 32)
    torch.testing.assert_close(merged.float(), full, atol=0.05, rtol=0.05)


# ------------------------------------------------------------------------------ spec and validation


def test_options_and_budgets_validate():
    assert ToMeOptions.parse(None) == ToMeOptions(True, True)
    assert METHOD.parse_options({"merge_attn": False}).to_dict() == {"merge_attn": False, "merge_mlp": True}
    with pytest.raises(InputError, match="merge_attn"):
        METHOD.parse_options({"merge_attn": "yes"})
    with pytest.raises(InputError, match="merge_mlp"):
        METHOD.parse_options({"merge_mlp": 1})
    with pytest.raises(InputError, match="unknown tome options"):
        METHOD.parse_options({"ratio": 0.5})
    assert METHOD.parse_budget("0.5") == 0.5 and METHOD.budget_label(0.5) == "0.50"
    assert METHOD.budget_label("0") == "0.00"
    assert METHOD.parse_budget("0.75") == 0.75 and METHOD.full_budget(SamplingSettings()) == 0.0
    assert METHOD.nominal_compute_ratio("0.25", SamplingSettings()) == 0.75
    for bad in ("0.80", "-0.10", "half", "nan", "0.125", ""):
        with pytest.raises(InputError, match="tome budget"):
            METHOD.parse_budget(bad)


def test_spec_and_latte_rejection():
    assert TOME.name == "tome" and TOME.finetune_mode == "none" and TOME.macs_per_call is tome_macs_per_call
    assert METHOD_COLORS["tome"] == TOME.color and list(METHOD_COLORS.values()).count(TOME.color) == 1
    assert isinstance(METHOD, type(TOME.vocabulary))
    latte = latte_config("latte-micro-2", 16, in_channels=1, num_classes=10)
    with pytest.raises(InputError, match="^tome supports image DiTs only$"):
        tome_macs_per_call(latte, 0.5)
    video = build_model("latte-micro-2", 16, in_channels=1, num_classes=10)
    with pytest.raises(InputError, match="^tome supports image DiTs only$"):
        METHOD.plan(video, "0.50", SamplingSettings(), ModelSpec("latte-micro-2", 16, 1, 10))
