"""Transfer from a learned simulator to physics: the ladder table and its scatter plot.

python -m benchmarks.transfer [--task grasp] [--model rssm] [--checkpoint DIR] [--episodes 20]
    [--policies "A B"] [--success-from "state head"] [--agents-in env|own]

Runs ``wm-envs transfer`` (every policy closed loop on the same held-out seeds in
``Phys-<Task>-v0`` and ``WM-<Task>-v0``, the learned env once per success rule) and writes
its table, the correlations per rule with their bootstrap intervals, ``results/transfer.png``
and every episode in ``results/transfer_episodes.json``.
"""

from __future__ import annotations

import argparse
import shutil

import wm_envs  # noqa: F401  (registers the env ids)
from benchmarks.common import RESULTS, write_results
from wm_envs.evaluate import AGENTS_IN
from wm_envs.transfer import TransferConfig, transfer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", default="grasp")
    parser.add_argument("--model", default="rssm")
    parser.add_argument("--checkpoint", default="", help="the WM's checkpoint; default: shipped")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--policies", default="", help="space-separated specs; default: the ladder")
    parser.add_argument(
        "--success-from",
        default="",
        help="the WM's success rules, e.g. \"state head\"; default: the task's",
    )
    parser.add_argument(
        "--agents-in",
        default="env",
        choices=AGENTS_IN,
        help="a trained agent's learned env: the one named (env) or its own world model's",
    )
    args = parser.parse_args()
    out = RESULTS / "transfer_run"
    config = TransferConfig(
        task=args.task,
        model=args.model,
        checkpoint=args.checkpoint,
        policies=args.policies,
        success_from=args.success_from,
        agents_in=args.agents_in,
        episodes=args.episodes,
        out=str(out),
    )
    result = transfer(config)
    rows = []
    for row in result["policies"]:
        columns = {"policy": row["policy"], "physics_success": row["physics_success"]}
        for rule, learned in row["wm"].items():
            columns |= {f"{key} ({rule})": value for key, value in learned.items()}
        rows.append(columns)
    notes = "; ".join(
        f"success from {rule}: {name} r = {value['r']:.3f} "
        f"(95% CI {value['ci95'][0]:.3f} to {value['ci95'][1]:.3f})"
        for rule, stats in result["correlation"].items()
        for name, value in stats.items()
    )
    seeds = f"seeds {config.seed}-{config.seed + config.episodes - 1}"
    model = f"{args.model} {args.checkpoint or '(shipped)'}, agents in {args.agents_in}"
    write_results("transfer", rows, notes=f"{args.task}, {model}, {seeds}: {notes}.")
    for name in ("transfer.png", "transfer.json"):  # the plot; every episode of both envs
        shutil.copyfile(out / name, RESULTS / name.replace(".json", "_episodes.json"))
    shutil.rmtree(out)


if __name__ == "__main__":
    main()
