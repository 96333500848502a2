"""The ``wm-envs`` command: one sub-command per job of the data flow."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="wm-envs", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="the main job: expert rollouts, a table, a video")
    demo.add_argument("--env", default="Phys-Grasp-v0")
    demo.add_argument("--episodes", type=int, default=20)
    demo.add_argument("--out", default="demo_out")

    args = parser.parse_args(argv)
    import wm_envs  # noqa: F401  (registers the env ids)

    if args.command == "demo":
        from wm_envs.demo import demo as run_demo

        run_demo(args.env, args.episodes, out=args.out)


if __name__ == "__main__":
    main()
