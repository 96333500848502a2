"""The `wm-envs` command: `play` with a chosen model and checkpoint, and `bench`."""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wm_envs.checkpoint import shipped_checkpoint
from wm_envs.cli import main
from wm_envs.config import add_config_arguments
from wm_envs.eval.compare import CompareConfig

REPOSITORY = Path(__file__).resolve().parent.parent


def play(tmp_path, *flags):
    out = tmp_path / "play.mp4"
    main(["play", "--policy", "random", "--episodes", "1", "--out", str(out), *flags])
    return out


def test_play_runs_the_named_model_from_its_checkpoint(tmp_path):
    folder = shipped_checkpoint("genie", "grasp")
    out = play(tmp_path, "--env", "WM-Grasp-v0", "--model", "genie", "--checkpoint", str(folder))
    assert out.stat().st_size > 1000


def test_play_takes_the_model_from_the_checkpoint_card(tiny_checkpoint, tmp_path):
    out = play(tmp_path, "--env", "WM-Grasp-v0", "--checkpoint", str(tiny_checkpoint))
    assert out.stat().st_size > 1000


def test_play_passes_the_checkpoint_to_the_learned_env(tiny_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="holds a 'rssm' model, not 'genie'"):
        play(
            tmp_path,
            "--env",
            "WM-Grasp-v0",
            "--model",
            "genie",
            "--checkpoint",
            str(tiny_checkpoint),
        )


@pytest.mark.parametrize("flag", [["--model", "rssm"], ["--checkpoint", "some/folder"]])
def test_play_refuses_a_model_or_checkpoint_for_a_physics_env(flag, tmp_path):
    with pytest.raises(ValueError, match="simulated by physics.*play WM-Grasp-v0"):
        play(tmp_path, "--env", "Phys-Grasp-v0", *flag)


def test_bench_runs_the_named_benchmark_with_the_arguments_after_dashes(capfd):
    main(["bench", "soak", "--", "--help"])
    assert "10^6 learned-env steps" in capfd.readouterr().out


def test_bench_stops_with_the_exit_status_of_a_failing_benchmark():
    with pytest.raises(SystemExit) as stopped:
        main(["bench", "soak", "gpu", "--", "--no-such-flag"])
    assert stopped.value.code == 2  # argparse's status for a bad flag, from soak


def test_bench_refuses_an_unknown_benchmark(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "no_such_benchmark"])
    assert "unknown benchmark no_such_benchmark; available:" in capsys.readouterr().err


def test_bench_outside_a_checkout_says_where_the_benchmarks_are(tmp_path):
    shutil.copytree(REPOSITORY / "wm_envs", tmp_path / "site" / "wm_envs")
    done = subprocess.run(
        [sys.executable, "-c", "from wm_envs.cli import main; main(['bench', 'soak'])"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "benchmarks/ folder of a source checkout" in done.stderr


def test_evaluate_writes_success_and_per_episode_records(tmp_path, capsys):
    out = tmp_path / "expert.json"
    main(["evaluate", "--policy", "expert", "--episodes", "2", "--seed", "3", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["success_rate"] == 1.0 and [r["seed"] for r in result["episodes"]] == [3, 4]
    assert "success 100% over 2 episodes" in capsys.readouterr().out


def test_transfer_runs_the_named_policies_on_both_envs(tiny_checkpoint, tmp_path):
    main(
        [
            "transfer",
            "--policies",
            "expert random",
            "--episodes",
            "2",
            "--bootstrap",
            "20",
            "--checkpoint",
            str(tiny_checkpoint),
            "--out",
            str(tmp_path),
        ]
    )
    rows = json.loads((tmp_path / "transfer.json").read_text())["policies"]
    assert [row["policy"] for row in rows] == ["expert", "random"]


def test_tuple_options_take_comma_separated_values_of_their_element_type():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, CompareConfig)
    args = parser.parse_args(["--long-steps", "20,40", "--done-thresholds", "0.5,0.2"])
    assert args.long_steps == (20, 40) and args.done_thresholds == (0.5, 0.2)
    assert parser.parse_args([]).done_thresholds == ()
    with pytest.raises(SystemExit):
        parser.parse_args(["--long-steps", "20,forty"])
