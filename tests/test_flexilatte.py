"""FlexiDiT on video (models/flexilatte): function-preserving conversion of a Latte model, the spatio-temporal weak
patches (2, p, p) and (1, 2p, 2p), and the PI-style spread of the spatial kernel over two frames."""

from __future__ import annotations

import pytest
import torch

from ditpareto.errors import InputError


def _trainable_random(module, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:  # the sin-cos embeddings stay
                p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    return module


def _base(temporal_position="temporal", num_classes=10):
    from ditpareto.archs import latte_config
    from ditpareto.models.latte import Latte

    config = latte_config("latte-micro-2", 16, in_channels=1, num_classes=num_classes,
                          temporal_position=temporal_position)
    return _trainable_random(Latte(config), 1).eval()


INPUTS = (torch.randn(2, 16, 1, 16, 16, generator=torch.Generator().manual_seed(3)), torch.tensor([5, 700]),
          torch.tensor([1, 2]))


OPTIONS = [{}, {"tokenizer": "separate"}, {"variant": "lora", "tokenizer": "separate"},
           {"pos_coords": "centre", "ln_affine": "final"}]


@pytest.mark.parametrize("weak, options, temporal_position",
                         [((2, 2), o, "temporal") for o in OPTIONS] + [((1, 4), {}, "temporal"), ((1, 4), {}, "stream")])
def test_a_converted_latte_equals_its_base_at_the_base_patch(weak, options, temporal_position):
    from ditpareto.models.flexilatte import convert_latte

    base = _base(temporal_position)
    model = convert_latte(base, weak, **options).eval()
    x, t, y = INPUTS
    with torch.no_grad():
        expected = base(x, t, y)
        torch.testing.assert_close(model(x, t, y), expected, rtol=0, atol=1e-5)
        out = model(x, t, y, patch_size=weak)
    assert out.shape == expected.shape and torch.isfinite(out).all()
    assert (out - expected).abs().mean() > 1e-3  # the weak path is another function


def test_the_two_frame_patch_spreads_the_spatial_kernel_over_both_frames():
    """On a static clip an inflated base (zero-gated temporal blocks) gives the same output at (2, p, p) as at
    (1, p, p): each token averages two equal frames with half the kernel each, and the head writes both."""
    from ditpareto.archs import dit_config, latte_config
    from ditpareto.models.dit import DiT
    from ditpareto.models.flexilatte import convert_latte
    from ditpareto.models.latte import Latte, inflate_image_dit

    image = _trainable_random(DiT(dit_config("dit-micro-2", 16, in_channels=1, num_classes=10)), 2)
    config = latte_config("latte-micro-2", 16, in_channels=1, num_classes=10)
    video = Latte(config)
    video.load_state_dict(inflate_image_dit(image.state_dict(), config))
    model = convert_latte(video.eval(), (2, 2)).eval()
    x, t, y = INPUTS
    static = x[:, :1].expand(-1, 16, -1, -1, -1).contiguous()
    with torch.no_grad():
        torch.testing.assert_close(model(static, t, y, patch_size=(2, 2)), model(static, t, y), rtol=0, atol=1e-5)
        assert (model(x, t, y, patch_size=(2, 2)) - model(x, t, y)).abs().max() > 1e-3  # moving clips differ


def test_weak_patches_are_counted_and_bad_ones_refused():
    from ditpareto.models.flexilatte import FlexiLatteConfig, convert_latte
    from ditpareto.flops import count_macs

    base = _base()
    x, t, y = INPUTS
    model = convert_latte(base, (2, 2)).eval()
    full = count_macs(lambda: model(x[:1], t[:1], y[:1]))
    weak = count_macs(lambda: model(x[:1], t[:1], y[:1], patch_size=(2, 2)))
    assert 0.35 < weak / full < 0.55  # half the tokens; attention shrinks faster
    with pytest.raises(InputError, match=r"is \(2, 2, 2\) or \(1, 4, 4\)"):
        FlexiLatteConfig(base.config, (2, 4))
    with pytest.raises(ValueError, match="not one of this model's"):
        model(x, t, y, patch_size=(1, 4))


@pytest.mark.parametrize("options", [{}, {"weak_patch_size": 4}, {"variant": "lora"}])
def test_flexidit_samples_a_latte_base_with_the_counted_macs_of_its_closed_form(options):
    """The method on a Latte base: (2, p, p) by default, (1, s, s) for weak_patch_size s; executed MACs of a
    trajectory (plain, guided, weak-model guidance) equal the closed form."""
    from ditpareto.methods import get_method
    from ditpareto.sampling import counted_macs
    from ditpareto.study import ModelSpec, SamplingSettings

    method = get_method("flexidit")
    parsed = method.parse_options(options)
    model = method.convert(_base(), parsed)
    spec = ModelSpec("latte-micro-2", 16, 1, 10)
    for budget, cfg in (("0.50", 1.0), ("0.50", 2.0), ("0.50-1.00", 2.0)):
        plan = method.plan(model, budget, SamplingSettings(steps=4, cfg_scale=cfg), spec, parsed)
        counted = counted_macs(plan, (16, 1, 16, 16))["macs_per_image"]
        assert counted == pytest.approx(plan.details["analytic_gmacs_per_image"] * 1e9, rel=1e-9)
    assert plan.details["weak_patch_size"] == ((1, 4) if options.get("weak_patch_size") else (2, 2))
