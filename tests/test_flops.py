import json
import subprocess
import sys

import pytest
import torch

from ditpareto.flops import count_macs, plan_macs
from ditpareto.spec.dit import dit_macs_per_call
from ditpareto.methods import METHODS, SamplingSettings
from ditpareto.models import build_dit, dit_config


@pytest.mark.parametrize("name, size, channels", [("dit-micro-2", 16, 1), ("dit-tiny-2", 16, 1), ("dit-s-2", 64, 4)])
def test_counter_matches_closed_form(name, size, channels):
    model = build_dit(name, size, in_channels=channels).eval()
    c = model.config
    x = torch.randn(1, channels, c.input_size, c.input_size)
    with torch.no_grad():
        counted = count_macs(lambda: model(x, torch.tensor([10]), torch.tensor([1])))
    assert counted == dit_macs_per_call(c)


def test_attention_is_counted_on_cpu():
    # Without the CPU SDPA mapping the counter silently drops attention matmuls.
    c = dit_config("dit-s-2", 256)
    without_attention = dit_macs_per_call(c) - c.depth * 2 * c.num_tokens**2 * c.hidden_size
    model = build_dit("dit-s-2", 256).eval()
    x = torch.randn(1, 4, 32, 32)
    with torch.no_grad():
        counted = count_macs(lambda: model(x, torch.tensor([1]), torch.tensor([1])))
    assert counted > without_attention


def test_plan_macs_counts_cfg_and_steps(tiny_model, tiny_spec):
    per_call = dit_macs_per_call(tiny_model.config)
    for cfg, calls in [(2.0, 2), (1.0, 1)]:
        settings = SamplingSettings(steps=10, cfg_scale=cfg)
        plan = METHODS["dit"].plan(tiny_model, "4", settings, tiny_spec)
        macs = plan_macs(plan, (1, 16, 16))
        assert macs["macs_per_image"] == 4 * calls * per_call
        assert macs["macs_per_call"] == per_call
        assert macs["network_calls_per_image"] == 4 * calls  # CFG 1 (unguided): one network call a step


def test_guidance_interval_guides_only_the_steps_inside_it(tiny_model, tiny_spec):
    # sigma of the 10 DDIM steps, noisiest first: 60.8 25.7 12.0 6.17 3.44 2.04 1.24 0.72 0.34 0.01
    per_call = dit_macs_per_call(tiny_model.config)
    method = METHODS["dit"]
    for options, guided in [({}, [4, 5, 6, 7, 8]), ({"guidance_interval": [1.0, 13.0]}, [2, 3, 4, 5, 6])]:
        plan = method.plan(tiny_model, "10i", SamplingSettings(steps=10, cfg_scale=2.0), tiny_spec,
                           method.parse_options(options))
        assert plan.details["guided_steps"] == guided
        macs = plan_macs(plan, (1, 16, 16))
        assert macs["network_calls_per_image"] == 15 and macs["macs_per_image"] == 15 * per_call
    # outside the interval a step is the conditional call alone; inside, the guided one
    plan = method.plan(tiny_model, "10i", SamplingSettings(steps=10, cfg_scale=3.0), tiny_spec)
    full = method.plan(tiny_model, "10", SamplingSettings(steps=10, cfg_scale=3.0), tiny_spec)
    x, y = torch.randn(2, 1, 16, 16), torch.tensor([1, 2])
    t = torch.tensor([500, 500])
    with torch.no_grad():
        assert torch.equal(plan.denoise(x, 0, t, y), tiny_model(x, t, y))
        assert torch.equal(plan.denoise(x, 5, t, y), full.denoise(x, 5, t, y))
        assert not torch.allclose(plan.denoise(x, 0, t, y), full.denoise(x, 0, t, y))


@pytest.mark.parametrize("options", [{"guidance_interval": [3.0, 1.0]}, {"guidance_interval": [1.0]},
                                     {"guidance_interval": "wide"}, {"interval": [0.3, 5.0]}])
def test_bad_guidance_interval_is_refused(options):
    from ditpareto.errors import InputError

    with pytest.raises(InputError, match="guidance_interval|unknown dit options"):
        METHODS["dit"].parse_options(options)


@pytest.mark.parametrize("size, expected", [(256, 118.6), (512, 524.6)])
def test_cli_dit_xl_2_gmacs(size, expected):
    result = subprocess.run(
        [sys.executable, "-m", "ditpareto", "flops", "--method", "dit", "--model", "dit-xl-2", "--image-size",
         str(size), "--sampler", "ddpm", "--steps", "1", "--cfg-scale", "1"], capture_output=True, text=True, check=True)
    out = json.loads(result.stdout)
    assert abs(out["gmacs_per_call"] / expected - 1) < 0.005
    assert out["gmacs_per_image"] == pytest.approx(out["gmacs_per_call"])
