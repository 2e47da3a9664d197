"""DyDiT on video (models/dylatte): width routers in the spatial and the temporal blocks, token routing over (frame,
location); conversion invariant, masked/sliced equivalence, per-block FLOPs-loss weights, executed MACs on real
trajectories equal to the closed form, fine-tuning on clips, the device and bf16."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from conftest import randomize_
from simulated_device import OnDevice, simulated_device

from ditpareto.archs import latte_config
from ditpareto.errors import InputError
from ditpareto.flops import count_macs
from ditpareto.methods import METHODS, ModelSpec, SamplingSettings
from ditpareto.models.dydit import RouterConfig, compute_ratio, flops_loss
from ditpareto.models.dylatte import DyLatte
from ditpareto.models.latte import Latte
from ditpareto.sampling import counted_macs, generate
from ditpareto.spec.dit import dit_macs_per_call
from ditpareto.spec.dydit import block_flops, layer_flops, sliced_macs_per_call, token_router_macs

METHOD = METHODS["dydit"]
SPEC = ModelSpec("latte-micro-2", 16, in_channels=1, num_classes=10)  # 16 frames of 8 x 8 tokens, 2 heads
CLIP = (16, 1, 16, 16)
VIDEO = ["--model", "latte-micro-2", "--image-size", "16", "--in-channels", "1", "--num-classes", "10"]


def latte(temporal_position="temporal", num_classes=10, seed=0, **overrides) -> Latte:
    """latte-micro-2 at random weights (adaLN gates and the output layer included: an equality is not of zeros)."""
    config = latte_config("latte-micro-2", 16, in_channels=1, num_classes=num_classes,
                          temporal_position=temporal_position, **overrides)
    torch.manual_seed(seed)
    return randomize_(Latte(config), seed=seed, std=0.2).eval()


def scrambled_routers(model: DyLatte, seed: int = 1) -> DyLatte:
    """Random router weights, so heads, groups and tokens are switched off at varied places."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.router_parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


def clips(batch=3, frames=16, t=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, frames, 1, 16, 16, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g) if t is None else torch.full((batch,), t)
    return x, t, torch.randint(0, 10, (batch,), generator=g)


@pytest.fixture
def wide():
    """4 frames, 4 heads and 8 MLP groups per block: more units to route than the registered latte-micro-2."""
    base = latte(num_frames=4, num_heads=4)
    return base, DyLatte.from_latte(base, RouterConfig(mlp_groups=8)).eval()


# ---------------------------------------------------------------------------------------------- (a) conversion


@pytest.mark.parametrize("temporal_position", ["temporal", "stream"])
@pytest.mark.parametrize("num_classes, init", [(10, "xavier"), (10, "zero"), (0, "xavier")])
def test_a_converted_model_is_the_latte_base(temporal_position, num_classes, init):
    """Every gate open: the complete forward, the hard-gated forward and the sliced forward (all heads, groups and
    tokens kept) equal the base, for both frame-embedding placements, class-conditional or not."""
    base = latte(temporal_position, num_classes)
    model = METHOD.convert(base, METHOD.parse_options({"router_init": init}))
    assert isinstance(model, DyLatte) and not model.training
    x, t, y = clips(batch=3, frames=16)
    with torch.no_grad():
        ref = base(x, t, y)
        for mode in ("complete", "hard"):
            out, gates = model.forward_masked(x, t, y, mode)
            torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
            assert len(gates) == 4 and all(bool((g == 1).all()) for layer in gates for g in layer)
            assert [tuple(g.shape) for g in gates[1]] == [(3, 2), (3, 2), (3, 16 * 64)]  # per clip
        x, t, y = clips(batch=2, t=999, seed=1)
        sliced = model.forward_sliced(x, t, y, model.gather_widths(model.width_masks(999)))
        torch.testing.assert_close(sliced, base(x, t, y), rtol=0, atol=1e-5)
    assert (ref - ref.mean()).abs().max() > 0.1  # not an equality of zeros


def test_conversion_is_strict_and_refuses_an_image_dit():
    from ditpareto.models import build_dit

    with pytest.raises(InputError, match="converts a Latte model"):
        DyLatte.from_latte(build_dit("dit-micro-2", 16, in_channels=1, num_classes=10))
    with pytest.raises(InputError, match="needs a Latte config"):
        DyLatte(build_dit("dit-micro-2", 16, in_channels=1, num_classes=10).config)
    with pytest.raises(InputError, match="image DyDiT checkpoints only"):
        METHOD.load_official("unused.pt", SPEC, {})


# ---------------------------------------------------------------------------------------------- (b) masked = sliced


@pytest.mark.parametrize("temporal_position", ["temporal", "stream"])
def test_masked_and_sliced_paths_agree(temporal_position):
    base = latte(temporal_position, num_frames=4, num_heads=4)
    model = scrambled_routers(DyLatte.from_latte(base, RouterConfig(mlp_groups=8)).eval())
    seen_heads, seen_groups, seen_tokens = {0: set(), 1: set()}, {0: set(), 1: set()}, {0: [], 1: []}
    with torch.no_grad():
        for t in (0, 250, 600, 999):
            x, tt, y = clips(batch=3, frames=4, t=t, seed=t)
            masked, gates = model.forward_masked(x, tt, y, "hard")
            sliced = model.forward_sliced(x, tt, y, model.gather_widths(model.width_masks(t)))
            torch.testing.assert_close(sliced, masked, rtol=0, atol=1e-5)
            for i, (m_head, m_grp, m_tok) in enumerate(gates):
                assert bool((m_head == m_head[0]).all() and (m_grp == m_grp[0]).all())  # batch-independent width
                assert m_head[0, 0] == 1 and m_grp[0, 0] == 1  # unit 0 always on
                seen_heads[i % 2].add(int(m_head[0].sum()))
                seen_groups[i % 2].add(int(m_grp[0].sum()))
                seen_tokens[i % 2].append(float(m_tok.mean()))
    # not vacuous: in both block types widths vary and tokens are both skipped and kept
    for kind in (0, 1):
        assert len(seen_heads[kind]) > 1 and len(seen_groups[kind]) > 1
        assert 0 < np.mean(seen_tokens[kind]) < 1


def test_width_gates_are_one_draw_per_clip_and_depend_on_the_timestep_only(wide):
    """Gumbel width gates are drawn once per clip and block and applied to all its frames and locations: the
    returned per-clip gates, forced back in, give the same output (token gates certain at the +35 bias)."""
    base, _ = wide
    model = DyLatte.from_latte(base, RouterConfig(mlp_groups=8, router_init="zero", width_bias_init=0.0)).train()
    model.y_embedder.dropout_prob = 0.0
    x, t, y = clips(batch=4, frames=4)
    torch.manual_seed(0)
    with torch.no_grad():
        out, gates = model.forward_masked(x, t, y, "gumbel")
        forced, again = model.forward_masked(x, t, y, "hard", widths=[(h, g) for h, g, _ in gates])
    fractions = torch.stack([h.mean(1) for h, _, _ in gates])
    assert bool((fractions < 1).any()) and bool((fractions > 0.5).any())  # 50/50 gates: clips differ
    torch.testing.assert_close(forced, out, rtol=0, atol=0)
    model.eval()
    scrambled_routers(model)
    with torch.no_grad():
        _, a = model.forward_masked(x, torch.full((4,), 321), torch.tensor([0, 1, 2, 3]), "hard")
        _, b = model.forward_masked(torch.randn_like(x), torch.full((4,), 321), torch.tensor([9, 8, 7, 6]), "hard")
    assert all(torch.equal(ga[0], gb[0]) and torch.equal(ga[1], gb[1]) for ga, gb in zip(a, b))


def test_every_token_of_every_frame_is_routed_and_reported_in_frame_location_order(wide):
    """Each block's token router decides for every (frame, location) token: in a spatial block on the rows of a
    frame, in a temporal block on the rows of a location; the returned gates are its decisions (logit > 0), both
    reordered to (frame, location)."""
    _, model = wide
    scrambled_routers(model)
    logits = {}
    hooks = [block.token_router.register_forward_hook(lambda m, i, out, k=k: logits.__setitem__(k, out))
             for k, block in enumerate(model.blocks)]
    x, t, y = clips(batch=2, frames=4, t=500)
    with torch.no_grad():
        _, gates = model.forward_masked(x, t, y, "hard")
    for hook in hooks:
        hook.remove()
    for k, (_, _, m_tok) in enumerate(gates):
        decided = logits[k].squeeze(-1) > 0
        if k % 2:  # temporal: (N*T, F) rows of a location's frames
            assert logits[k].shape == (2 * 64, 4, 1)
            decided = decided.reshape(2, 64, 4).transpose(1, 2)
        else:  # spatial: (N*F, T) rows of a frame's locations
            assert logits[k].shape == (2 * 4, 64, 1)
        assert torch.equal(m_tok.reshape(2, 4, 64).bool(), decided.reshape(2, 4, 64))
    assert 0 < torch.cat([g[2] for g in gates]).mean() < 1


# ---------------------------------------------------------------------------------------------- FLOPs


def test_flops_loss_weights_each_block_type_by_its_macs():
    """latte-micro-2, 4 frames at 16 px: F = 4, T = 64 tokens per frame, D = 32, MLP 128.
    Spatial: F_attn = 4 (4 T D^2 + 2 T^2 D) = 2097152, F_mlp = 2 F T D 128 = 2097152.
    Temporal: F_attn = T (4 F D^2 + 2 F^2 D) = 1114112 (attention over 4 frames is cheap), F_mlp = 2097152."""
    config = latte_config("latte-micro-2", 16, in_channels=1, num_classes=10, num_frames=4)
    spatial, temporal = (2097152, 2097152), (1114112, 2097152)
    assert block_flops(config) == [spatial, temporal, spatial, temporal]
    with pytest.raises(ValueError, match="block_flops"):
        layer_flops(config)
    ones, tokens = torch.ones, 4 * 64
    half_tokens = torch.tensor([[1.0, 0.0] * (tokens // 2), [1.0] * tokens])
    gates = [
        (torch.tensor([[1.0, 0.0], [1, 1]]), ones(2, 2), ones(2, tokens)),  # spatial: half the heads
        (ones(2, 2), torch.tensor([[1.0, 0.0], [1, 1]]), half_tokens),  # temporal: half the groups, half the tokens
        (ones(2, 2), ones(2, 2), ones(2, tokens)),
        (ones(2, 2), ones(2, 2), ones(2, tokens)),
    ]
    full = 2 * (sum(spatial) + sum(temporal))
    clip0 = (0.5 * 2097152 + 2097152) + (1114112 + 0.25 * 2097152) + sum(spatial) + sum(temporal)
    ratio = compute_ratio(gates, config)
    assert ratio.tolist() == pytest.approx([clip0 / full, 1.0], rel=1e-6)
    loss, mean = flops_loss(gates, config, target=0.5)
    assert mean.item() == pytest.approx((clip0 / full + 1) / 2, rel=1e-6)
    assert loss.item() == pytest.approx((mean.item() - 0.5) ** 2, rel=1e-6)
    # the block constants and the token routers are the executed MACs' block share of a full call
    full_call = sliced_macs_per_call(config, 2, [2] * 4, [2] * 4, [1.0] * 4)
    assert full_call == dit_macs_per_call(config) + 4 * token_router_macs(config)
    assert token_router_macs(config) == 4 * 64 * (32 * 2 + 2)


def test_sliced_macs_are_the_executed_ones(wide):
    """One sliced call: the counter equals the closed form at the realised heads, groups and kept tokens."""
    _, model = wide
    scrambled_routers(model)
    x, t, y = clips(batch=3, frames=4, t=700)
    masks = model.width_masks(700)
    with torch.no_grad():
        _, gates = model.forward_masked(x, t, y, "hard")
        counted = count_macs(lambda: model.forward_sliced(x, t, y, model.gather_widths(masks)))
    heads, groups = [int(h.sum()) for h, _ in masks], [int(g.sum()) for _, g in masks]
    kept = [int(g[2].sum()) / g[2].numel() for g in gates]  # exact shares (a float32 mean rounds)
    assert 0 < np.mean(kept) < 1 and min(heads) < 4
    assert counted == pytest.approx(3 * sliced_macs_per_call(model.config, 8, heads, groups, kept), rel=1e-9)
    assert counted < 3 * dit_macs_per_call(model.config)


# ---------------------------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("cfg", [1.0, 2.0])
def test_the_plan_counts_executed_macs_equal_to_the_closed_form_of_its_decisions(cfg):
    """Sampling clips through the plan: the MACs counted on real trajectories equal the closed form of the recorded
    routing decisions (each step's heads and groups, each layer's kept (frame, location) tokens), with and without
    guidance; a converted model costs the static Latte plus its token routers."""
    settings = SamplingSettings(steps=3, cfg_scale=cfg, guidance_channels="all")
    options = METHOD.parse_options({"flops_samples": 3, "mlp_groups": 4})
    model = METHOD.convert(latte(), options)
    calls = 2 if cfg != 1.0 else 1
    static, router = dit_macs_per_call(model.config), 4 * token_router_macs(model.config)
    plan = METHOD.plan(model, "0.50", settings, SPEC, options)
    macs = counted_macs(plan, CLIP)
    assert macs["macs_per_call"] == static + router and macs["macs_per_image"] == 3 * calls * (static + router)
    assert plan.details["analytic_gmacs_per_image"] * 1e9 == pytest.approx(macs["macs_per_image"], rel=1e-12)
    scrambled_routers(model)
    plan = METHOD.plan(model, "0.50", settings, SPEC, options)
    macs = counted_macs(plan, CLIP)
    details = plan.details
    assert details["analytic_gmacs_per_image"] * 1e9 == pytest.approx(macs["macs_per_image"], rel=1e-9)
    assert 0 < details["token_keep_rate"] < 1 and details["group_frac"] < 1  # routing did skip work
    assert macs["macs_per_call"] < static and 0 < details["block_compute_ratio"] < 1
    assert details["executed_compute_ratio"] == pytest.approx(macs["macs_per_call"] / static)
    batch, _ = generate(plan, SPEC, settings, seed=0, indices=range(2), batch_size=2, progress=False)
    assert batch.images.shape == (2, 16, 16, 16, 1)
    full = METHOD.plan(model, "full@0.50", settings, SPEC, options)  # routers bypassed: the static Latte
    assert counted_macs(full, CLIP)["macs_per_call"] == static


def test_the_sample_cli_samples_a_converted_latte_dydit_with_counted_macs_of_the_closed_form(tmp_path):
    """convert (Latte base -> DyDiT) and sample through the CLI, as the static ladder does on video: clips, and a
    record whose executed GMACs equal the closed form of the run's routing decisions, with and without CFG; the
    checkpoint is validated (a plain Latte is refused)."""
    from ditpareto.cli import main
    from ditpareto.npzfiles import load_samples
    from ditpareto.results import read_record

    torch.save(latte().state_dict(), tmp_path / "latte.pt")
    main(["convert", "--method", "dydit", "--base", str(tmp_path / "latte.pt"), *VIDEO,
          "--out", str(tmp_path / "converted.pt")])
    model = METHOD.load_model(tmp_path / "converted.pt", SPEC, {})
    assert isinstance(model, DyLatte)
    torch.save(scrambled_routers(model).state_dict(), tmp_path / "routed.pt")
    options = json.dumps({"flops_samples": 2})
    for cfg in ("1.0", "2.0"):
        main(["sample", "--method", "dydit", "--budget", "0.50", "--seed", "0", "--checkpoint",
              str(tmp_path / "routed.pt"), *VIDEO, "--steps", "3", "--num-samples", "2", "--batch-size", "2",
              "--cfg-scale", cfg, "--guidance-channels", "all", "--options", options,
              "--out", str(tmp_path / f"s{cfg}.npz"), "--record", str(tmp_path / f"s{cfg}.json")])
        record = read_record(tmp_path / f"s{cfg}.json")
        assert record["gmacs_per_image"] == pytest.approx(record["params"]["analytic_gmacs_per_image"], rel=1e-9)
        assert 0 < record["params"]["token_keep_rate"] < 1
        assert record["network_calls_per_image"] == 3 * (2 if cfg == "2.0" else 1)
    assert load_samples(tmp_path / "s1.0.npz")["images"].shape == (2, 16, 16, 16, 1)
    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--method", "dydit", "--budget", "0.50", "--seed", "0", "--checkpoint",
              str(tmp_path / "latte.pt"), *VIDEO, "--num-samples", "1", "--out", str(tmp_path / "x.npz"),
              "--record", str(tmp_path / "x.json")])
    assert exit_info.value.code == 2 and not (tmp_path / "x.npz").exists()


# ---------------------------------------------------------------------------------------------- fine-tuning


def clip_set(n=8, frames=16, seed=0):
    from ditpareto.clipsets import ClipSet

    rng = np.random.default_rng(seed)
    return ClipSet(rng.integers(0, 255, (n, frames, 16, 16, 1), dtype=np.uint8), rng.integers(0, 10, n))


def test_a_fine_tune_step_on_clips_runs_and_counts_train_macs(tmp_path):
    """DyDiTLoss on clips (N, F, C, H, W): per-clip gates, the FLOPs loss on the Latte block weights, logged; the
    training MACs are counted (the complete-model loss's steps cost more); the fixed embeddings do not train."""
    from ditpareto.methods.dydit import DyDiTLoss
    from ditpareto.diffusion import GaussianDiffusion
    from ditpareto.train import TrainConfig

    options = METHOD.parse_options({"router_init": "zero", "width_bias_init": 0.5, "token_bias_init": 0.5,
                                    "hold_steps": 0, "ramp_steps": 2, "complete_steps": 1, "flops_samples": 2})
    data = clip_set()
    model = METHOD.convert(latte(), options)
    x0, y = data.as_model_input()[:4], torch.from_numpy(data.labels[:4])
    out = DyDiTLoss(0.5, options)(model.train(), x0, y, GaussianDiffusion.base())
    assert torch.isfinite(out["loss"]) and 0 < out["compute_ratio"] < 1 and 0 < out["token_frac"] < 1
    macs_at = METHOD.train_step_macs(model, x0, y, options, METHOD.parse_budget("0.50"))
    first, later = macs_at(0), macs_at(1)
    forward = count_macs(lambda: model.eval().forward_masked(x0, torch.zeros(4, dtype=torch.long), y, "hard"))
    assert later > 2 * forward and first > later + forward  # backward ~2x forward; complete forward on step 0
    temp_embed = model.temp_embed.clone()
    ema = METHOD.finetune(model, data, options, METHOD.parse_budget("0.50"),
                          TrainConfig(steps=2, batch_size=4, lr=1e-3, ema_decay=0.5, checkpoint_every=10),
                          tmp_path / "state.pt", tmp_path / "loss.csv")
    rows = (tmp_path / "loss.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert len(rows) == 3 and {"compute_ratio", "flops_loss", "token_frac", "complete_loss"} <= set(header)
    assert isinstance(ema, DyLatte) and not ema.training
    assert torch.equal(ema.temp_embed, temp_embed) and torch.equal(model.temp_embed, temp_embed)


# ---------------------------------------------------------------------------------------------- device and bf16


def routed_model(seed: int = 1) -> DyLatte:
    model = METHOD.convert(latte(), METHOD.parse_options({"flops_samples": 2}))
    return scrambled_routers(model, seed)


SETTINGS = SamplingSettings(steps=2, cfg_scale=2.0, guidance_channels="all")


def denoise_all_steps(plan, x, y) -> list[torch.Tensor]:
    outs = []
    for step in range(plan.num_steps):
        index = plan.num_steps - 1 - step
        t = plan.diffusion.model_timesteps(torch.full((len(x),), index, dtype=torch.long, device=x.device))
        outs.append(plan.denoise(x, step, t, y))
    return outs


@pytest.mark.parametrize("order", ["move then plan", "plan then move"])
@pytest.mark.parametrize("budget", ["0.50", "full@0.50"])
def test_the_video_plans_compute_on_the_models_device(order, budget):
    model = routed_model()
    x, y = torch.randn(2, *CLIP, generator=torch.Generator().manual_seed(3)), torch.tensor([1, 7])
    expected = denoise_all_steps(METHOD.plan(copy.deepcopy(model), budget, SETTINGS, SPEC), x, y)
    with simulated_device() as device:
        if order == "move then plan":
            plan = METHOD.plan(model.to(device), budget, SETTINGS, SPEC)
            assert plan.device == device
        else:
            plan = METHOD.plan(model, budget, SETTINGS, SPEC)
            model.to(device)
        outs = denoise_all_steps(plan, x.to(device), y.to(device))
        assert all(isinstance(out, OnDevice) for out in outs)
        outs = [out.cpu() for out in outs]
    for out, ref in zip(outs, expected):
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_video_sampling_and_its_count_run_on_the_device():
    model = routed_model()
    options = METHOD.parse_options({"flops_samples": 2})
    cpu_plan = METHOD.plan(copy.deepcopy(model), "0.50", SETTINGS, SPEC, options)
    expected, _ = generate(cpu_plan, SPEC, SETTINGS, seed=0, indices=range(2), batch_size=2, progress=False)
    expected_macs = counted_macs(cpu_plan, CLIP)
    with simulated_device() as device:
        plan = METHOD.plan(model.to(device), "0.50", SETTINGS, SPEC, options)
        batch, _ = generate(plan, SPEC, SETTINGS, seed=0, indices=range(2), batch_size=2, progress=False)
        macs = counted_macs(plan, CLIP)
    np.testing.assert_array_equal(batch.images, expected.images)
    assert macs["macs_per_image"] == expected_macs["macs_per_image"] > 0
    assert plan.details["analytic_gmacs_per_image"] == cpu_plan.details["analytic_gmacs_per_image"]


@pytest.mark.parametrize("budget", ["0.50", "full@0.50"])
def test_video_plans_sample_in_bf16(budget):
    """bf16 autocast: finite clips close to fp32, and the sliced MLP's scatter into the float32 residual works."""
    from ditpareto.runtime import precision_scope

    model = routed_model()
    plan = METHOD.plan(model, budget, SETTINGS, SPEC)
    reference, _ = generate(plan, SPEC, SETTINGS, seed=0, indices=range(2), batch_size=2, progress=False)
    with precision_scope("bf16", "cpu"):
        batch, _ = generate(plan, SPEC, SETTINGS, seed=0, indices=range(2), batch_size=2, progress=False)
        out = denoise_all_steps(plan, torch.randn(2, *CLIP), torch.tensor([1, 2]))[0]
    assert bool(torch.isfinite(out).all())
    difference = np.abs(batch.images.astype(int) - reference.images.astype(int))
    assert difference.mean() < 8 and np.median(difference) <= 2


@pytest.mark.parametrize("precision", ["bf16", "device"])
def test_the_video_fine_tune_trains_on_the_device_and_in_bf16(precision, monkeypatch, tmp_path):
    import ditpareto.train as train_module
    from ditpareto.runtime import precision_scope
    from ditpareto.study import TrainConfig

    model = routed_model()
    train = TrainConfig(steps=2, batch_size=4, lr=1e-4, checkpoint_every=100, log_every=1,
                        precision="bf16" if precision == "bf16" else "fp32")
    scope = simulated_device() if precision == "device" else precision_scope("fp32", "cpu")
    with scope as device:
        if precision == "device":
            monkeypatch.setattr(train_module, "resolve_device", lambda name: device)
        ema = METHOD.finetune(model, clip_set(), METHOD.parse_options({}), METHOD.parse_budget("0.50"), train,
                              tmp_path / "state.pt", tmp_path / "loss.csv")
    weights = list(ema.parameters())
    assert all(not isinstance(p, OnDevice) and p.device.type == "cpu" and p.dtype == torch.float32 for p in weights)
    assert all(bool(torch.isfinite(p).all()) for p in weights)
    losses = [float(line.split(",")[1]) for line in (tmp_path / "loss.csv").read_text().splitlines()[1:]]
    assert len(losses) == 2 and all(np.isfinite(losses))
