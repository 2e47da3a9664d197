"""FlexDiT: segment shapes at every stage, the init mapping, the density schedule, FLOPs, budgets, bad input."""

import csv
import json
import subprocess
import sys

import pytest
import torch

from ditpareto.diffusion import GaussianDiffusion
from ditpareto.errors import InputError
from ditpareto.flops import count_macs, plan_macs
from ditpareto.methods import METHODS, ModelSpec, SamplingSettings
from ditpareto.spec.flexdit import FlexBudget, flexdit_macs_per_call, stage_bounds, stage_of, stage_rates, stage_sides
from ditpareto.methods.flexdit import batch_stage, stratified_loss
from ditpareto.models import CheckpointError, DiT, DiTConfig, dit_config
from ditpareto.models.flexdit import FlexDiT, flexdit_from_dit
from ditpareto.archs import FlexLayout, default_layout
from conftest import randomize_

METHOD = METHODS["flexdit"]
# Depth 6 with every segment type present: 1 PF, 1 x [Sparse-Gen, 1 sparse, Dense-Rec, 1 dense], 1 top.
FULL = FlexLayout(pf=1, sdtms=1, sparse=1, dense=1, top=1)


def small_base(depth=6, seed=0):
    config = DiTConfig(depth=depth, hidden_size=32, num_heads=2, patch_size=2, input_size=16, in_channels=1,
                       num_classes=10)
    torch.manual_seed(seed)
    return randomize_(DiT(config), seed).eval()


def inputs(batch=3, t=100, side=16):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(batch, 1, side, side, generator=g), torch.full((batch,), t),
            torch.randint(0, 10, (batch,), generator=g))


# ------------------------------------------------------------------ architecture


@pytest.mark.parametrize("depth, expected", [
    (28, (2, 4, 3, 1, 2)), (12, (1, 2, 2, 1, 1)), (24, (2, 4, 2, 1, 2)), (6, (1, 1, 1, 1, 1)), (4, (1, 1, 0, 0, 1)),
    (3, (1, 1, 0, 0, 0)), (2, (0, 1, 0, 0, 0)),
])
def test_default_layout_scales_the_dit_xl_layout(depth, expected):
    layout = default_layout(depth)
    assert (layout.pf, layout.sdtms, layout.sparse, layout.dense, layout.top) == expected
    assert layout.depth == depth


def test_layout_errors():
    with pytest.raises(InputError, match="depth >= 2"):
        default_layout(1)
    with pytest.raises(InputError, match="has 5 blocks, the base DiT has 6"):
        flexdit_from_dit(small_base(), FlexLayout(pf=1, sdtms=1, sparse=1, dense=0, top=1))
    with pytest.raises(InputError, match="at least one SDTM"):
        FlexLayout(pf=6, sdtms=0, sparse=0, dense=0, top=0)


def test_shapes_through_every_segment_at_every_stage():
    model = flexdit_from_dit(small_base(), FULL)
    seen = []
    modules = dict(model.named_modules())
    for name in ("pf_blocks.0", "sdtms.0.gen", "sdtms.0.sparse.0", "sdtms.0.rec", "sdtms.0.dense.0",
                 "top_blocks.0", "final_layer"):
        modules[name].register_forward_hook(lambda m, args, out, name=name: seen.append((name, tuple(out.shape))))
    n, c = 64, 32
    for side in stage_sides(FlexBudget(0.61, 0.86), 8, 4):  # 5, 4, 4, 3
        seen.clear()
        x, t, y = inputs()
        out = model(x, t, y, side=side)
        m = side * side
        assert out.shape == (3, 2, 16, 16)
        assert dict(seen) == {
            "pf_blocks.0": (3, n, c), "sdtms.0.gen": (3, m, c), "sdtms.0.sparse.0": (3, m, c),
            "sdtms.0.rec": (3, n, c), "sdtms.0.dense.0": (3, n, c), "top_blocks.0": (3, n, c),
            "final_layer": (3, n, 8),
        }


def test_poolingformer_is_uniform_attention_of_the_base_block():
    base = small_base()
    model = flexdit_from_dit(base, FULL).eval()
    block, ref = model.pf_blocks[0], base.blocks[0]
    x, t, y = inputs()
    h = base.x_embedder(x) + base.pos_embed
    c = base.condition(t, y)
    # Reference: the pretrained block with its attention matrix replaced by 1/N everywhere.
    sh1, sc1, g1, sh2, sc2, g2 = ref.adaLN_modulation(c).chunk(6, dim=1)
    mod = ref.norm1(h) * (1 + sc1[:, None]) + sh1[:, None]
    v = ref.attn.qkv(mod)[..., 64:]
    uniform = torch.full((3, 64, 64), 1 / 64)
    mixed = h + g1[:, None] * ref.attn.proj(uniform @ v)
    expected = mixed + g2[:, None] * ref.mlp(ref.norm2(mixed) * (1 + sc2[:, None]) + sh2[:, None])
    torch.testing.assert_close(block(h, c), expected, atol=1e-5, rtol=1e-5)
    per_token = flexdit_from_dit(base, FULL, pf_mode="per_token").pf_blocks[0]
    torch.testing.assert_close(per_token(h, c), expected, atol=1e-5, rtol=1e-5)


def test_sparse_gen_at_full_side_is_the_base_block_and_w1_order_does_not_matter():
    base = small_base()
    model = flexdit_from_dit(base, FULL).eval()
    x, t, y = inputs()
    h = base.x_embedder(x) + base.pos_embed
    c = base.condition(t, y)
    # At s = grid, pooling is the identity and cross-attention from X to X is the base block's self-attention.
    torch.testing.assert_close(model.sdtms[0].gen(h, h, c), base.blocks[1](h, c), atol=1e-5, rtol=1e-5)
    randomize_(model, seed=3)
    after = FlexDiT(base.config, FULL, w1_after_upsample=True).eval()
    after.load_state_dict(model.state_dict())
    for side in (3, 5, 8):
        torch.testing.assert_close(model(x, t, y, side=side), after(x, t, y, side=side), atol=1e-5, rtol=1e-5)


def test_init_mapping_puts_each_tensor_where_the_spec_says():
    base = small_base()
    model = flexdit_from_dit(base, FULL).eval()
    b, f, c = base.state_dict(), model.state_dict(), 32
    for key in ("x_embedder.proj.weight", "t_embedder.mlp.2.weight", "y_embedder.embedding_table.weight",
                "pos_embed", "final_layer.linear.weight", "final_layer.adaLN_modulation.1.bias"):
        assert torch.equal(f[key], b[key]), key
    # DiT blocks 0..5 in order: PF, Sparse-Gen, sparse, Dense-Rec, dense, top.
    assert torch.equal(f["pf_blocks.0.attn.v.weight"], b["blocks.0.attn.qkv.weight"][2 * c:])
    assert torch.equal(f["pf_blocks.0.attn.v.bias"], b["blocks.0.attn.qkv.bias"][2 * c:])
    assert torch.equal(f["pf_blocks.0.attn.proj.weight"], b["blocks.0.attn.proj.weight"])
    assert not any(k.startswith("pf_blocks.0.attn.q") for k in f)
    for path, i in (("sdtms.0.gen", 1), ("sdtms.0.rec", 3)):
        assert torch.equal(f[f"{path}.attn.q.weight"], b[f"blocks.{i}.attn.qkv.weight"][:c])
        assert torch.equal(f[f"{path}.attn.q.bias"], b[f"blocks.{i}.attn.qkv.bias"][:c])
        assert torch.equal(f[f"{path}.attn.kv.weight"], b[f"blocks.{i}.attn.qkv.weight"][c:])
        assert torch.equal(f[f"{path}.attn.kv.bias"], b[f"blocks.{i}.attn.qkv.bias"][c:])
        assert torch.equal(f[f"{path}.attn.proj.bias"], b[f"blocks.{i}.attn.proj.bias"])
    for path, i in (("pf_blocks.0", 0), ("sdtms.0.gen", 1), ("sdtms.0.sparse.0", 2), ("sdtms.0.rec", 3),
                    ("sdtms.0.dense.0", 4), ("top_blocks.0", 5)):
        for name in ("mlp.fc1.weight", "mlp.fc2.bias", "adaLN_modulation.1.weight", "adaLN_modulation.1.bias"):
            assert torch.equal(f[f"{path}.{name}"], b[f"blocks.{i}.{name}"]), (path, name)
    for path, i in (("sdtms.0.sparse.0", 2), ("sdtms.0.dense.0", 4), ("top_blocks.0", 5)):
        assert torch.equal(f[f"{path}.attn.qkv.weight"], b[f"blocks.{i}.attn.qkv.weight"])
    assert torch.equal(f["sdtms.0.merge_sparse.weight"], torch.zeros(c, c))
    assert torch.equal(f["sdtms.0.merge_sparse.bias"], torch.zeros(c))
    assert torch.equal(f["sdtms.0.merge_dense.weight"], torch.eye(c))
    assert torch.equal(f["sdtms.0.merge_dense.bias"], torch.zeros(c))


def test_xl_init_mapping_order():
    roles = default_layout(28).block_roles()
    assert roles[:2] == [("pf_blocks.0", "pf"), ("pf_blocks.1", "pf")]
    for k in range(4):
        base = 2 + 6 * k
        assert roles[base] == (f"sdtms.{k}.gen", "cross")
        assert roles[base + 1:base + 4] == [(f"sdtms.{k}.sparse.{j}", "self") for j in range(3)]
        assert roles[base + 4] == (f"sdtms.{k}.rec", "cross")
        assert roles[base + 5] == (f"sdtms.{k}.dense.0", "self")
    assert roles[26:] == [("top_blocks.0", "self"), ("top_blocks.1", "self")]


# ------------------------------------------------------------------ schedule


def test_schedule_matches_the_spec():
    assert stage_sides(FlexBudget(0.61, 0.86), 16, 4) == [10, 9, 8, 6]  # 256 px main
    assert stage_sides(FlexBudget(0.44, 0.61), 16, 4) == [12, 11, 11, 10]  # 256 px light
    assert stage_sides(FlexBudget(0.61, 0.86), 32, 4) == [20, 18, 15, 12]  # 512 px main
    assert stage_sides(FlexBudget(0.90, 0.96), 32, 4) == [10, 9, 8, 6]  # 512 px aggressive
    assert stage_sides(FlexBudget(0.61, 0.86), 8, 4) == [5, 4, 4, 3]  # default study
    assert stage_sides(FlexBudget(1.0, 1.0), 8, 4) == [1, 1, 1, 1]
    assert stage_sides(FlexBudget(0.01, 0.01), 32, 4) == [32] * 4
    assert stage_rates(FlexBudget(0.6, 0.9), 4) == pytest.approx([0.6, 0.7, 0.8, 0.9])
    # t near data -> stage 0 (most tokens, r_min); near noise -> the last stage (fewest tokens, r_max).
    assert [stage_of(t, 4) for t in (0, 249, 250, 499, 500, 749, 750, 999)] == [0, 0, 1, 1, 2, 2, 3, 3]
    for stages in (3, 4, 7):
        covered = []
        for k in range(stages):
            lo, hi = stage_bounds(k, stages)
            assert {stage_of(t, stages) for t in range(lo, hi)} == {k}
            covered += range(lo, hi)
        assert covered == list(range(1000))
    assert batch_stage(torch.tensor([300, 499]), 4) == 1
    with pytest.raises(ValueError, match="one token count"):
        batch_stage(torch.tensor([249, 250]), 4)


def test_training_micro_batches_have_one_stage_and_side_each():
    model = flexdit_from_dit(small_base(), FULL).train()
    sides = [5, 4, 4, 3]
    calls = []
    forward = model.forward

    def spy(x, t, y, side):
        calls.append((len(x), side, {stage_of(v, 4) for v in t.tolist()}))
        return forward(x, t, y, side=side)

    model.forward = spy
    x0, _, y = inputs(batch=10)
    out = stratified_loss(sides)(model, x0, y, GaussianDiffusion.base())
    assert [(n, s, st) for n, s, st in calls] == [(3, 5, {0}), (3, 4, {1}), (2, 4, {2}), (2, 3, {3})]
    assert {"loss", "mse", "vb", "loss_stage0", "loss_stage3"} <= set(out) and out["loss"].requires_grad


def test_sampling_uses_the_stage_side_and_keys_steps_by_stage():
    model = flexdit_from_dit(small_base(), FULL)
    spec = ModelSpec("dit-micro-2", 16, in_channels=1, num_classes=10)
    plan = METHOD.plan(model, "0.61-0.86", SamplingSettings(steps=10, cfg_scale=2.0), spec)
    # DDIM 10 keeps t = 900, 800, ..., 0 (step 0 is the noisiest).
    assert [plan.step_key(s) for s in range(10)] == [3, 3, 2, 2, 2, 1, 1, 0, 0, 0]
    assert plan.details["sparse_sides"] == [5, 4, 4, 3] and plan.details["steps_per_stage"] == [3, 2, 3, 2]
    used = []
    forward = model.forward
    model.forward = lambda x, t, y, side: used.append((len(x), side)) or forward(x, t, y, side=side)
    x, _, y = inputs(batch=2)
    for step, t in ((0, 900), (4, 500), (9, 0)):
        plan.denoise(x, step, torch.full((2,), t), y)
    assert used == [(4, 3), (4, 4), (4, 5)]  # CFG pairs share one side


def test_sparse_grid_larger_than_dense_grid_is_a_clear_error():
    model = flexdit_from_dit(small_base(), FULL)
    x, t, y = inputs()
    for side in (9, 0, 2.5):
        with pytest.raises(InputError, match="does not fit the dense token grid 8x8"):
            model(x, t, y, side=side)


# ------------------------------------------------------------------ FLOPs


@pytest.mark.parametrize("pf_mode, w1_after", [("mean_first", False), ("per_token", True)])
def test_counter_matches_closed_form(pf_mode, w1_after):
    model = FlexDiT(small_base().config, FULL, pf_mode=pf_mode, w1_after_upsample=w1_after).eval()
    x, t, y = inputs(batch=1)
    for side in (1, 3, 8):
        with torch.no_grad():
            counted = count_macs(lambda: model(x, t, y, side=side))
        assert counted == flexdit_macs_per_call(model.config, FULL, side, pf_mode, w1_after)


@pytest.mark.parametrize("size, budget, paper, variants", [
    # (pf_mode, w1_after_upsample) -> expected mean GMACs over the 4 stages (spec section 4.1).
    (512, (0.90, 0.96), 235.0, {("per_token", True): 235.3, ("mean_first", False): 224.8}),
    (256, (0.61, 0.86), 68.05, {("per_token", True): 69.8, ("mean_first", False): 67.5}),
])
def test_dit_xl_gmacs_reproduce_the_paper(size, budget, paper, variants):
    config, layout = dit_config("dit-xl-2", size), default_layout(28)
    sides = stage_sides(FlexBudget(*budget), config.grid_size, 4)
    for (pf_mode, w1_after), expected in variants.items():
        mean = sum(flexdit_macs_per_call(config, layout, s, pf_mode, w1_after) for s in sides) / 4e9
        assert mean == pytest.approx(expected, abs=0.05)
    paper_model = variants[("per_token", True)]
    assert abs(paper_model / paper - 1) < 0.03  # the paper's cost model lands within 3 %


def test_plan_macs_counts_each_stage_with_cfg():
    base = small_base()
    model = flexdit_from_dit(base, FULL).eval()
    spec = ModelSpec("dit-micro-2", 16, in_channels=1, num_classes=10)
    plan = METHOD.plan(model, "0.61-0.86", SamplingSettings(steps=10, cfg_scale=2.0), spec)
    macs = plan_macs(plan, (1, 16, 16))
    per_stage = [flexdit_macs_per_call(base.config, FULL, s) for s in (5, 4, 4, 3)]
    assert macs["macs_per_image"] == 2 * sum(n * m for n, m in zip((3, 2, 3, 2), per_stage))
    assert plan.details["gmacs_per_call_by_stage"] == pytest.approx([m / 1e9 for m in per_stage])


# ------------------------------------------------------------------ budgets, options, checkpoints


def test_budget_vocabulary():
    assert METHOD.parse_budget("0.61-0.86") == FlexBudget(0.61, 0.86)
    assert METHOD.budget_label(METHOD.parse_budget("0.9-0.96")) == "0.90-0.96"
    assert METHOD.budget_label((0.5, 0.5)) == "0.50-0.50"
    for bad, message in [("0.86-0.61", "r_min <= r_max"), ("0-0.5", "0 < r_min"), ("0.5-1.2", "<= 1"),
                         ("0.5", "RMIN-RMAX"), ("a-b", "RMIN-RMAX"), ("0.615-0.86", "two decimals")]:
        with pytest.raises(InputError, match=message):
            METHOD.parse_budget(bad)
    settings = SamplingSettings()
    assert METHOD.nominal_compute_ratio("0.60-0.90", settings) == pytest.approx(0.25)
    assert METHOD.budget_label(METHOD.full_budget(settings)) == "0.01-0.01"


def test_options_validation():
    assert METHOD.parse_options(None).stages == 4
    layout = {"pf": 1, "sdtms": 1, "sparse": 1, "dense": 1, "top": 1}
    assert METHOD.parse_options({"layout": layout}).layout == layout
    for bad, message in [({"nope": 1}, "unknown flexdit options"), ({"layout": {"pf": 1}}, "layout must be"),
                         ({"layout": dict(layout, pf=-1)}, ">= 0"), ({"stages": 0}, "stages"),
                         ({"pf_mode": "attention"}, "pf_mode"), ({"pos_reinject": "yes"}, "true or false")]:
        with pytest.raises(InputError, match=message):
            METHOD.parse_options(bad)


def test_load_model_validates_and_round_trips(tmp_path):
    spec = ModelSpec("dit-micro-2", 16, in_channels=1, num_classes=10)
    base = randomize_(DiT(dit_config("dit-micro-2", 16, in_channels=1, num_classes=10)))
    model = METHOD.convert(base, {"pos_reinject": True})
    path = tmp_path / "flexdit.pt"
    torch.save(METHOD.state_to_save(model), path)
    loaded = METHOD.load_model(path, spec, {"pos_reinject": True})
    x, t, y = inputs()
    torch.testing.assert_close(loaded(x, t, y, side=3), model(x, t, y, side=3))
    with pytest.raises(CheckpointError, match="missing keys"):
        METHOD.load_model(base.state_dict(), spec, {})


def test_finetune_is_resumable_and_logs_stages(tmp_path):
    from ditpareto.data import ImageSet
    from ditpareto.train import TrainConfig

    base = randomize_(DiT(dit_config("dit-micro-2", 16, in_channels=1, num_classes=10)))
    g = torch.Generator().manual_seed(0)
    data = ImageSet(torch.randint(0, 256, (32, 16, 16, 1), generator=g, dtype=torch.uint8).numpy(),
                    torch.randint(0, 10, (32,), generator=g).numpy())
    paths = (tmp_path / "state.pt", tmp_path / "loss.csv")

    def run(steps):
        model = METHOD.convert(base, {})
        train = TrainConfig(steps=steps, batch_size=8, lr=1e-3, ema_decay=0.5, checkpoint_every=2, log_every=1)
        return METHOD.finetune(model, data, METHOD.parse_options({}), METHOD.parse_budget("0.61-0.86"), train, *paths)

    run(2)
    resumed = run(4)
    rows = list(csv.DictReader(paths[1].open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4] and "loss_stage3" in rows[0]
    assert torch.equal(resumed.pos_embed, base.pos_embed)
    assert not torch.equal(resumed.sdtms[0].merge_sparse.weight, torch.zeros(32, 32))
    with pytest.raises(InputError, match="once per budget"):
        METHOD.finetune(METHOD.convert(base, {}), data, {}, None, TrainConfig(steps=1), *paths)


def test_cli_flops_and_bad_budget():
    model = ["--model", "dit-micro-2", "--image-size", "16", "--in-channels", "1", "--num-classes", "10"]
    result = subprocess.run([sys.executable, "-m", "ditpareto", "flops", "--method", "flexdit", *model,
                             "--budget", "0.61-0.86", "--steps", "10", "--cfg-scale", "2"],
                            capture_output=True, text=True, check=True)
    out = json.loads(result.stdout)
    config = dit_config("dit-micro-2", 16, in_channels=1, num_classes=10)
    per_stage = [flexdit_macs_per_call(config, default_layout(2), s) for s in (5, 4, 4, 3)]
    assert out["gmacs_per_image"] * 1e9 == pytest.approx(2 * sum(n * m for n, m in zip((3, 2, 3, 2), per_stage)))
    bad = subprocess.run([sys.executable, "-m", "ditpareto", "flops", "--method", "flexdit", *model,
                          "--budget", "0.9-0.5"], capture_output=True, text=True)
    assert bad.returncode == 2 and "error: flexdit budget '0.9-0.5'" in bad.stderr
