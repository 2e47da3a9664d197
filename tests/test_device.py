"""Every method on another device and in bf16, checked on a CPU: no tensor left behind, no dtype mixing.

The second device is simulated (``simulated_device``): real CPU data behind tensors that say ``meta``, with every op
checked for CPU operands next to device ones, as CUDA checks them. Plans are built before and after the model
moves (the DyDiT plan built before ``sample`` moved the model crashed on a GPU in ``gather_widths``).
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch
from conftest import randomize_
from simulated_device import DeviceMixError, OnDevice, simulated_device

from ditpareto.errors import InputError
from ditpareto.latency import measure, prepare
from ditpareto.methods import METHODS, SamplingSettings
from ditpareto.runtime import precision_scope, resolve_device
from ditpareto.sampling import counted_macs, generate

# Every kind of plan: step ladders, DyDiT sliced and with routers bypassed, FlexDiT sparse and full, FlexiDiT with
# both branches weak and with weak-model guidance (cond weak fewer steps than the guidance branch).
PLANS = [("dit", "3"), ("dit-ft", "3"), ("dydit", "0.50"), ("dydit", "full@0.50"), ("flexdit", "0.61-0.86"),
         ("flexdit", "full@0.61-0.86"), ("flexidit", "0.50"), ("flexidit", "0.30-1.00"), ("tome", "0.50"),
         ("fora", "2"), ("l2c", "0.50")]
# and the baselines: token merging, a fixed cache, a learned cache (its router for the 3-step grid)
SETTINGS = SamplingSettings(steps=3, cfg_scale=2.0)
OPTIONS = {"dydit": {"flops_samples": 4}, "l2c": {"sampler_steps": 3}}


def method_model(name: str, base, seed: int = 1):
    """The method's model from the base, every parameter random (DyDiT's routers then drop heads, groups and
    tokens; a converted model keeps them all and would never gather)."""
    method = METHODS[name]
    model = method.convert(copy.deepcopy(base), method.parse_options(OPTIONS.get(name, {})))
    model.requires_grad_(True)
    randomize_(model, seed=seed, std=0.5 if name == "dydit" else 0.05)
    return model.requires_grad_(False).eval()


def denoise_all_steps(plan, x, y) -> list[torch.Tensor]:
    outs = []
    for step in range(plan.num_steps):
        index = plan.num_steps - 1 - step
        t = plan.diffusion.model_timesteps(torch.full((len(x),), index, dtype=torch.long, device=x.device))
        outs.append(plan.denoise(x, step, t, y))
    return outs


@pytest.fixture(scope="module")
def base():
    from ditpareto.models import build_dit

    torch.manual_seed(0)
    return randomize_(build_dit("dit-micro-2", 16, in_channels=1, num_classes=10)).eval()


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(3)
    return torch.randn(2, 1, 16, 16, generator=g), torch.tensor([1, 7])


@pytest.mark.parametrize("order", ["move then plan", "plan then move"])
@pytest.mark.parametrize("name,budget", PLANS)
def test_every_plan_computes_on_the_models_device(name, budget, order, base, inputs, tiny_spec):
    method = METHODS[name]
    model = method_model(name, base)
    x, y = inputs
    expected = denoise_all_steps(method.plan(copy.deepcopy(model), method.parse_budget(budget), SETTINGS,
                                             tiny_spec, OPTIONS.get(name)), x, y)
    with simulated_device() as device:
        if order == "move then plan":
            model.to(device)
            plan = method.plan(model, method.parse_budget(budget), SETTINGS, tiny_spec, OPTIONS.get(name))
            assert plan.device == device
        else:
            plan = method.plan(model, method.parse_budget(budget), SETTINGS, tiny_spec, OPTIONS.get(name))
            model.to(device)
        outs = denoise_all_steps(plan, x.to(device), y.to(device))
        assert all(isinstance(out, OnDevice) for out in outs)
        outs = [out.cpu() for out in outs]
    for out, ref in zip(outs, expected):  # the same ops; SDPA takes its math path on a non-CPU device
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_the_check_catches_a_cpu_index_next_to_device_weights():
    with simulated_device() as device:
        weight = torch.randn(4, 3).to(device)
        with pytest.raises(DeviceMixError, match="index_select"):
            weight.index_select(0, torch.tensor([0, 2]))
        assert weight.index_select(0, torch.tensor([0, 2], device=device)).shape == (2, 3)
        with pytest.raises(DeviceMixError, match="CPU generator"):
            torch.randn(3, generator=torch.Generator(), device=device)


@pytest.mark.parametrize("name,budget", PLANS[::2])
def test_sampling_flops_and_latency_run_on_the_device(name, budget, base, tiny_spec):
    """The sampler, the FLOPs counter (DyDiT counts on real trajectories) and the latency job, on the device: the
    same images, MACs and recorded states as on the CPU."""
    method = METHODS[name]
    model = method_model(name, base)
    cpu_plan = method.plan(copy.deepcopy(model), method.parse_budget(budget), SETTINGS, tiny_spec, OPTIONS.get(name))
    expected, _ = generate(cpu_plan, tiny_spec, SETTINGS, seed=0, indices=range(3), batch_size=3, progress=False)
    expected_macs = counted_macs(cpu_plan, (1, 16, 16))
    with simulated_device() as device:
        plan = method.plan(model.to(device), method.parse_budget(budget), SETTINGS, tiny_spec, OPTIONS.get(name))
        batch, _ = generate(plan, tiny_spec, SETTINGS, seed=0, indices=range(3), batch_size=3, progress=False)
        macs = counted_macs(plan, (1, 16, 16))
        timed = prepare("point", plan, tiny_spec, SETTINGS, seed=0)
        assert all(isinstance(x, OnDevice) and isinstance(t, OnDevice) for x, t, _ in timed.states)
        rows = measure([timed], batches=[2], rounds=1)
    np.testing.assert_array_equal(batch.images, expected.images)
    assert macs["macs_per_image"] == expected_macs["macs_per_image"] > 0
    assert rows[0]["latency_ms_per_image"] > 0


@pytest.mark.parametrize("name,budget", PLANS)
def test_every_plan_samples_in_bf16(name, budget, base, tiny_spec):
    """bf16 autocast (CPU autocast runs the same casts as CUDA's): finite, close to fp32, and the sampler's state
    stays float32 (DyDiT's sliced MLP once crashed here: a bfloat16 scatter into the float32 residual)."""
    method = METHODS[name]
    model = method_model(name, base)
    plan = method.plan(model, method.parse_budget(budget), SETTINGS, tiny_spec, OPTIONS.get(name))
    reference, _ = generate(plan, tiny_spec, SETTINGS, seed=0, indices=range(4), batch_size=4, progress=False)
    with precision_scope("bf16", "cpu"):
        batch, _ = generate(plan, tiny_spec, SETTINGS, seed=0, indices=range(4), batch_size=4, progress=False)
        x = torch.randn(2, 1, 16, 16)
        out = denoise_all_steps(plan, x, torch.tensor([1, 2]))[0]
    assert out.dtype in (torch.bfloat16, torch.float32) and bool(torch.isfinite(out).all())
    difference = np.abs(batch.images.astype(int) - reference.images.astype(int))
    assert difference.mean() < 8 and np.median(difference) <= 2  # bf16 moves pixels by a few levels, not more


@pytest.mark.parametrize("name", ["dit-ft", "dydit", "flexdit", "flexidit"])
@pytest.mark.parametrize("precision", ["bf16", "device"])
def test_every_fine_tune_trains_on_the_device_and_in_bf16(name, precision, base, monkeypatch, tmp_path):
    """Two steps of each method's own loss through the training loop: on the simulated device (model, EMA, AdamW,
    RNG, loss terms) or in bf16 autocast; finite losses, float32 weights and a returned CPU EMA."""
    import ditpareto.train as train_module
    from ditpareto.data import ImageSet
    from ditpareto.study import TrainConfig

    method = METHODS[name]
    model = method_model(name, base)
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(16, 16, 16, 1, generator=g) * 255).to(torch.uint8).numpy()
    data = ImageSet(images=images, labels=np.arange(16) % 10)
    budget = {"dydit": "0.50", "flexdit": "0.61-0.86"}.get(name)
    train = TrainConfig(steps=2, batch_size=8, lr=1e-4, checkpoint_every=100, log_every=1,
                        precision="bf16" if precision == "bf16" else "fp32")
    scope = simulated_device() if precision == "device" else precision_scope("fp32", "cpu")
    with scope as device:
        if precision == "device":
            monkeypatch.setattr(train_module, "resolve_device", lambda name: device)
        ema = method.finetune(model, data, method.parse_options({}),
                              method.parse_budget(budget) if budget else None, train, tmp_path / "state.pt",
                              tmp_path / "loss.csv")
    weights = list(ema.parameters())
    assert all(not isinstance(p, OnDevice) and p.device.type == "cpu" and p.dtype == torch.float32 for p in weights)
    assert all(bool(torch.isfinite(p).all()) for p in weights)
    losses = [float(line.split(",")[1]) for line in (tmp_path / "loss.csv").read_text().splitlines()[1:]]
    assert len(losses) == 2 and all(np.isfinite(losses))


def test_devices_are_resolved_never_silently(caplog):
    with caplog.at_level(logging.INFO, logger="ditpareto.runtime"):
        assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert "--device auto picked" in caplog.text
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="asks for a GPU, but torch .* sees none"):
            resolve_device("cuda")
    for bad in ("gpu", "meta", "cuda:x"):
        with pytest.raises(InputError):
            resolve_device(bad)


def test_precision_scopes_set_and_restore_the_numerics():
    from ditpareto.runtime import _tf32_flags

    flags = _tf32_flags()
    before = [getattr(obj, name) for obj, name in flags]
    layer = torch.nn.Linear(4, 4)
    for precision, dtype, tf32 in (("fp32", torch.float32, False), ("tf32", torch.float32, True),
                                   ("bf16", torch.bfloat16, True)):
        with precision_scope(precision, "cpu"):
            assert layer(torch.randn(2, 4)).dtype == dtype
            assert [getattr(obj, name) in ("tf32", True) for obj, name in flags] == [tf32] * len(flags)
    assert [getattr(obj, name) for obj, name in flags] == before
    with pytest.raises(InputError, match="precision must be one of"):
        with precision_scope("fp16", "cpu"):
            pass


@pytest.mark.parametrize("name,budget", PLANS[::2])
def test_the_sample_job_runs_on_the_device(name, budget, base, tiny_spec, monkeypatch, tmp_path):
    """The job as the CLI runs it (load, move, plan, count FLOPs, sample, record) on the device: the images of
    the CPU job, and a record that names the device and the precision."""
    import ditpareto.jobs.sampling as sample_job
    from ditpareto.npzfiles import load_samples
    from ditpareto.results import read_record

    method = METHODS[name]
    options = method.parse_options(OPTIONS.get(name, {}))
    checkpoint = tmp_path / "model.pt"
    torch.save(method.state_to_save(method_model(name, base)), checkpoint)
    kwargs = dict(method=method, options=options, spec=tiny_spec, settings=SETTINGS, budget=budget,
                  checkpoint=str(checkpoint), seed=0, num_samples=2, batch_size=2)
    sample_job.sample(**kwargs, out=str(tmp_path / "cpu.npz"), record=str(tmp_path / "cpu.json"), device="cpu")
    with simulated_device() as device:
        monkeypatch.setattr(sample_job, "resolve_device", lambda name: device)
        sample_job.sample(**kwargs, out=str(tmp_path / "dev.npz"), record=str(tmp_path / "dev.json"), device="cuda")
    np.testing.assert_array_equal(load_samples(tmp_path / "dev.npz")["images"],
                                  load_samples(tmp_path / "cpu.npz")["images"])
    record, cpu_record = read_record(tmp_path / "dev.json"), read_record(tmp_path / "cpu.json")
    assert (record["device"], record["device_requested"], record["sampling_precision"]) == ("meta", "cuda", "fp32")
    assert record["machine"]["device"] == "meta" and record["gmacs_per_image"] == cpu_record["gmacs_per_image"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_asking_for_a_gpu_without_one_stops_with_one_line(tmp_path, base, capsys):
    from ditpareto.cli import main

    torch.save(base.state_dict(), tmp_path / "base.pt")
    with pytest.raises(SystemExit) as exit_:
        main(["sample", "--method", "dit", "--budget", "2", "--seed", "0", "--checkpoint", str(tmp_path / "base.pt"),
              "--model", "dit-micro-2", "--image-size", "16", "--in-channels", "1", "--num-classes", "10",
              "--num-samples", "2", "--device", "cuda", "--out", str(tmp_path / "s.npz"),
              "--record", str(tmp_path / "s.json")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: --device cuda asks for a GPU")
    assert not (tmp_path / "s.npz").exists() and not (tmp_path / "s.json").exists()
