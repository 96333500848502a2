"""The trainer: checkpoints and cards, resume, refusal to mix runs, DDP with gloo, and
checkpoints that a kill at any moment leaves whole."""

import hashlib
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from wm_envs import train
from wm_envs.checkpoint import (
    CARD,
    MODEL_CARD,
    WEIGHTS,
    load_checkpoint,
    part_path,
    read_trainer_state,
    save_checkpoint,
)
from wm_envs.io import write_json
from wm_envs.models import ModelSpec, build_model
from wm_envs.train import TrainConfig, Trainer, learning_rate, seed_ranges, stage_updates


def config_for(tiny_dataset, out, **changes):
    root, dataset_id = tiny_dataset
    values = dict(
        preset="tiny",
        data=str(root),
        dataset_id=dataset_id,
        out=str(out),
        steps=2,
        batch_size=2,
        window=8,
        eval_every=2,
        eval_context=2,
        eval_horizon=3,
        eval_windows=2,
        bank_size=3,
        save_every=1,
    )
    values.update(changes)
    return TrainConfig(**values)


def test_checkpoint_card_records_recipe_task_and_metrics(tiny_checkpoint):
    model, card, extra = load_checkpoint(tiny_checkpoint)
    assert card["task"] == "grasp" and card["env_id"] == "Phys-Grasp-v0"
    assert card["spec"] == {"image_size": 64, "state_dim": 24, "action_dim": 4, "depth": False}
    assert card["recipe"]["updates"] == 3 and card["recipe"]["wall_time_s"] > 0
    assert "val/psnr_1step" in card["metrics"]
    assert extra["bank/image"].shape == (4, 64, 64, 3)
    assert card["dataset"]["seed_ranges"] == [[0, 5]]  # the six episodes, train and val
    assert card["env_kwargs"] == {"obs_mode": "dict"}


def test_seed_ranges_are_sorted_inclusive_runs():
    assert seed_ranges([7, 0, 2, 1, 5, 8, 1]) == [[0, 2], [5, 5], [7, 8]]
    assert seed_ranges([]) == []


def test_resume_continues_where_the_run_stopped(tiny_dataset, tmp_path):
    Trainer(config_for(tiny_dataset, tmp_path / "run")).run()
    saved = torch.load(tmp_path / "run" / "trainer.pt", weights_only=False)
    assert saved["step"] == 2
    resumed = Trainer(config_for(tiny_dataset, tmp_path / "run", steps=4))
    assert resumed.step == 2
    before = {k: v.clone() for k, v in resumed.model.state_dict().items()}
    model, _, _ = load_checkpoint(tmp_path / "run")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(before[key], value)
    resumed.run()
    card = json.loads((tmp_path / "run" / "card.json").read_text())
    assert card["recipe"]["updates"] == 4
    lines = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines if "train/loss" in line] == [1, 2, 3, 4]


def test_resume_refuses_a_different_run(tiny_dataset, tmp_path):
    Trainer(config_for(tiny_dataset, tmp_path / "run", steps=1)).run()
    with pytest.raises(ValueError, match="different run"):
        Trainer(config_for(tiny_dataset, tmp_path / "run", window=6))


def test_cosine_schedule_decays_to_a_tenth_and_unknown_ones_are_refused(tiny_dataset, tmp_path):
    config = TrainConfig(lr=1e-3, steps=100, lr_schedule="cosine")
    rates = [learning_rate(config, step, 100) for step in range(101)]
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(rates[:-1], rates[1:], strict=True))
    assert learning_rate(TrainConfig(lr=1e-3), 50, 100) == 1e-3
    with pytest.raises(ValueError, match="lr_schedule"):
        Trainer(config_for(tiny_dataset, tmp_path / "run", lr_schedule="linear"))


def test_stage_steps_override_steps_per_stage(tiny_dataset, tmp_path):
    config = TrainConfig(steps=7, stage_steps="tokenizer=3, dynamics=5")
    assert [stage_updates(config, s) for s in ("tokenizer", "latent_actions", "dynamics")] == [
        3,
        7,
        5,
    ]
    with pytest.raises(ValueError, match="stage=count"):
        stage_updates(TrainConfig(stage_steps="tokenizer:3"), "tokenizer")
    with pytest.raises(ValueError, match="stages"):
        Trainer(config_for(tiny_dataset, tmp_path / "run", stage_steps="tokenizer=3"))


def test_ctrl_c_checkpoints_after_the_current_update(tiny_dataset, tmp_path, monkeypatch):
    log = train.Logger.log

    def log_then_interrupt(self, step, values):  # Ctrl-C arrives during update 1
        log(self, step, values)
        if step == 1:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(train.Logger, "log", log_then_interrupt)
    config = config_for(tiny_dataset, tmp_path / "run", steps=5, save_every=100)
    handler = signal.getsignal(signal.SIGINT)
    Trainer(config).run()
    assert torch.load(tmp_path / "run" / "trainer.pt", weights_only=False)["step"] == 1
    assert signal.getsignal(signal.SIGINT) is handler  # the caller's handler is back


def test_corrupt_checkpoint_is_refused(tiny_checkpoint, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "card.json").write_text((tiny_checkpoint / "card.json").read_text())
    data = (tiny_checkpoint / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(broken)
    (broken / "card.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(broken)


def test_ddp_two_processes_on_cpu_with_gloo(tiny_dataset, tmp_path):
    root, dataset_id = tiny_dataset
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
        "-m",
        "wm_envs.train",
        "--preset",
        "tiny",
        "--data",
        str(root),
        "--dataset-id",
        dataset_id,
        "--out",
        str(tmp_path / "ddp"),
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--window",
        "8",
        "--eval-context",
        "2",
        "--eval-horizon",
        "3",
        "--eval-windows",
        "2",
        "--threads",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    card = json.loads((tmp_path / "ddp" / "card.json").read_text())
    assert card["recipe"]["processes"] == 2 and card["recipe"]["updates"] == 2


def test_ddp_ranks_stay_identical_through_stage_switches_stops_and_resumes(tiny_dataset, tmp_path):
    """tests/ddp_genie.py: a Ctrl-C on rank 1 alone, a time limit only rank 1's clock sees,
    two resumes and Genie's three stage switches; the ranks must stop together every time and
    end with the same parameters, while drawing batches of their own."""
    root, dataset_id = tiny_dataset
    helper = Path(__file__).with_name("ddp_genie.py")
    command = [sys.executable, str(helper), str(root), dataset_id, str(tmp_path / "out")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [*command, str(tmp_path)], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert ranks[0]["stops"] == ranks[1]["stops"] == [(0, 1), (1, 2), (3, 2)]
    saved, card, _ = load_checkpoint(tmp_path / "out")
    assert card["recipe"]["processes"] == 2 and card["recipe"]["stage"] == "heads"
    for name, value in saved.state_dict().items():
        assert torch.equal(ranks[0]["model"][name], value), name
        assert torch.equal(ranks[1]["model"][name], value), name
    assert ranks[0]["rng"] != ranks[1]["rng"]  # each rank resumed its own batch generator


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_run_killed_at_random_moments_always_leaves_a_whole_checkpoint(tiny_dataset, tmp_path):
    """SIGKILL at seeded random moments of a run that checkpoints every update: each time,
    the checkpoint loads and its card, weights and trainer state are of one save; then the
    command, re-run, resumes and finishes. The killed runs call ``train.main`` from a fork
    server that has imported the trainer, so that a kill costs no interpreter start-up."""
    root, dataset_id = tiny_dataset
    out = tmp_path / "run"
    argv = ["--preset", "tiny", "--data", str(root), "--dataset-id", dataset_id]
    argv += ["--out", str(out), "--batch-size", "2", "--window", "8", "--eval-every", "4"]
    argv += ["--eval-context", "2", "--eval-horizon", "3", "--eval-windows", "2"]
    argv += ["--bank-size", "2", "--save-every", "1", "--threads", "1"]
    processes = multiprocessing.get_context("forkserver")
    processes.set_forkserver_preload(["wm_envs.train", "torch._dynamo", "torch.utils.tensorboard"])
    log = out / "log.jsonl"
    moments = random.Random(15)
    for _ in range(10):
        logged = len(log.read_text().splitlines()) if log.exists() else 0
        run = processes.Process(target=train.main, args=([*argv, "--steps", "1000"],))
        run.start()
        deadline = time.monotonic() + 60
        while not (log.exists() and len(log.read_text().splitlines()) > logged):
            assert run.is_alive(), f"the run ended with exit code {run.exitcode}"
            assert time.monotonic() < deadline, "the run logged no update within a minute"
            time.sleep(0.01)
        time.sleep(moments.uniform(0.0, 0.5))  # into updates, evaluations and saves
        run.kill()
        run.join()
        _, card, _ = load_checkpoint(out)
        trainer_state = read_trainer_state(out)
        assert card["recipe"]["updates"] == trainer_state["step"]
        assert card["parts"][WEIGHTS] == _sha256(part_path(out, WEIGHTS))
    steps = str(trainer_state["step"] + 2)
    finish = subprocess.run(
        [sys.executable, "-m", "wm_envs.train", *argv, "--steps", steps],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finish.returncode == 0, finish.stderr[-2000:]
    assert f"resumed {out}" in finish.stdout
    card = load_checkpoint(out)[1]
    assert read_trainer_state(out)["step"] == card["recipe"]["updates"] == int(steps)


def test_a_checkpoint_whose_parts_disagree_is_refused(tiny_dataset, tmp_path):
    Trainer(config_for(tiny_dataset, tmp_path / "run", steps=1)).run()
    earlier = tmp_path / "earlier"
    shutil.copytree(tmp_path / "run", earlier)
    Trainer(config_for(tiny_dataset, tmp_path / "run", steps=2)).run()
    torn = tmp_path / "torn"  # step-2 card and trainer state beside step-1 weights
    shutil.copytree(tmp_path / "run", torn)
    shutil.copy(earlier / WEIGHTS, torn / WEIGHTS)
    with pytest.raises(ValueError, match="model.safetensors is from another save than its card"):
        load_checkpoint(torn)
    with pytest.raises(ValueError, match="parts do not agree"):
        Trainer(config_for(tiny_dataset, torn, steps=3))
    shutil.copy(tmp_path / "run" / WEIGHTS, torn / WEIGHTS)
    shutil.copy(earlier / "trainer.pt", torn / "trainer.pt")
    with pytest.raises(ValueError, match="trainer.pt is from another save than its card"):
        Trainer(config_for(tiny_dataset, torn, steps=3))
    older = tmp_path / "older"  # saved before cards listed their parts: steps still compared
    shutil.copytree(torn, older)
    card = json.loads((older / CARD).read_text())
    write_json(older / CARD, {k: v for k, v in card.items() if k != "parts"})
    with pytest.raises(ValueError, match="trainer.pt of stage all update 1"):
        Trainer(config_for(tiny_dataset, older, steps=3))


def test_a_save_killed_after_its_commit_is_read_from_and_then_finished(tiny_checkpoint, tmp_path):
    """A kill between the commit (the rename to .checkpoint-ready) and the moves leaves
    the new parts split between two folders: readers take the new ones, and the next save
    finishes the move first."""
    folder = tmp_path / "checkpoint"
    shutil.copytree(tiny_checkpoint, folder)
    model, card, extra = load_checkpoint(folder)
    card = {k: v for k, v in card.items() if k not in ("format", "model", "config", "spec")}
    save_checkpoint(folder / "next", model, {**card, "metrics": {"new": 1.0}}, extra)
    ready = folder / ".checkpoint-ready"
    ready.mkdir()
    shutil.move(folder / "next" / WEIGHTS, ready / WEIGHTS)  # the card has moved up already
    shutil.move(folder / "next" / CARD, folder / CARD)
    assert load_checkpoint(folder)[1]["metrics"] == {"new": 1.0}
    save_checkpoint(folder, model, {**card, "metrics": {"newer": 2.0}}, extra)
    assert not ready.exists() and load_checkpoint(folder)[1]["metrics"] == {"newer": 2.0}


def test_init_from_continues_a_checkpoint_and_adds_up_its_history(
    tiny_checkpoint, tiny_dataset, tmp_path
):
    trainer = Trainer(config_for(tiny_dataset, tmp_path / "next", init_from=str(tiny_checkpoint)))
    model, _, _ = load_checkpoint(tiny_checkpoint)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(trainer.model.state_dict()[key], value)
    trainer.run()
    recipe = json.loads((tmp_path / "next" / "card.json").read_text())["recipe"]
    assert recipe["updates"] == 2 and recipe["total_updates"] == 3 + 2
    assert len(recipe["history"]) == 1 and recipe["total_wall_time_s"] > recipe["wall_time_s"]


def test_init_from_keeps_the_seeds_every_earlier_run_trained_on(
    tiny_checkpoint, tiny_dataset, tmp_path
):
    """compare keeps clear of every seed a model has seen, in any run it continues."""
    parent = tmp_path / "parent"
    shutil.copytree(tiny_checkpoint, parent)
    card = json.loads((parent / "card.json").read_text())
    card["dataset"]["seed_ranges"] = [[1000, 1002]]
    write_json(parent / "card.json", card)
    Trainer(config_for(tiny_dataset, tmp_path / "next", steps=1, init_from=str(parent))).run()
    child = json.loads((tmp_path / "next" / "card.json").read_text())
    assert child["dataset"]["seed_ranges"] == [[0, 5], [1000, 1002]]
    del card["dataset"]["seed_ranges"]  # a card that did not record them
    write_json(parent / "card.json", card)
    Trainer(config_for(tiny_dataset, tmp_path / "blind", steps=1, init_from=str(parent))).run()
    assert (
        "seed_ranges" not in json.loads((tmp_path / "blind" / "card.json").read_text())["dataset"]
    )
    with pytest.raises(ValueError, match="does not fit"):
        Trainer(
            config_for(
                tiny_dataset, tmp_path / "other", preset="small", init_from=str(tiny_checkpoint)
            )
        )


def test_init_from_starts_parts_the_checkpoint_lacks_fresh(tiny_checkpoint, tiny_dataset, tmp_path):
    older = tmp_path / "older"  # saved before the motion head existed, and before cards
    shutil.copytree(tiny_checkpoint, older)  # listed their parts
    tensors = load_file(str(older / "model.safetensors"))
    save_file(
        {k: v for k, v in tensors.items() if not k.startswith("model/motion_")},
        str(older / "model.safetensors"),
    )
    card = json.loads((older / "card.json").read_text())
    write_json(older / "card.json", {k: v for k, v in card.items() if k != "parts"})
    trainer = Trainer(config_for(tiny_dataset, tmp_path / "next", init_from=str(older)))
    assert trainer.fresh_parts == ["motion_head", "motion_std"]
    torch.testing.assert_close(
        trainer.model.state_dict()["gru.weight_ih"], tensors["model/gru.weight_ih"]
    )
    trainer.run()
    card = json.loads((tmp_path / "next" / "card.json").read_text())
    assert card["recipe"]["fresh_parts"] == ["motion_head", "motion_std"]


def test_fresh_parts_start_over_and_the_rest_continues(tiny_checkpoint, tiny_dataset, tmp_path):
    tensors = load_file(str(tiny_checkpoint / "model.safetensors"))
    trainer = Trainer(
        config_for(
            tiny_dataset, tmp_path / "next", init_from=str(tiny_checkpoint), fresh="motion_head"
        )
    )
    assert trainer.fresh_parts == ["motion_head"]
    weights = trainer.model.state_dict()
    torch.testing.assert_close(weights["gru.weight_ih"], tensors["model/gru.weight_ih"])
    assert not torch.equal(weights["motion_head.0.weight"], tensors["model/motion_head.0.weight"])
    with pytest.raises(ValueError, match="lacks"):
        Trainer(
            config_for(tiny_dataset, tmp_path / "a", init_from=str(tiny_checkpoint), fresh="wings")
        )
    with pytest.raises(ValueError, match="no --init-from"):
        Trainer(config_for(tiny_dataset, tmp_path / "b", fresh="motion_head"))


def test_atomic_writes_keep_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        write_json(tmp_path / "card.json", {"a": 1})
        model = build_model("rssm", ModelSpec(64, 3, 2), "tiny")
        save_checkpoint(tmp_path / "checkpoint", model, {"task": "grasp", "recipe": {}})
    finally:
        os.umask(umask)
    assert (tmp_path / "card.json").stat().st_mode & 0o777 == 0o644
    for part in (CARD, WEIGHTS, MODEL_CARD):
        assert (tmp_path / "checkpoint" / part).stat().st_mode & 0o777 == 0o644
    assert json.loads((tmp_path / "card.json").read_text()) == {"a": 1}


def test_train_parts_train_those_parts_alone(tiny_checkpoint, tiny_dataset, tmp_path):
    tensors = load_file(str(tiny_checkpoint / "model.safetensors"))
    config = config_for(
        tiny_dataset, tmp_path / "next", init_from=str(tiny_checkpoint), train_parts="decoder"
    )
    trainer = Trainer(config)
    trainer.run()
    weights = trainer.model.state_dict()
    changed = {
        name.split(".")[0]
        for name, value in weights.items()
        if not torch.equal(value, tensors[f"model/{name}"])
    }
    assert changed == {"decoder"}
    with pytest.raises(ValueError, match="no parameters in: \\['wings'\\]"):
        Trainer(
            config_for(
                tiny_dataset, tmp_path / "a", init_from=str(tiny_checkpoint), train_parts="wings"
            )
        )
    with pytest.raises(ValueError, match="no --init-from"):
        Trainer(config_for(tiny_dataset, tmp_path / "b", train_parts="decoder"))


def test_init_from_keeps_the_checkpoints_overrides_and_set_changes_them(tiny_dataset, tmp_path):
    """A continuation trains with the settings its checkpoint was trained with, unless its
    own --set changes them, and resumes without the checkpoint's folder."""
    parent = tmp_path / "parent"
    Trainer(config_for(tiny_dataset, parent, steps=1), {"state_weight": 20.0}).run()
    kept = Trainer(config_for(tiny_dataset, tmp_path / "kept", steps=1, init_from=str(parent)))
    assert kept.model.config.state_weight == 20.0
    changed = config_for(tiny_dataset, tmp_path / "changed", steps=1, init_from=str(parent))
    Trainer(changed, {"state_weight": 3.0}).run()
    card = json.loads((tmp_path / "changed" / "card.json").read_text())
    assert card["config"]["state_weight"] == 3.0
    shutil.rmtree(parent)
    resumed = Trainer(replace(changed, steps=2), {"state_weight": 3.0})
    assert resumed.model.config.state_weight == 3.0 and resumed.step == 1
