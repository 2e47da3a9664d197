"""FlexiDiT: conversion invariants, the weak->powerful schedule and its CFG rule, FLOPs, fine-tuning, bad input."""

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import randomize_

from ditpareto.cli import main
from ditpareto.data import prepare_digits
from ditpareto.errors import InputError
from ditpareto.flops import count_macs, plan_macs
from ditpareto.methods import METHODS, ModelSpec, SamplingSettings
from ditpareto.diffusion import GaussianDiffusion
from ditpareto.methods.flexidit import (
    FlexiDiTLoss,
    bootstrapped_mmd_loss,
    flexidit_loss,
    mmd2,
    same_class_partners,
    weak_guidance_scale,
)
from ditpareto.models import build_dit, dit_config
from ditpareto.spec.flexidit import analytic_macs_per_image, flexidit_macs_per_call
from ditpareto.models.checkpoint import CheckpointError
from ditpareto.models.dit import DiT, get_2d_sincos_pos_embed
from ditpareto.models.flexidit import FlexiConfig, coarse_pos_embed, convert_dit, q_embed, resize_matrix
from ditpareto.train import TrainConfig

FLEXI = METHODS["flexidit"]
MODEL = ["--model", "dit-micro-2", "--image-size", "16", "--in-channels", "1", "--num-classes", "10"]


@pytest.fixture
def inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(3, 1, 16, 16, generator=g), torch.tensor([3, 500, 999]), torch.tensor([1, 7, 10])


def run_cli(capsys, *args) -> str:
    """``python -m ditpareto ARGS`` in-process (no interpreter start-up); returns its stdout."""
    capsys.readouterr()
    main(list(args))
    return capsys.readouterr().out


def tokenwise_upsample(out: torch.Tensor, patch: int) -> torch.Tensor:
    """Bilinear x2 (half-pixel, edge-clamped) inside each patch x patch block of an image, blocks independent."""
    n, c, h, w = out.shape
    gh, gw = h // patch, w // patch
    blocks = out.reshape(n, c, gh, patch, gw, patch).permute(0, 2, 4, 1, 3, 5).reshape(-1, c, patch, patch)
    up = F.interpolate(blocks, scale_factor=2, mode="bilinear", align_corners=False)
    return up.reshape(n, gh, gw, c, 2 * patch, 2 * patch).permute(0, 3, 1, 4, 2, 5).reshape(n, c, 2 * h, 2 * w)


def pooled_base(base: DiT, pos_embed: torch.Tensor, x, t, y) -> torch.Tensor:
    """The base DiT on the 2x2-average-pooled input, with the given (coarse-grid) position embedding."""
    small = DiT(type(base.config)(**{**base.config.to_dict(), "input_size": base.config.input_size // 2}))
    state = dict(base.state_dict(), pos_embed=pos_embed.clone())
    small.load_state_dict(state)
    with torch.no_grad():
        return small.eval()(F.avg_pool2d(x, 2), t, y)


# ---------------------------------------------------------------------------------------------- conversion


def test_resize_matrices_follow_the_spec():
    b42 = resize_matrix(4, 2)  # half-pixel bilinear 4 -> 2 is exactly 2x2 average pooling
    pooled = F.avg_pool2d(torch.arange(16.0, dtype=torch.float64).reshape(1, 1, 4, 4), 2).flatten()
    assert torch.allclose(b42 @ torch.arange(16.0, dtype=torch.float64), pooled)
    assert torch.allclose(q_embed(4, 4), torch.eye(16, dtype=torch.float64))
    assert torch.allclose(torch.linalg.pinv(q_embed(2, 4)), b42.T)
    # the base grid's coordinates reproduce DiT's own embedding
    assert torch.allclose(torch.from_numpy(coarse_pos_embed(32, 8, 1.0, "corner")),
                          torch.from_numpy(get_2d_sincos_pos_embed(32, 8)))


VARIANTS = [{"variant": "shared"}, {"variant": "shared", "tokenizer": "separate"},
            {"variant": "lora", "tokenizer": "separate"}]


@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: "-".join(o.values()))
def test_conversion_reproduces_base_at_base_patch(tiny_model, inputs, options):
    model = convert_dit(tiny_model, **options).eval()
    with torch.no_grad():
        expected, got = tiny_model(*inputs), model(*inputs)
    assert expected.abs().max() > 0.1  # randomized: not a trivial all-zero output
    err = (got - expected).abs().max().item()
    assert err < 1e-4, err
    if "tokenizer" in options:  # separate convs: the base path is the pretrained network itself
        assert err == 0.0


@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: "-".join(o.values()))
def test_weak_path_at_init_is_pooled_base_upsampled_per_token(tiny_model, inputs, options):
    """The form that holds (§1.3-1.4): weak(x) = up(base(avgpool2(x))) where base runs on the 8x8 pooled input
    with the coarse grid's positions (2i, 2j) and `up` is a bilinear x2 inside each 2x2 output token (edges
    clamped at token borders), not a bilinear upsampling of the whole image."""
    model = convert_dit(tiny_model, **options).eval()
    with torch.no_grad():
        weak = model(*inputs, patch_size=4)
    assert weak.shape == (3, 2, 16, 16)
    small = pooled_base(tiny_model, model.pos_embed_weak, *inputs)
    err = (weak - tokenwise_upsample(small, 2)).abs().max().item()
    assert err < 1e-4, err
    whole_image = F.interpolate(small, scale_factor=2, mode="bilinear", align_corners=False)
    assert (weak - whole_image).abs().max() > 100 * max(err, 1e-6)
    # with the base's own 4x4-grid positions (0..3) instead of (0, 2, 4, 6) it does not hold
    wrong = pooled_base(tiny_model, torch.from_numpy(get_2d_sincos_pos_embed(32, 4)).float()[None], *inputs)
    assert (weak - tokenwise_upsample(wrong, 2)).abs().max() > 100 * max(err, 1e-6)


@pytest.mark.parametrize("ln_affine", ["all", "final"])
def test_folded_ln_affine_is_the_affine_then_modulate(tiny_model, inputs, ln_affine):
    """The patch-size LN affines are folded into adaLN's scale and shift (one pass over the tokens): the same
    function as applying each affine to the normalised tokens and then modulating, with trained (non-identity)
    affines at both patch sizes."""
    from ditpareto.models.dit import modulate

    model = convert_dit(tiny_model, ln_affine=ln_affine).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm_affine" in name:
                param.add_(torch.randn_like(param) * 0.3)

    def unfolded(x, t, y, p):
        key = f"p{p}"
        c = model.t_embedder(t) + model.y_embedder(y, False)
        h = model.x_embedder(x, p) + (model.pos_embed if p == model.patch_size else model.pos_embed_weak)
        h = h + model.patch_size_embed[key]
        for block in model.blocks:
            affine = block.norm_affine[key] if block.norm_affine is not None else (lambda v, i: v)
            s1, c1, g1, s2, c2, g2 = block.adaLN_modulation(c).chunk(6, dim=1)
            h = h + g1.unsqueeze(1) * block.attn(modulate(affine(block.norm1(h), 0), s1, c1))
            h = h + g2.unsqueeze(1) * block.mlp(modulate(affine(block.norm2(h), 1), s2, c2))
        final = model.final_layer
        shift, scale = final.adaLN_modulation(c).chunk(2, dim=1)
        out = F.linear(modulate(final.norm_affine[key](final.norm_final(h), 0), shift, scale), *final.head(p))
        return model.unpatchify(out, p)

    x, t, y = inputs
    with torch.no_grad():
        for p in model.config.patch_sizes:
            torch.testing.assert_close(model(x, t, y, patch_size=p), unfolded(x, t, y, p), rtol=1e-5, atol=1e-6)


def test_coarse_positions_corner_and_centre(tiny_model):
    corner = convert_dit(tiny_model, pos_coords="corner").pos_embed_weak[0]
    centre = convert_dit(tiny_model, pos_coords="centre").pos_embed_weak[0]
    base = tiny_model.pos_embed[0]
    assert torch.allclose(corner[1], base[2]) and torch.allclose(corner[4], base[2 * 8])  # (0,1)->(0,2), (1,0)->(2,0)
    assert torch.allclose(centre, torch.from_numpy(coarse_pos_embed(32, 4, 2.0, "centre")).float())
    assert not torch.allclose(corner, centre)


def test_lora_variant_starts_where_the_shared_one_does(tiny_model, inputs):
    shared = convert_dit(tiny_model).eval()
    lora = convert_dit(tiny_model, variant="lora", lora_rank=4, tokenizer="separate").eval()
    with torch.no_grad():
        assert torch.allclose(shared(*inputs, patch_size=4), lora(*inputs, patch_size=4), atol=1e-5)
    names = [n for n, _ in lora.named_parameters() if "lora_" in n]
    assert len(names) == 2 * 4 * 2 and all(".p4." in n for n in names)  # down/up x qkv,proj,fc1,fc2 x depth 2


def test_weak_io_parameters_follow_the_tokenizer(tiny_model):
    def names(model):
        return {n for n, p in model.named_parameters() if any(p is q for q in model.weak_io_parameters())}

    assert names(convert_dit(tiny_model)) == {"x_embedder.flex_weight", "x_embedder.flex_bias",
                                              "final_layer.flex_weight", "final_layer.flex_bias"}
    assert names(convert_dit(tiny_model, tokenizer="separate")) == {
        "x_embedder.proj_weak.weight", "x_embedder.proj_weak.bias", "final_layer.linear_weak.weight",
        "final_layer.linear_weak.bias"}


def test_convert_cli_on_official_layout_and_bad_weak_patch(tmp_path, inputs, capsys):
    torch.manual_seed(3)
    base = randomize_(build_dit("dit-micro-2", 16, in_channels=1, num_classes=10)).eval()
    torch.save(base.state_dict(), tmp_path / "base.pt")  # bare state dict with the official DiT names
    out = tmp_path / "converted.pt"
    cmd = ["convert", "--method", "flexidit", "--base", str(tmp_path / "base.pt"), *MODEL, "--out", str(out)]
    run_cli(capsys, *cmd)
    spec = ModelSpec("dit-micro-2", 16, 1, 10)
    model = FLEXI.load_model(str(out), spec, {})
    with torch.no_grad():
        assert (model(*inputs) - base(*inputs)).abs().max() < 1e-4
    with pytest.raises(SystemExit) as exit_info:
        run_cli(capsys, *cmd[:-1], str(tmp_path / "bad.pt"), "--options", '{"weak_patch_size": 6}')
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "error: weak patch size 6 does not divide the latent size 16" in err
    assert "Traceback" not in err and not (tmp_path / "bad.pt").exists()
    # a checkpoint converted with other options is rejected by name, not loaded silently
    with pytest.raises(CheckpointError, match="pos_coords='centre'"):
        FLEXI.load_model(str(out), spec, {"pos_coords": "centre"})
    with pytest.raises(CheckpointError, match="missing keys"):
        FLEXI.load_model(str(out), spec, {"variant": "lora"})


def test_bad_options_and_shapes(tiny_model):
    base = dit_config("dit-micro-2", 16, in_channels=1)
    for pw, message in [(6, "does not divide the latent size 16"), (2, "larger than the base patch size 2")]:
        with pytest.raises(InputError, match=message):
            FlexiConfig(base, pw)
    with pytest.raises(InputError, match="does not divide"):
        FLEXI.convert(tiny_model, {"weak_patch_size": 6})
    with pytest.raises(InputError, match="needs tokenizer='separate'"):
        FLEXI.convert(tiny_model, {"variant": "lora", "tokenizer": "flexible"})
    for options, message in [({"pacth": 4}, "unknown flexidit options"), ({"variant": "x"}, "variant"),
                             ({"weak_ratio": 1.5}, "weak_ratio"), ({"lora_rank": 0}, "lora_rank"),
                             ({"weak_patch_size": "4"}, "weak_patch_size"), ({"tokenizer": "x"}, "tokenizer")]:
        with pytest.raises(InputError, match=message):
            FLEXI.parse_options(options)


# ---------------------------------------------------------------------------------------------- budgets, CFG


def test_budget_vocabulary():
    assert FLEXI.budget_label(FLEXI.parse_budget("0.5")) == "0.50"
    assert FLEXI.budget_label(FLEXI.parse_budget("1")) == "1.00"
    assert FLEXI.budget_label(FLEXI.parse_budget("0.90-1.00")) == "0.90-1.00"
    assert FLEXI.parse_budget("0.30-0.30") == FLEXI.parse_budget("0.30")
    for text, message in [("1.5", "out of range"), ("-0.1", "out of range"), ("0.5-1.2", "out of range"),
                          ("x", "weak-step fraction"), ("0.9-0.5", "U >= C")]:
        with pytest.raises(InputError, match=message):
            FLEXI.parse_budget(text)


@pytest.mark.parametrize("budget, steps, weak, weak_guidance", [
    ("0.00", 10, 0, 0), ("0.25", 10, 3, 3), ("0.50", 10, 5, 5), ("0.75", 4, 3, 3), ("1.00", 7, 7, 7),
    ("0.50-1.00", 4, 2, 4), ("0.88-1.00", 250, 220, 250),
])
def test_schedule_step_accounting(tiny_model, tiny_spec, budget, steps, weak, weak_guidance):
    model = FLEXI.convert(tiny_model, {})
    settings = SamplingSettings(steps=steps, cfg_scale=1.5)
    plan = FLEXI.plan(model, FLEXI.parse_budget(budget), settings, tiny_spec)
    keys = [plan.step_key(s) for s in range(steps)]
    assert keys == [(4 if s < weak else 2, 4 if s < weak_guidance else 2) for s in range(steps)]  # weak first
    d = plan.details
    assert (d["weak_steps"], d["weak_steps_guidance"], d["powerful_steps"]) == (weak, weak_guidance, steps - weak)
    if steps <= 10:
        macs = plan_macs(plan, (1, 16, 16))
        per = {p: flexidit_macs_per_call(model.config, p) for p in (2, 4)}
        assert macs["macs_per_image"] == (weak + weak_guidance) * per[4] + (2 * steps - weak - weak_guidance) * per[2]
        assert macs["macs_per_image"] == pytest.approx(d["analytic_gmacs_per_image"] * 1e9)
    unguided = FLEXI.plan(model, FLEXI.parse_budget(budget), SamplingSettings(steps=steps, cfg_scale=1.0), tiny_spec)
    assert [unguided.step_key(s) for s in range(steps)] == [k[0] for k in keys] and unguided.calls_per_step == 1


def test_cfg_rule(tiny_model, tiny_spec, inputs):
    model = FLEXI.convert(tiny_model, {})
    randomize_(model, seed=4, std=0.02)  # the two patch sizes now differ beyond their init relation
    with torch.no_grad():
        model.x_embedder.flex_weight.mul_(40)
    x, t, y = inputs[0], inputs[1], torch.tensor([1, 7, 2])
    s1 = 2.0
    plan = FLEXI.plan(model, FLEXI.parse_budget("0.50-1.00"), SamplingSettings(steps=4, cfg_scale=s1), tiny_spec)
    null = torch.full_like(y, 10)
    with torch.no_grad():
        out = {(p, lab): model(x, t, labels, patch_size=p) for p in (2, 4) for lab, labels in (("c", y), ("u", null))}
        weak_weak = plan.denoise(x, 0, t, y)  # both branches weak: standard CFG with the null label, s1
        mixed = plan.denoise(x, 3, t, y)  # powerful cond, weak guidance with the label in both branches, s2
    expected = out[4, "u"][:, :1] + s1 * (out[4, "c"][:, :1] - out[4, "u"][:, :1])
    assert torch.allclose(weak_weak, torch.cat([expected, out[4, "c"][:, 1:]], 1), atol=1e-5)
    s2 = weak_guidance_scale(s1)
    assert s2 == pytest.approx(1 - (1 - s1) / 2.5) and s2 == pytest.approx(1.4)
    expected = out[4, "c"][:, :1] + s2 * (out[2, "c"][:, :1] - out[4, "c"][:, :1])
    assert torch.allclose(mixed, torch.cat([expected, out[2, "c"][:, 1:]], 1), atol=1e-5)
    assert not torch.allclose(mixed[:, :1], out[2, "u"][:, :1] + s1 * (out[2, "c"][:, :1] - out[2, "u"][:, :1]))
    assert plan.details["cfg_scale_weak_guidance"] == pytest.approx(1.4)


# ---------------------------------------------------------------------------------------------- FLOPs


@pytest.mark.parametrize("name, size, channels, variant", [
    ("dit-micro-2", 16, 1, "shared"), ("dit-tiny-2", 16, 1, "lora"), ("dit-micro-2", 64, 4, "shared"),
])
def test_executed_macs_per_patch_size_match_closed_form(name, size, channels, variant):
    base = build_dit(name, size, in_channels=channels).eval()
    model = FLEXI.convert(base, {"variant": variant, "lora_rank": 4})
    model.prepare()
    x = torch.randn(1, channels, base.config.input_size, base.config.input_size)
    for p in (2, 4):
        with torch.no_grad():
            counted = count_macs(lambda: model(x, torch.tensor([10]), torch.tensor([1]), patch_size=p))
        assert counted == flexidit_macs_per_call(model.config, p)


def test_dit_xl_2_closed_form_matches_paper():
    config = FlexiConfig(dit_config("dit-xl-2", 256), 4)
    base, weak = flexidit_macs_per_call(config, 2), flexidit_macs_per_call(config, 4)
    assert base / 1e9 == pytest.approx(118.6, abs=0.05) and weak / 1e9 == pytest.approx(29.04, abs=0.05)
    assert weak / base == pytest.approx(0.2448, abs=2e-4)
    lora = FlexiConfig(dit_config("dit-xl-2", 256), 4, variant="lora", lora_rank=32, tokenizer="separate")
    assert flexidit_macs_per_call(lora, 4) / 1e9 == pytest.approx(30.10, abs=0.01)  # §1.8
    # spec §4.1's FLOPs% for x_c/x_u powerful steps of T = 250
    for powerful, percent in [(130, 63.8), (70, 45.6), (160, 72.8)]:
        ratio = analytic_macs_per_image(config, 250, 250 - powerful, 250 - powerful, True) / (500 * base)
        assert 100 * ratio == pytest.approx(percent, abs=0.05)
    assert 100 * analytic_macs_per_image(config, 250, 220, 250, True) / (500 * base) == pytest.approx(29.0, abs=0.05)


# ---------------------------------------------------------------------------------------------- fine-tuning


def _finetune(tmp_path, options, steps, name="ft", log_every=1):
    data = prepare_digits()["train"]
    torch.manual_seed(0)
    base = randomize_(build_dit("dit-micro-2", 16, in_channels=1, num_classes=10), std=0.02)
    model = FLEXI.convert(base, FLEXI.parse_options(options))
    config = TrainConfig(steps=steps, batch_size=8, lr=1e-3, ema_decay=0.5, checkpoint_every=3, log_every=log_every,
                         seed=0)
    subset = type(data)(data.images[:64], data.labels[:64])
    ema = FLEXI.finetune(model, subset, FLEXI.parse_options(options), None, config, tmp_path / f"{name}.pt",
                         tmp_path / f"{name}.csv")
    return base, model, ema


def _rows(path):
    lines = path.read_text().splitlines()
    return [dict(zip(lines[0].split(","), line.split(","))) for line in lines[1:]]


def test_shared_finetune_mixes_patch_sizes_and_resumes(tmp_path):
    _, full, full_ema = _finetune(tmp_path / "a", {"distill_weight": 1.0}, 6)
    _finetune(tmp_path / "b", {"distill_weight": 1.0}, 3)
    _, resumed, resumed_ema = _finetune(tmp_path / "b", {"distill_weight": 1.0}, 6)
    for a, b in zip(full_ema.state_dict().values(), resumed_ema.state_dict().values()):
        assert torch.equal(a, b)
    rows = _rows(tmp_path / "a" / "ft.csv")
    assert {"loss", "mse", "vb", "distill", "patch_size"} <= set(rows[0]) and len(rows) == 6
    assert {float(r["patch_size"]) for r in rows} == {2.0, 4.0}
    assert all((float(r["distill"]) > 0) == (float(r["patch_size"]) == 4.0) for r in rows)
    assert not full_ema.training and not any(p.requires_grad for p in full_ema.parameters())


def test_lora_finetune_leaves_the_base_path_untouched(tmp_path, inputs):
    base, model, ema = _finetune(tmp_path, {"variant": "lora", "lora_rank": 2, "distill_weight": 1.0}, 4)
    base.eval()
    ema.eval()
    with torch.no_grad():
        assert torch.equal(ema(*inputs), base(*inputs))
        initial = FLEXI.convert(base, FLEXI.parse_options({"variant": "lora", "lora_rank": 2})).eval()
        assert not torch.allclose(ema(*inputs, patch_size=4), initial(*inputs, patch_size=4))
    assert {float(r["patch_size"]) for r in _rows(tmp_path / "ft.csv")} == {4.0}  # LoRA trains the weak path only


def test_cli_flops_reports_both_patch_sizes(capsys):
    out = json.loads(run_cli(capsys, "flops", "--method", "flexidit", "--model", "dit-tiny-2", "--image-size", "64",
                             "--budget", "0.50", "--steps", "10"))
    d = out["details"]
    assert out["gmacs_per_image"] == pytest.approx(d["analytic_gmacs_per_image"])
    assert out["gmacs_per_call"] == pytest.approx((d["analytic_gmacs_per_call_base"]
                                                   + d["analytic_gmacs_per_call_weak"]) / 2)
    assert d["analytic_gmacs_per_call_weak"] < 0.3 * d["analytic_gmacs_per_call_base"]


# ---------------------------------------------------------------------------------------------- MMD stage


def _mmd_model(tiny_model, **options):
    model = FLEXI.convert(tiny_model, FLEXI.parse_options(options)).train().requires_grad_(True)
    return randomize_(model, seed=5, std=0.05)  # the two patch sizes differ; e_p != 0


def test_mmd_options_are_validated():
    for options, key in [({"mmd_weight": -1}, "mmd_weight"), ({"mmd_weight": "1"}, "mmd_weight"),
                         ({"mmd_every": 0}, "mmd_every"), ({"mmd_every": 1.5}, "mmd_every"),
                         ({"mmd_sampler": "euler"}, "mmd_sampler"), ({"mmd_sampler_steps": 0}, "mmd_sampler_steps"),
                         ({"mmd_sampler_steps": 998}, "mmd_sampler_steps"),  # no integer DDIM stride gives 998
                         ({"mmd_chain_steps": 10}, "mmd_chain_steps"), ({"mmd_chain_steps": 0}, "mmd_chain_steps"),
                         ({"mmd_grad_steps": 3}, "mmd_grad_steps"), ({"mmd_grad_steps": True}, "mmd_grad_steps"),
                         ({"mmd_batch": 1}, "mmd_batch"), ({"mmd_bandwidths": []}, "mmd_bandwidths"),
                         ({"mmd_bandwidths": [1.0, 0.0]}, "mmd_bandwidths"),
                         ({"mmd_bandwidths": 2.0}, "mmd_bandwidths")]:
        with pytest.raises(InputError, match=f"option {key} "):
            FLEXI.parse_options(options)
    ok = FLEXI.parse_options({"mmd_sampler": "ddpm", "mmd_sampler_steps": 250, "mmd_chain_steps": 4,
                              "mmd_grad_steps": 4, "mmd_bandwidths": [1, 2]})
    assert ok.mmd_bandwidths == [1.0, 2.0] and FLEXI.parse_options({}).mmd_weight == 0.0


def test_mmd2_estimator():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 1, 8, 8, generator=g), torch.randn(64, 1, 8, 8, generator=g)
    assert abs(mmd2(a, a, [0.5, 1.0, 2.0])) < 1e-5
    # biased estimator: same-distribution batches sit at a positive floor ~ 2 (k(u, u) - E k) / m
    same, shifted = mmd2(a, b, [0.5, 1.0, 2.0]), mmd2(a, b + 1.0, [0.5, 1.0, 2.0])
    assert shifted > 0.3 and shifted > 5 * same
    assert same_class_partners(torch.tensor([3, 1, 3, 2, 3]), 4) == [2, 1, 4, 3]  # next of the class, or itself


def test_mmd_chain_patch_sizes_and_gradient_window(tiny_model):
    model = _mmd_model(tiny_model)
    grid = GaussianDiffusion.respaced("ddim", 10)
    g = torch.Generator().manual_seed(2)
    x0, y = torch.randn(6, 1, 16, 16, generator=g), torch.tensor([1, 2, 1, 2, 3, 3])
    calls = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.patch_size, self.weak_patch_size = model, model.patch_size, model.weak_patch_size

        def forward(self, x, t, y, patch_size, drop_labels):
            calls.append((patch_size, drop_labels, int(t[0]), torch.is_grad_enabled()))
            return self.inner(x, t, y, patch_size=patch_size, drop_labels=drop_labels)

    for s in range(4):
        calls.clear()
        with torch.set_grad_enabled(s == 1):
            bootstrapped_mmd_loss(Recorder(), x0, y, grid, start_index=5, weak_steps=s, chain_steps=3,
                                  grad_steps=2, batch=4)
        assert [c[0] for c in calls] == [4] * s + [2] * (3 - s)  # weak first, exactly s_weak calls
        assert [c[2] for c in calls] == [500, 400, 300] and not any(c[1] for c in calls)  # conditional only
        if s == 1:
            assert [c[3] for c in calls] == [False, True, True]  # gradients through the last 2 steps only

    shared = model.blocks[0].attn.qkv.weight

    def grads(**kw):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        loss = bootstrapped_mmd_loss(model, x0, y, grid, start_index=3, chain_steps=2, batch=4, **kw)
        loss.backward()
        return loss, model.patch_size_embed["p4"].grad, model.patch_size_embed["p2"].grad, shared.grad

    # first step weak, second base: with a 1-step window the weak-only e_4 sees no gradient; with 2 it does
    loss1, weak1, base1, shared1 = grads(weak_steps=1, grad_steps=1)
    loss2, weak2, _, shared2 = grads(weak_steps=1, grad_steps=2)
    assert loss1 > 0 and torch.equal(loss1, loss2)  # the window changes gradients, not the value
    assert weak1 is None and base1.abs().sum() > 0 and shared1.abs().sum() > 0
    assert weak2.abs().sum() > 0 and not torch.allclose(shared1, shared2)  # and flow back through the chain
    _, weak3, base3, _ = grads(weak_steps=2, grad_steps=1)
    assert weak3.abs().sum() > 0 and base3 is None


def test_mmd_random_choices_stay_in_range():
    seen = []

    class Stub(torch.nn.Module):  # records (timestep, patch size) and predicts zero noise: only the draws matter
        patch_size, weak_patch_size = 2, 4

        def forward(self, x, t, y, patch_size, drop_labels):
            seen.append((int(t[0]), patch_size))
            return torch.zeros(x.shape[0], 2 * x.shape[1], *x.shape[2:])

    grid = GaussianDiffusion.respaced("ddim", 10)
    torch.manual_seed(0)
    for _ in range(200):
        bootstrapped_mmd_loss(Stub(), torch.randn(2, 1, 4, 4), torch.tensor([0, 0]), grid, chain_steps=2, batch=2)
    starts = [t for t, _ in seen[::2]]
    assert set(starts) == set(range(200, 1000, 100))  # t1 = t2 + 2 grid steps, t2 anywhere on the grid's 0..700
    assert sum(t == 200 for t in starts) > 2.5 * sum(t == 900 for t in starts)  # biased to the data end
    weak = [sum(p == 4 for _, p in seen[i:i + 2]) for i in range(0, len(seen), 2)]
    assert set(weak) == {0, 1, 2} and all(seen[i][1] >= seen[i + 1][1] for i in range(0, len(seen), 2))


def test_mmd_weight_zero_is_the_old_loss(tiny_model):
    model = _mmd_model(tiny_model)
    diffusion = GaussianDiffusion.base()
    x0, y = torch.randn(4, 1, 16, 16), torch.tensor([1, 2, 1, 2])
    options = FLEXI.parse_options({})
    results = []
    for fn in (FlexiDiTLoss(options), lambda *a: flexidit_loss(*a, weak_ratio=0.5, distill_weight=0.0,
                                                               teacher=None)):
        torch.manual_seed(0)
        terms = [fn(model, x0, y, diffusion) for _ in range(6)]
        results.append((terms, torch.rand(3)))  # the RNG is left where the old loss left it
    (new, rng_new), (old, rng_old) = results
    assert torch.equal(rng_new, rng_old) and len({float(t["patch_size"]) for t in old}) == 2
    for a, b in zip(new, old):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_mmd_every_counts_steps_and_resumes(tmp_path):
    options = {"mmd_weight": 1.0, "mmd_every": 2, "mmd_batch": 4, "mmd_sampler_steps": 5}
    _finetune(tmp_path / "a", options, 5, log_every=2)  # with the MMD term on, every step is logged
    rows = _rows(tmp_path / "a" / "ft.csv")
    mmd = [float(r["mmd"]) for r in rows]
    assert [m == m for m in mmd] == [True, False, True, False, True] and all(m >= 0 for m in mmd[::2])
    for r, m in zip(rows, mmd):  # weight 1: the term is in the loss on its steps only
        assert float(r["loss"]) == pytest.approx(float(r["mse"]) + float(r["vb"]) + (m if m == m else 0), rel=1e-5)
    _finetune(tmp_path / "b", options, 3)  # state saved at step 3; the counter continues from it
    _, _, resumed_ema = _finetune(tmp_path / "b", options, 5)
    rows_b = _rows(tmp_path / "b" / "ft.csv")
    assert [float(r["mmd"]) == float(r["mmd"]) for r in rows_b] == [True, False, True, False, True]
    assert float(rows_b[-1]["mmd"]) == pytest.approx(mmd[-1], rel=1e-5)


def test_mmd_compute_accounting(tiny_model):
    model = FLEXI.convert(tiny_model, {})
    loss = FlexiDiTLoss(FLEXI.parse_options({"mmd_weight": 0.5, "mmd_every": 4, "mmd_chain_steps": 2}))
    assert loss.chain_kinds(model.config) == [(2, 2), (4, 2), (4, 4)]  # s_weak = 0, 1, 2, weak first
    base, weak = (flexidit_macs_per_call(model.config, p) for p in (2, 4))
    assert loss.mmd_forward_macs(model.config, 8) == pytest.approx(8 * 2 * (base + weak) / 2 / 4)  # min(32, 8) chains
    assert FlexiDiTLoss(FLEXI.parse_options({})).mmd_forward_macs(model.config, 8) == 0.0
