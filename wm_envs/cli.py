"""The ``wm-envs`` command: one sub-command per job of the data flow."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from wm_envs.config import add_config_arguments
from wm_envs.data.collect import POLICIES
from wm_envs.eval.compare import CompareConfig
from wm_envs.evaluate import EvaluateConfig
from wm_envs.transfer import TransferConfig

#: What ``wm-envs bench`` runs when given no names (``gpu``: name it, on a machine with CUDA).
BENCHMARKS = (
    "throughput",
    "experts",
    "sim2sim",
    "collect_throughput",
    "wm_throughput",
    "genie_throughput",
    "soak",
)
#: The source checkout this package runs from, if it runs from one.
CHECKOUT = Path(__file__).resolve().parent.parent


def benchmarks_folder(checkout: Path = CHECKOUT) -> Path:
    """The ``benchmarks/`` folder of the source checkout; benchmarks are not installed with
    the package, so an installed copy gets a clear error saying where to find them."""
    folder = checkout / "benchmarks"
    if not (folder / "common.py").exists() or not (checkout / "pyproject.toml").exists():
        raise SystemExit(
            f"wm-envs bench runs the benchmarks/ folder of a source checkout, and this wm_envs "
            f"(in {checkout}) is an installed copy without one: clone the repository, "
            f"`pip install -e .` in it and run `wm-envs bench` there"
        )
    return folder


def bench(argv: list[str]) -> None:
    """``wm-envs bench [NAME ...] [-- ARGS]``: run ``python -m benchmarks.NAME ARGS`` from the
    checkout for each name (default: ``BENCHMARKS``), stopping at the first that fails."""
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(
        prog="wm-envs bench",
        description="Run benchmarks from the source checkout; each writes "
        "benchmarks/results/<name>.json and .md. Arguments after `--` go to every benchmark "
        "(e.g. `wm-envs bench soak gpu -- --quick`).",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"default: {' '.join(BENCHMARKS)}")
    names = parser.parse_args(argv[:split]).names or list(BENCHMARKS)
    folder = benchmarks_folder()
    available = sorted(p.stem for p in folder.glob("*.py") if p.stem not in ("__init__", "common"))
    unknown = [name for name in names if name not in available]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; available: {', '.join(available)}")
    for name in names:
        command = [sys.executable, "-m", f"benchmarks.{name}", *argv[split + 1 :]]
        print("wm-envs bench:", " ".join(command[1:]), flush=True)
        code = subprocess.call(command, cwd=folder.parent)
        if code:
            raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:  # the trainer owns its flags (one per TrainConfig field)
        from wm_envs.train import main as train_main

        return train_main(argv[1:])
    if argv[:1] == ["bench"]:  # its own parser: arguments after `--` go to the benchmarks
        return bench(argv[1:])
    if argv[:1] == ["symbolic"]:  # the fit owns its flags (one per SymbolicFitConfig field)
        from wm_envs.symbolic import main as symbolic_main

        return symbolic_main(argv[1:])
    parser = argparse.ArgumentParser(prog="wm-envs", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("train", help="train a world model (see `wm-envs train --help`)")
    commands.add_parser("bench", help="run the benchmarks (see `wm-envs bench --help`)")
    commands.add_parser(
        "symbolic", help="fit symbolic dynamics to a dataset (see `wm-envs symbolic --help`)"
    )

    demo = commands.add_parser("demo", help="the main job: expert rollouts, a table, a video")
    demo.add_argument("--env", default="Phys-Grasp-v0")
    demo.add_argument("--episodes", type=int, default=20, help="physics episodes per policy")
    demo.add_argument("--compare-episodes", type=int, default=10, help="seeds per model compare")
    demo.add_argument("--out", default="demo_out")

    collect = commands.add_parser("collect", help="collect a Minari dataset from a Phys-* env")
    collect.add_argument("--env", default="Phys-Grasp-v0")
    collect.add_argument("--episodes", type=int, default=100)
    collect.add_argument("--policy", default="mixed", choices=POLICIES)
    collect.add_argument("--agent", default="", help="the agent policy's folder or shipped name")
    collect.add_argument("--planner", default="", help="planner policy settings: samples=128,...")
    collect.add_argument("--checkpoint", default="", help="the planner's world model folder")
    collect.add_argument("--noise", type=float, default=0.2, help="expert action noise std")
    collect.add_argument("--seed", type=int, default=0)
    collect.add_argument("--obs-mode", default="dict", choices=["dict", "rgbd"])
    collect.add_argument("--out", default="data", help="Minari datasets root")
    collect.add_argument("--dataset-id", default=None, help="default: <task>/<policy>-v0")
    collect.add_argument("--workers", type=int, default=1)
    collect.add_argument("--backend", default="local", choices=["local", "ray"])

    play = commands.add_parser(
        "play", help="run the expert or random policy on any env, write a video; or drive it"
    )
    play.add_argument("--env", default="WM-Grasp-v0")
    play.add_argument(
        "--policy", default=None, choices=["expert", "random"], help="default: expert"
    )
    play.add_argument(
        "--keyboard",
        action="store_true",
        help="drive the env in a window (a WM-* env beside its physics from --seed), no video",
    )
    play.add_argument("--episodes", type=int, default=3)
    play.add_argument("--seed", type=int, default=0)
    play.add_argument("--out", default="play.mp4")
    play.add_argument(
        "--model", default=None, help="WM-* envs: the learned simulator (default: the checkpoint's)"
    )
    play.add_argument(
        "--checkpoint", default=None, help="WM-* envs: a checkpoint folder (default: shipped)"
    )

    compare = commands.add_parser("compare", help="physics vs a learned simulator")
    add_config_arguments(compare, CompareConfig)

    evaluate = commands.add_parser(
        "evaluate", help="a policy closed loop on a Phys-* or WM-* env: success and returns"
    )
    add_config_arguments(evaluate, EvaluateConfig)

    transfer = commands.add_parser(
        "transfer", help="does success in the learned env predict success in physics?"
    )
    add_config_arguments(transfer, TransferConfig)

    report = commands.add_parser(
        "report", help="one self-contained HTML page: every shipped model against physics"
    )
    report.add_argument(
        "--results", default=None, help="default: the checkout's benchmarks/results"
    )
    report.add_argument(
        "--fresh",
        action="append",
        default=[],
        metavar="FOLDER",
        help="compare output (FOLDER/compare.json or FOLDER/*/compare.json, e.g. a demo's "
        "--out) that replaces --results' for its pair; repeatable",
    )
    report.add_argument("--out", default="report.html")

    args = parser.parse_args(argv)
    import wm_envs  # noqa: F401  (registers the env ids)

    if args.command == "demo":
        from wm_envs.demo import demo as run_demo

        run_demo(args.env, args.episodes, out=args.out, compare_episodes=args.compare_episodes)
    elif args.command == "collect":
        from wm_envs.data import CollectConfig
        from wm_envs.data import collect as run_collect

        config = CollectConfig(
            env_id=args.env,
            episodes=args.episodes,
            policy=args.policy,
            noise=args.noise,
            seed=args.seed,
            obs_mode=args.obs_mode,
            agent=args.agent,
            planner=args.planner,
            checkpoint=args.checkpoint,
        )
        run_collect(config, args.out, args.dataset_id, args.workers, args.backend)
    elif args.command == "play" and args.keyboard:
        if args.policy is not None:
            play.error(
                "--keyboard (drive by hand) and --policy (a scripted video) exclude each other"
            )
        from wm_envs.play import play_keyboard

        play_keyboard(args.env, args.seed, model=args.model, checkpoint=args.checkpoint)
    elif args.command == "play":
        from wm_envs.demo import play as run_play

        run_play(
            args.env,
            args.policy or "expert",
            args.episodes,
            args.seed,
            args.out,
            model=args.model,
            checkpoint=args.checkpoint,
        )
    elif args.command == "compare":
        from wm_envs.eval.compare import compare as run_compare

        run_compare(CompareConfig(**options(args)))
    elif args.command == "evaluate":
        from wm_envs.evaluate import evaluate as run_evaluate

        run_evaluate(EvaluateConfig(**options(args)))
    elif args.command == "transfer":
        from wm_envs.transfer import transfer as run_transfer

        run_transfer(TransferConfig(**options(args)))
    elif args.command == "report":
        from wm_envs.report import write_report

        results = Path(args.results) if args.results else benchmarks_folder() / "results"
        page = write_report(args.out, results, [Path(folder) for folder in args.fresh])
        print(f"report: {page} ({page.stat().st_size / 1e6:.1f} MB)")


def options(args: argparse.Namespace) -> dict:
    """A sub-command's parsed flags, as its config dataclass takes them."""
    return {key: value for key, value in vars(args).items() if key != "command"}


if __name__ == "__main__":
    main()
