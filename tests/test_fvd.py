"""The paper FVD path (StyleGAN-V's fvd2048_16f): the I3D TorchScript detector from a local file, its call, and the
real-clip protocol; with a random-weight stand-in in the official format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ditpareto.errors import InputError
from paper_assets import i3d_torchscript

# the stand-in is written as TorchScript, the official detector's format (deprecated in torch >= 2.10)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def test_the_i3d_detector_loads_checks_its_call_and_gives_400_d_features(tmp_path):
    from ditpareto.fvd import I3D_FEATURES, i3d_features, load_i3d

    detector = load_i3d(i3d_torchscript(tmp_path / "i3d.pt"))
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, size=(5, 16, 32, 32, 1), dtype=np.uint8)
    features = i3d_features(detector, grey, batch_size=2)
    assert features.shape == (5, I3D_FEATURES) and features.dtype == np.float64 and np.isfinite(features).all()
    rgb = np.repeat(grey, 3, axis=-1)  # grey is fed as RGB
    np.testing.assert_allclose(i3d_features(detector, rgb, batch_size=5), features, rtol=1e-5, atol=1e-5)
    assert not np.allclose(features[0], features[1])


def test_a_wrong_detector_file_is_named(tmp_path):
    from ditpareto.fvd import load_i3d

    with pytest.raises(InputError, match="does not exist"):
        load_i3d(tmp_path / "missing.pt")
    torch.save({"weight": torch.zeros(3)}, tmp_path / "state.pt")
    with pytest.raises(InputError, match="not a TorchScript archive"):
        load_i3d(tmp_path / "state.pt")

    class Logits(torch.nn.Module):
        def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                    return_features: bool = False) -> torch.Tensor:
            return x.float().mean(dim=(2, 3, 4))  # (N, 3): not the 400-d features

    torch.jit.script(Logits()).save(str(tmp_path / "small.pt"))
    with pytest.raises(InputError, match=r"expected finite \(1, 400\)"):
        load_i3d(tmp_path / "small.pt")


def test_real_clips_follow_the_stylegan_v_protocol():
    """16 frames at stride 3 inside each video, short videos discarded, videos cycled, seeded starts."""
    from ditpareto.fvd import real_clip_windows

    lengths = [100, 20, 46, 47]  # one clip spans 15 * 3 + 1 = 46 frames: 20 is too short, 46 fits exactly
    windows = real_clip_windows(lengths, count=7, seed=1)
    assert [w.video for w in windows] == [0, 2, 3, 0, 2, 3, 0]
    for w in windows:
        assert w.indices[0] >= 0 and w.indices[-1] < lengths[w.video] and np.all(np.diff(w.indices) == 3)
    assert windows == real_clip_windows(lengths, count=7, seed=1)
    assert windows != real_clip_windows(lengths, count=7, seed=2)
    with pytest.raises(InputError, match="no video holds 16 frames"):
        real_clip_windows([10, 30])
