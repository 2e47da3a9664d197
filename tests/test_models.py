import re

import pytest
import torch

from ditpareto.errors import InputError
from ditpareto.models import DIT_ARCHS, build_dit, dit_config, load_dit
from ditpareto.models.dit import guided_forward


def test_registry_names_are_path_safe_and_official_shapes():
    for name in DIT_ARCHS:
        assert re.fullmatch(r"[a-z0-9\-]+", name), name
    xl = dit_config("dit-xl-2", 256)
    assert (xl.depth, xl.hidden_size, xl.num_heads, xl.patch_size, xl.input_size) == (28, 1152, 16, 2, 32)
    assert dit_config("dit-s-2", 512).input_size == 64


def test_state_dict_uses_official_names(tiny_model):
    keys = set(tiny_model.state_dict())
    for key in ["x_embedder.proj.weight", "t_embedder.mlp.0.weight", "t_embedder.mlp.2.bias",
                "y_embedder.embedding_table.weight", "pos_embed", "blocks.0.attn.qkv.weight",
                "blocks.1.attn.proj.bias", "blocks.0.mlp.fc1.weight", "blocks.0.mlp.fc2.weight",
                "blocks.0.adaLN_modulation.1.weight", "final_layer.linear.weight",
                "final_layer.adaLN_modulation.1.weight"]:
        assert key in keys
    # null class row for guidance, learned sigma doubles the output channels
    assert tiny_model.y_embedder.embedding_table.weight.shape[0] == 11
    assert tiny_model.final_layer.linear.weight.shape[0] == 2 * 2 * 2


def test_forward_shapes_and_unknown_model(tiny_model):
    x = torch.randn(3, 1, 16, 16)
    out = tiny_model(x, torch.tensor([1, 500, 999]), torch.tensor([0, 3, 10]))
    assert out.shape == (3, 2, 16, 16)
    with pytest.raises(InputError, match="unknown model 'dit-huge-2'"):
        build_dit("dit-huge-2", 16)


def _fake_forward(x, t, y):
    """Output channel c of sample i = (i + 1) * (c + 1): makes the guided channels easy to see."""
    n, c = x.shape[0], 8
    base = torch.arange(1, c + 1, dtype=torch.float32).view(1, c, 1, 1)
    scale = torch.where(y.view(-1, 1, 1, 1) == 1000, 1.0, 3.0)
    return base * scale * torch.ones(n, c, 2, 2)


@pytest.mark.parametrize("mode, guided", [("dit3", 3), ("all", 4)])
def test_forward_with_cfg_guides_dit3_or_all_channels(mode, guided):
    x = torch.zeros(2, 4, 2, 2)
    y = torch.tensor([5, 1000])
    out = guided_forward(_fake_forward, x, torch.zeros(2), y, 4.0, in_channels=4, guidance_channels=mode)
    for c in range(8):
        cond, uncond = 3.0 * (c + 1), 1.0 * (c + 1)
        expected = uncond + 4.0 * (cond - uncond) if c < guided else cond
        assert torch.allclose(out[0, c], torch.full((2, 2), expected)), (mode, c)
    assert torch.equal(out[0, :guided], out[1, :guided])


def test_load_dit_roundtrip(tmp_path, tiny_model):
    path = tmp_path / "ckpt.pt"
    torch.save(tiny_model.state_dict(), path)
    loaded = load_dit(path, "dit-micro-2", 16, in_channels=1, num_classes=10).eval()
    x, t, y = torch.randn(2, 1, 16, 16), torch.tensor([3, 7]), torch.tensor([1, 2])
    assert torch.equal(loaded(x, t, y), tiny_model(x, t, y))
    # a training checkpoint with an "ema" entry loads its EMA weights, as DiT's find_model does
    torch.save({"ema": tiny_model.state_dict(), "opt": {}}, path)
    load_dit(path, "dit-micro-2", 16, in_channels=1, num_classes=10)
