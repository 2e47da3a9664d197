import pytest
import torch

from ditpareto.data import prepare_digits
from ditpareto.models import build_dit
from ditpareto.train import TrainConfig, resume_step, run_training


def _train(tmp_path, steps, state_name="state.pt", lr=1e-3, run_id=""):
    data = prepare_digits()["train"]
    torch.manual_seed(123)
    model = build_dit("dit-micro-2", 16, in_channels=1, num_classes=10)
    config = TrainConfig(steps=steps, batch_size=8, checkpoint_every=3, log_every=1, seed=5, lr=lr, run_id=run_id)
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


def _same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_state_of_other_settings_is_set_aside_not_resumed(tmp_path):
    fresh_model, _ = _train(tmp_path / "a", 4, lr=3e-4)
    _train(tmp_path / "b", 4, lr=1e-3)  # a finished run with another learning rate
    assert resume_step(tmp_path / "b" / "state.pt", TrainConfig(steps=4, batch_size=8, checkpoint_every=3,
                                                                  log_every=1, seed=5, lr=3e-4)) is None
    model, _ = _train(tmp_path / "b", 4, lr=3e-4)
    assert _same_weights(model, fresh_model)
    assert (tmp_path / "b" / "state.pt.stale").exists()  # the old state is kept, not deleted
    assert len((tmp_path / "b" / "state.pt.csv").read_text().splitlines()) == 1 + 4


def test_state_of_other_run_id_or_more_steps_is_not_resumed(tmp_path):
    fresh_model, _ = _train(tmp_path / "a", 3, run_id="dydit-0.50")
    _train(tmp_path / "b", 3, run_id="dydit-0.70")
    assert _same_weights(_train(tmp_path / "b", 3, run_id="dydit-0.50")[0], fresh_model)
    _train(tmp_path / "c", 6, run_id="dydit-0.50")  # trained further than asked: cannot be un-trained
    assert _same_weights(_train(tmp_path / "c", 3, run_id="dydit-0.50")[0], fresh_model)


def test_resume_drops_loss_rows_after_the_checkpoint(tmp_path):
    _train(tmp_path, 3)
    with open(tmp_path / "state.loss.csv", "a") as f:  # the running curve beside the state
        f.write("4,9.9,9.9,9.9,1.0\n")  # written after the step-3 checkpoint, then the job was killed
    _train(tmp_path, 5)
    steps = [int(line.split(",")[0]) for line in (tmp_path / "state.pt.csv").read_text().splitlines()[1:]]
    assert steps == [1, 2, 3, 4, 5]


def test_sigterm_saves_state_and_a_rerun_ends_with_the_uninterrupted_weights(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from ditpareto.data import digits_draw, save_draw

    data = tmp_path / "digits.npz"
    save_draw(digits_draw("train"), data)

    def pretrain(name):
        return [sys.executable, "-m", "ditpareto", "--threads", "1", "pretrain", "--model", "dit-micro-2",
                "--image-size", "16", "--in-channels", "1", "--num-classes", "10", "--data", str(data),
                "--steps", "400", "--batch-size", "8", "--state", str(tmp_path / f"{name}.state.pt"),
                "--log-csv", str(tmp_path / f"{name}.csv"), "--out", str(tmp_path / f"{name}.pt")]

    subprocess.run(pretrain("full"), check=True, capture_output=True)
    job = subprocess.Popen(pretrain("cut"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    csv_path = tmp_path / "cut.state.loss.csv"  # the running curve beside the state
    while job.poll() is None and (not csv_path.exists() or len(csv_path.read_text().splitlines()) < 2):
        time.sleep(0.05)  # until the first loss row (step 50): training is under way
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=120)
    assert job.returncode == 128 + signal.SIGTERM, err
    assert "state saved at step" in err and not (tmp_path / "cut.pt").exists()
    saved = torch.load(tmp_path / "cut.state.pt", weights_only=True)["step"]
    assert 50 <= saved < 400
    subprocess.run(pretrain("cut"), check=True, capture_output=True)  # the rerun resumes
    full = torch.load(tmp_path / "full.pt", weights_only=True)
    resumed = torch.load(tmp_path / "cut.pt", weights_only=True)
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    steps = [int(line.split(",")[0]) for line in (tmp_path / "cut.csv").read_text().splitlines()[1:]]
    assert steps == list(range(50, 401, 50))  # the running curve, copied whole to --log-csv
    assert not csv_path.exists() and (tmp_path / "cut.state.pt.done").exists()  # the finished run is retired


def test_sigkill_leaves_no_partial_output_and_a_rerun_ends_with_the_uninterrupted_weights(tmp_path):
    import subprocess
    import sys
    import time

    from ditpareto.cli import main
    from ditpareto.data import digits_draw, save_draw

    data, checkpoint = tmp_path / "digits.npz", tmp_path / "converted.pt"
    save_draw(digits_draw("train"), data)
    torch.manual_seed(0)
    torch.save(build_dit("dit-micro-2", 16, in_channels=1, num_classes=10).state_dict(), checkpoint)

    def finetune(name):
        return ["--threads", "1", "finetune", "--method", "dit-ft", "--checkpoint", str(checkpoint),
                "--data", str(data), "--model", "dit-micro-2", "--image-size", "16", "--in-channels", "1",
                "--num-classes", "10", "--steps", "200", "--batch-size", "8", "--checkpoint-every", "10",
                "--state", str(tmp_path / f"{name}.state.pt"), "--log-csv", str(tmp_path / f"{name}.csv"),
                "--out", str(tmp_path / f"{name}.pt")]

    def in_process(args):  # as `python -m ditpareto ARGS`, without another interpreter's start-up
        threads = torch.get_num_threads()
        try:
            main(args)
        finally:
            torch.set_num_threads(threads)

    in_process(finetune("full"))
    job = subprocess.Popen([sys.executable, "-m", "ditpareto", *finetune("cut")], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    state = tmp_path / "cut.state.pt"
    while job.poll() is None and not state.exists():
        time.sleep(0.02)  # until the first periodic checkpoint (step 10)
    job.kill()  # SIGKILL: no handler runs
    job.wait()
    assert job.returncode == -9
    assert not (tmp_path / "cut.pt").exists() and not (tmp_path / "cut.pt.tmp").exists()
    saved = torch.load(state, weights_only=True)["step"]  # the state on disk is whole
    assert 10 <= saved < 200 and saved % 10 == 0
    in_process(finetune("cut"))  # the rerun resumes
    full = torch.load(tmp_path / "full.pt", weights_only=True)
    resumed = torch.load(tmp_path / "cut.pt", weights_only=True)
    assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full)


def test_cosine_schedule_with_warmup():
    from ditpareto.train import TrainConfig

    config = TrainConfig(steps=100, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    factors = [config.lr_factor(i) for i in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)  # linear warm-up
    assert factors[10] == pytest.approx(1.0) and all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert factors[-1] == pytest.approx(0.1, abs=0.01)  # down to min_lr_ratio at the last step
    assert TrainConfig(steps=100).lr_factor(57) == 1.0  # constant, no warm-up: the old behaviour
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="linear")


def test_snapshots_and_the_convergence_command(tmp_path):
    """Pretraining keeps EMA snapshots; `convergence` scores each with the same seeds (paired) and writes the curve."""
    import pandas as pd

    from ditpareto.cli import main
    from ditpareto.data import ImageSet, save_draw
    from ditpareto.glyph_extractor import save_glyph_cnn, train_glyph_cnn
    from ditpareto.glyphs import draw_glyphs

    train, reference = draw_glyphs("train", 64), draw_glyphs("reference", 64)
    save_draw(ImageSet(train.images, train.labels), tmp_path / "train.npz")
    save_draw(ImageSet(reference.images, reference.labels), tmp_path / "reference.npz")
    extractor, _ = train_glyph_cnn(ImageSet(train.images, train.labels), train.attributes,
                                   ImageSet(reference.images, reference.labels), reference.attributes, steps=5)
    save_glyph_cnn(extractor, tmp_path / "cnn.pt")
    model = ["--model", "dit-micro-2", "--image-size", "16", "--in-channels", "1", "--num-classes", "10"]
    main(["pretrain", *model, "--data", str(tmp_path / "train.npz"), "--steps", "6", "--batch-size", "8",
                 "--warmup-steps", "2", "--schedule", "cosine", "--snapshot-every", "3",
                 "--state", str(tmp_path / "run/state.pt"), "--log-csv", str(tmp_path / "loss.csv"),
                 "--out", str(tmp_path / "base.pt")])
    snapshots = sorted((tmp_path / "run/snapshots").glob("ema-step*.pt"))
    assert [p.name for p in snapshots] == ["ema-step0000003.pt", "ema-step0000006.pt"]
    final = torch.load(tmp_path / "base.pt", weights_only=True)
    last = torch.load(snapshots[-1], weights_only=True)
    assert all(torch.equal(final[k], last[k]) for k in final)  # the last snapshot is the shipped EMA
    out = tmp_path / "convergence.csv"
    main(["convergence", "--snapshots", *map(str, snapshots), *model, "--steps", "2", "--cfg-scale", "2.0",
                 "--num-samples", "16", "--batch-size", "8", "--reference", str(tmp_path / "reference.npz"),
                 "--extractor-weights", str(tmp_path / "cnn.pt"), "--kid-subset-size", "8",
                 "--out", str(out)])
    table = pd.read_csv(out)
    assert table["step"].tolist() == [3, 6] and table["fid"].notna().all()
    assert table["fid_change_from_previous"].iloc[1] == pytest.approx(table["fid"].iloc[1] - table["fid"].iloc[0])


def test_a_loss_that_is_not_finite_stops_training_before_it_touches_the_weights(tmp_path):
    """A NaN loss at step 4 stops the run with TrainingDiverged: the weights are those after step 3, the state
    saved at step 3 stays, and nothing is written as the final result."""
    import math

    from ditpareto.errors import TrainingDiverged
    from ditpareto.train import diffusion_loss

    calls = {"n": 0}

    def nan_at_four(model, x0, y, diffusion):
        calls["n"] += 1
        terms = diffusion_loss(model, x0, y, diffusion)
        return {**terms, "loss": terms["loss"] * math.nan} if calls["n"] == 4 else terms

    data = prepare_digits()["train"]
    torch.manual_seed(123)
    model = build_dit("dit-micro-2", 16, in_channels=1, num_classes=10)
    config = TrainConfig(steps=6, batch_size=8, checkpoint_every=3, log_every=1, seed=5, lr=1e-3)
    with pytest.raises(TrainingDiverged, match="not finite at step 4 of 6"):
        run_training(model, data.as_model_input()[:64], torch.from_numpy(data.labels[:64]), config,
                     tmp_path / "state.pt", tmp_path / "loss.csv", loss_fn=nan_at_four)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert resume_step(tmp_path / "state.pt", config) == 3 and not (tmp_path / "loss.csv").exists()


def test_a_finished_run_keeps_only_its_last_state(tmp_path):
    from ditpareto.train import discard_state

    state = tmp_path / "state.pt"
    for name in ("state.pt", "state.pt.stale", "state.pt.damaged", "state.loss.csv"):
        (tmp_path / name).write_bytes(b"x")
    discard_state(state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt.done"]
