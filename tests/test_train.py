import torch

from ditpareto.data import prepare_digits
from ditpareto.models import build_dit
from ditpareto.train import TrainConfig, run_training


def _train(tmp_path, steps, state_name="state.pt"):
    data = prepare_digits()["train"]
    torch.manual_seed(123)
    model = build_dit("dit-micro-2", 16, in_channels=1, num_classes=10)
    config = TrainConfig(steps=steps, batch_size=8, checkpoint_every=3, log_every=1, seed=5)
    ema = run_training(model, data.as_model_input()[:64], torch.from_numpy(data.labels[:64]), config,
                       tmp_path / state_name, tmp_path / (state_name + ".csv"))
    return model, ema


def test_interrupted_and_resumed_training_equals_uninterrupted(tmp_path):
    full_model, full_ema = _train(tmp_path / "a", 6)
    _train(tmp_path / "b", 3)  # "interrupted" after 3 steps: its state file holds step 3
    resumed_model, resumed_ema = _train(tmp_path / "b", 6)
    for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(full_ema.state_dict().values(), resumed_ema.state_dict().values()):
        assert torch.equal(a, b)
    rows = (tmp_path / "b" / "state.pt.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and len(rows) == 1 + 6


def test_training_reduces_loss(tmp_path):
    _train(tmp_path, 40)
    lines = (tmp_path / "state.pt.csv").read_text().splitlines()[1:]
    losses = [float(line.split(",")[1]) for line in lines]
    assert sum(losses[-10:]) < sum(losses[:10])
