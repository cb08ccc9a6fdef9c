"""Training through the real command line: loss goes down, --resume after a kill reproduces the
uninterrupted run, torchrun with 2 CPU processes, and clear errors for bad starts."""
from __future__ import annotations

import json
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.data import mit67, seven_scenes

CONFIG = """\
model: {{steps: 2, dropout: 0.0}}
data: {{resize: 30, crop: 24, workers: 0, val_fraction: 0.25}}
train: {{epochs: {epochs}, batch_size: 2, lr: 0.001, deterministic: true, lr_schedule: {schedule}}}
"""


def train_cmd(data: Path, out: Path, cfg: Path, *extra: str, fmt: str = "7scenes") -> list[str]:
    return [sys.executable, "-m", "jsla_fast.train", "--data", str(data), "--format", fmt, "--out", str(out),
            "--config", str(cfg), "--threads", "1", *extra]


def metrics(run: Path) -> list[dict]:
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture
def scene(tmp_path, seed):
    return seven_scenes(tmp_path / "data", np.random.default_rng(seed))


def write_config(tmp_path: Path, epochs: int, schedule: str = "cosine") -> Path:
    path = tmp_path / f"cfg{epochs}-{schedule}.yaml"
    path.write_text(CONFIG.format(epochs=epochs, schedule=schedule))
    return path


def test_training_reduces_the_loss_and_writes_its_files(tmp_path, seed):
    # enough frames for batches of 6: BatchNorm on pairs would cancel the colour that shows the pose
    scene = seven_scenes(tmp_path / "data", np.random.default_rng(seed), visible_pose=True, frames=12)
    run = tmp_path / "run"
    cfg = write_config(tmp_path, 10, "constant")  # the optimiser's fit, not the schedule's tail
    # beta 1: every pose here has one orientation, so the fit is about the (visible) position
    args = ("--beta", "1", "--batch-size", "6")
    proc = subprocess.run(train_cmd(scene, run, cfg, *args), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = metrics(run)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 11))
    losses = [float(r["train_loss"]) for r in rows]
    # a few steps fit the (visible) positions: the last epochs' loss is well below the first's.
    # (Held-out error is not asserted here: eval-mode BatchNorm statistics still swing after 30 steps.)
    assert sum(losses[-3:]) / 3 < 0.5 * losses[0], losses
    assert float(rows[0]["tau"]) > float(rows[-1]["tau"]) == pytest.approx(0.1)
    assert {float(r["lr"]) for r in rows} == {0.001}
    for name in ("config.yaml", "train.log", "last.pt", "best.pt"):
        assert (run / name).is_file(), name
    assert "best checkpoint:" in proc.stdout
    # an existing run is never overwritten by accident
    again = subprocess.run(train_cmd(scene, run, cfg, *args), capture_output=True, text=True)
    assert again.returncode == 2 and "already holds a run" in again.stderr


def test_resume_after_a_kill_reproduces_the_uninterrupted_run(tmp_path, scene):
    cfg = write_config(tmp_path, 5)
    full = tmp_path / "full"
    proc = subprocess.run(train_cmd(scene, full, cfg), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    cut = tmp_path / "cut"
    victim = subprocess.Popen(train_cmd(scene, cut, cfg), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and victim.poll() is None:
        if (cut / "metrics.csv").exists() and len(metrics(cut)) >= 2:
            break
        time.sleep(0.02)
    assert victim.poll() is None, "the run finished before it could be interrupted"
    os.killpg(victim.pid, signal.SIGKILL)  # a hard stop somewhere in epoch 3
    victim.wait()
    done = len(metrics(cut))
    assert 2 <= done < 5
    proc = subprocess.run(train_cmd(scene, cut, cfg, "--resume"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming {cut} at epoch {done + 1} of 5" in proc.stderr
    assert float(metrics(cut)[-1]["lr"]) < float(metrics(cut)[0]["lr"])  # the cosine schedule resumed too
    a = torch.load(full / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(cut / "last.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed run differs in {different[:5]}"
    assert [r["train_loss"] for r in metrics(full)] == [r["train_loss"] for r in metrics(cut)]


def test_torchrun_two_cpu_processes(tmp_path, scene):
    run = tmp_path / "ddp"
    cfg = write_config(tmp_path, 2)

    def cmd(out: Path, batch: int) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "jsla_fast.train", "--data", str(scene), "--format", "7scenes", "--out", str(out),
                "--config", str(cfg), "--threads", "1", "--device", "cpu", "--batch-size", str(batch)]

    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd(run, 4), capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "(2 process(es))" in proc.stderr
    assert len(metrics(run)) == 2 and (run / "best.pt").is_file()
    assert proc.stdout.count("best checkpoint:") == 1  # only rank 0 reports and writes
    one = subprocess.run(cmd(tmp_path / "ddp1", 2), capture_output=True, text=True, timeout=600, env=env)
    assert one.returncode != 0 and "BatchNorm needs at least 2: use --batch-size 4" in one.stderr


def test_scene_training_and_task_mismatch(tmp_path, seed):
    data = mit67(tmp_path / "mit", np.random.default_rng(seed))
    cfg = write_config(tmp_path, 1)
    run = tmp_path / "scene"
    proc = subprocess.run(train_cmd(data, run, cfg, "--model", "posenet", fmt="mit67"), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(run / "best.pt", weights_only=True)
    assert ckpt["model"] == "posenet" and ckpt["config"]["task"] == "scene" and ckpt["config"]["num_classes"] == 3
    assert ckpt["extra"]["classes"] == ["airport_inside", "bookstore", "closet"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {task: pose}\n")
    proc = subprocess.run(train_cmd(data, tmp_path / "x", bad, fmt="mit67"), capture_output=True, text=True)
    assert proc.returncode == 2 and "mit67 is a scene dataset but the model config says task: pose" in proc.stderr
    proc = subprocess.run(train_cmd(data, tmp_path / "y", cfg, "--resume", fmt="mit67"), capture_output=True, text=True)
    assert proc.returncode == 2 and "last.pt does not exist" in proc.stderr


def test_tensorboard_scalars_equal_the_csv(tmp_path, scene):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "tb"
    proc = subprocess.run(train_cmd(scene, run, write_config(tmp_path, 2)), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("train_loss")]
    assert logged == [(int(r["epoch"]), pytest.approx(float(r["train_loss"]), rel=1e-6)) for r in metrics(run)]
    assert "val_median_t_m" in events.Tags()["scalars"]


def test_preset_paper_and_beta_on_the_command_line(tmp_path):
    from jsla_fast.train import parse_args, run_config

    def config(*extra):
        return run_config(parse_args(["--data", str(tmp_path / "KingsCollege"), "--format", "cambridge",
                                      "--out", str(tmp_path / "run"), *extra]))

    default = config()
    assert default.model.loss.learned_weighting and default.model.loss.s_x_init is None
    paper = config("--preset", "paper")
    assert (paper.data.crop, paper.train.batch_size, paper.model.loss.beta) == (224, 40, 500.0)
    assert not paper.model.loss.learned_weighting
    # options given on the command line win over the preset
    mine = config("--preset", "paper", "--beta", "3", "--batch-size", "8")
    assert (mine.model.loss.beta, mine.train.batch_size, mine.model.loss.learned_weighting) == (3.0, 8, False)


def test_poselstm_trains_through_the_same_pipeline(tmp_path, scene):
    cfg = write_config(tmp_path, 1)
    run = tmp_path / "lstm"
    proc = subprocess.run(train_cmd(scene, run, cfg, "--model", "poselstm", "--batch-size", "3"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(run / "best.pt", weights_only=True)
    assert ckpt["model"] == "poselstm" and "rows.weight_ih_l0" in ckpt["state_dict"]
    from jsla_fast import load_checkpoint
    from jsla_fast.model import PoseLSTM

    assert isinstance(load_checkpoint(run / "best.pt"), PoseLSTM)
    row = metrics(run)[0]
    assert float(row["s_x"]) != 0.0 and float(row["train_term_t_m"]) > 0  # the learned weighting, started from the data


def test_aleatoric_uncertainty_trains_through_the_same_pipeline(tmp_path, scene):
    """model.uncertainty: aleatoric in the config: training runs on the NLL (finite losses) and the
    checkpoint's head predicts six log-variances per image; with dropout, MC dropout's sigmas are
    calibrated too."""
    cfg = tmp_path / "aleatoric.yaml"
    cfg.write_text(CONFIG.format(epochs=2, schedule="constant").replace("dropout: 0.0", "dropout: 0.3, uncertainty: aleatoric"))
    run = tmp_path / "aleatoric"
    proc = subprocess.run(train_cmd(scene, run, cfg, "--batch-size", "3"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all(np.isfinite(float(r["train_loss"])) for r in metrics(run))
    from jsla_fast import load_checkpoint

    best = run / "best.pt"
    model = load_checkpoint(best)
    assert model.config.uncertainty == "aleatoric" and model.config.loss.aleatoric == "decoupled"
    out = model.eval()(torch.randn(2, 3, 24, 24))
    assert out.log_var.shape == (2, 6) and torch.isfinite(out.log_var).all()
    # calibrated on the validation split after training: factors in the model and the file
    from jsla_fast.checkpoint import read_checkpoint

    calib = read_checkpoint(best)["extra"]["calibration"]
    assert bool(model.pose_decoder.calibrated) and model.pose_decoder.sigma_scale.tolist() == pytest.approx(
        [calib["position"], calib["rotation"]])
    assert "calibrated the predicted sigmas on" in proc.stderr and "calibrated the MC dropout (32 samples)" in proc.stderr
    assert calib["mc"]["samples"] == int(model.pose_decoder.mc_samples) == 32
    assert model.pose_decoder.mc_scale.tolist() == pytest.approx([calib["mc"]["position"], calib["mc"]["rotation"]])
    # evaluate reports the sigmas' coverage and plots them; predict prints them
    ev = subprocess.run([sys.executable, "-m", "jsla_fast.evaluate", "--checkpoint", str(best), "--data", str(scene),
                         "--format", "7scenes", "--out", str(tmp_path / "eval"), "--overlays", "0"],
                        capture_output=True, text=True, timeout=600)
    assert ev.returncode == 0, ev.stderr[-3000:]
    import json

    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    u = results["uncertainty"]
    assert u["calibrated"] and 0 <= u["position"]["within_1_sigma"] <= u["position"]["within_2_sigma"] <= 1
    assert -1 <= u["rotation"]["spearman_sigma_error"] <= 1 and (tmp_path / "eval" / "sigma_vs_error.png").is_file()
    image = next(scene.rglob("*.color.png"))
    pr = subprocess.run([sys.executable, "-m", "jsla_fast.predict", "--checkpoint", str(best), str(image)],
                        capture_output=True, text=True, timeout=600)
    assert pr.returncode == 0, pr.stderr[-3000:]
    line = json.loads(pr.stdout.splitlines()[0])
    assert line["sigma_calibrated"] is True and len(line["position_sigma_m"]) == 3
    assert all(s > 0 for s in line["position_sigma_m"] + line["orientation_sigma_rad"])
    pr = subprocess.run([sys.executable, "-m", "jsla_fast.predict", "--checkpoint", str(best), "--mc-samples", "8",
                         str(image)], capture_output=True, text=True, timeout=600)
    assert pr.returncode == 0, pr.stderr[-3000:]
    mc = json.loads(pr.stdout.splitlines()[0])
    assert mc["sigma_calibrated"] is True and mc["mc_samples"] == 8 and mc["position_sigma_m"] != line["position_sigma_m"]


def test_a_model_from_your_own_loop_is_calibrated_by_the_command(tmp_path, scene, seed):
    """A model trained elsewhere and saved from Python: ``python -m jsla_fast.calibrate`` fits its
    factors on the validation split and rewrites the file; predict then reports calibrated sigmas.
    A model without anything to calibrate is refused with what to do."""
    from jsla_fast import save_checkpoint
    from jsla_fast.checkpoint import read_checkpoint
    from jsla_fast.config import JSLAConfig
    from jsla_fast.model import MODELS
    from jsla_fast.normalization import Normalization

    torch.manual_seed(seed)
    model = MODELS["posenet"](JSLAConfig(task="pose", uncertainty="aleatoric", dropout=0.3)).eval()
    norm = Normalization(mean=torch.zeros(3, 1, 1), shorter=30, crop=24)
    path = save_checkpoint(model, tmp_path / "own.pt", normalization=norm)
    cmd = [sys.executable, "-m", "jsla_fast.calibrate", "--checkpoint", str(path), "--data", str(scene),
           "--format", "7scenes", "--threads", "1"]
    proc = subprocess.run([*cmd, "--mc-samples", "8"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    calib = read_checkpoint(path)["extra"]["calibration"]
    assert calib["images"] > 0 and calib["position"] > 0 and calib["mc"]["samples"] == 8
    from jsla_fast import load_checkpoint

    decoder = load_checkpoint(path).pose_decoder
    assert bool(decoder.calibrated) and decoder.sigma_scale.tolist() == pytest.approx([calib["position"], calib["rotation"]])
    image = next(scene.rglob("*.color.png"))
    pr = subprocess.run([sys.executable, "-m", "jsla_fast.predict", "--checkpoint", str(path), str(image)],
                        capture_output=True, text=True, timeout=600)
    assert pr.returncode == 0 and json.loads(pr.stdout.splitlines()[0])["sigma_calibrated"] is True, pr.stderr[-2000:]
    # calibrating again starts from the raw sigmas: the same factors, not their square
    assert subprocess.run([*cmd, "--mc-samples", "8"], capture_output=True, timeout=600).returncode == 0
    again = read_checkpoint(path)["extra"]["calibration"]
    assert again["position"] == pytest.approx(calib["position"]) and again["mc"]["rotation"] == pytest.approx(calib["mc"]["rotation"])
    plain = save_checkpoint(MODELS["posenet"](JSLAConfig(task="pose", dropout=0.0)).eval(), tmp_path / "plain.pt",
                            normalization=norm)
    proc = subprocess.run([*cmd[:4], str(plain), *cmd[5:]], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "the model predicts no sigmas (uncertainty 'none'): pass --mc-samples K" in proc.stderr
