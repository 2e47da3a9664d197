import json

import numpy as np
import pytest
import torch

from ditpareto.diffusion import GaussianDiffusion, sample_generators, sample_loop
from ditpareto.respacing import space_timesteps
from ditpareto.errors import InputError
from ditpareto.methods import METHODS, SamplingSettings, get_method
from ditpareto.sampling import generate, initial_state, to_uint8


def _plan(model, spec, steps=3, sampler="ddim", cfg=2.0):
    settings = SamplingSettings(sampler=sampler, steps=steps, cfg_scale=cfg)
    return METHODS["dit"].plan(model, str(steps), settings, spec), settings


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpmpp-2m"])
def test_samples_do_not_depend_on_batch_size(tiny_model, tiny_spec, sampler):
    plan, settings = _plan(tiny_model, tiny_spec, sampler=sampler)
    a, _ = generate(plan, tiny_spec, settings, seed=3, indices=range(5), batch_size=5, progress=False)
    b, _ = generate(plan, tiny_spec, settings, seed=3, indices=range(5), batch_size=2, progress=False)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    # a shard of the index range reproduces the same samples
    c, _ = generate(plan, tiny_spec, settings, seed=3, indices=range(2, 5), batch_size=3, progress=False)
    np.testing.assert_array_equal(a.images[2:], c.images)
    d, _ = generate(plan, tiny_spec, settings, seed=4, indices=range(5), batch_size=5, progress=False)
    assert not np.array_equal(a.images, d.images)


def test_labels_and_noise_are_shared_across_budgets(tiny_spec):
    _, y1, z1 = initial_state(tiny_spec, 0, range(8))
    _, y2, z2 = initial_state(tiny_spec, 0, range(8))
    assert torch.equal(y1, y2) and torch.equal(z1, z2)
    assert y1.min() >= 0 and y1.max() < tiny_spec.num_classes


def test_fewer_steps_change_samples(tiny_model, tiny_spec):
    images = []
    for steps in (4, 2):
        plan, settings = _plan(tiny_model, tiny_spec, steps=steps)
        images.append(generate(plan, tiny_spec, settings, 0, range(4), 4, progress=False)[0].images)
    assert not np.array_equal(images[0], images[1])


def test_to_uint8_matches_dit_rounding():
    x = torch.tensor([-1.0, -0.99, 0.0, 0.5, 1.0, 1.2]).view(1, 1, 1, 6)
    assert to_uint8(x).ravel().tolist() == [0, 1, 128, 191, 255, 255]


def test_dit_budget_validation():
    dit = get_method("dit")
    assert dit.parse_budget("10") == (10, False) and dit.parse_budget("10i") == (10, True)
    assert dit.budget_label(dit.parse_budget("10i")) == "10i"
    for bad in ["0", "1001", "2.5", "ten", "-3", "i", "10ii", "0i"]:
        with pytest.raises(InputError):
            dit.parse_budget(bad)
    with pytest.raises(InputError, match="unknown method 'flexo'"):
        get_method("flexo")


def test_ddim_loop_is_deterministic_and_respaced():
    diffusion = GaussianDiffusion.respaced("ddim", 5)
    assert diffusion.timestep_map.tolist() == space_timesteps(1000, "ddim", 5) == [0, 200, 400, 600, 800]
    seen = []

    def denoise(x, step, t):
        seen.append(int(t[0]))
        return 0.1 * x

    noise = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    out1 = sample_loop(diffusion, denoise, noise, sample_generators(0, [0, 1]), "ddim")
    out2 = sample_loop(diffusion, denoise, noise, sample_generators(0, [0, 1]), "ddim")
    assert seen[:5] == [800, 600, 400, 200, 0]
    assert torch.equal(out1, out2)


def test_a_budget_names_its_sampler_and_the_sample_job_runs_it(tmp_path, tiny_model, tiny_spec):
    """The sampler axis: "4+dpmpp-2m" samples the same model at 4 steps with DPM-Solver++(2M) (same labels, noise and
    MACs, other images); its record says so; an unknown sampler fails with one line."""
    from ditpareto.jobs.sampling import sample
    from ditpareto.spec import split_sampler

    checkpoint = tmp_path / "base.pt"
    torch.save(tiny_model.state_dict(), checkpoint)
    settings = SamplingSettings(sampler="ddim", steps=4, cfg_scale=1.5)
    records = {}
    for budget in ("4", "4+dpmpp-2m"):
        out, record = tmp_path / f"{budget}.npz", tmp_path / f"{budget}.json"
        sample(method=METHODS["dit"], options=METHODS["dit"].parse_options({}), spec=tiny_spec, settings=settings,
               budget=budget, checkpoint=str(checkpoint), seed=0, out=str(out), record=str(record), num_samples=4,
               batch_size=4, ft="0.00")
        with np.load(out) as data:
            records[budget] = (json.loads(record.read_text()), data["images"], data["labels"])
    (ddim, ddim_images, ddim_labels), (dpm, dpm_images, dpm_labels) = records["4"], records["4+dpmpp-2m"]
    assert (ddim["budget"], ddim["params"]["sampler"]) == ("4", "ddim")
    assert (dpm["budget"], dpm["params"]["sampler"]) == ("4+dpmpp-2m", "dpmpp-2m")
    assert dpm["gmacs_per_image"] == ddim["gmacs_per_image"] and dpm["steps"] == 4
    np.testing.assert_array_equal(ddim_labels, dpm_labels)
    assert not np.array_equal(ddim_images, dpm_images)
    with pytest.raises(InputError, match="names sampler 'euler'"):
        split_sampler("4+euler")
