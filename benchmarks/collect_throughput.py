"""Dataset collection throughput (steps/s with 64x64 images) with 1 and 2 local workers.

Collects the same episodes (mixed policy, Phys-Grasp-v0) into a scratch Minari root, once
per worker count, the Minari build included.

    python -m benchmarks.collect_throughput [--episodes N]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import wm_envs  # noqa: F401
from benchmarks.common import write_results
from wm_envs.data import CollectConfig, collect, open_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=400)
    args = parser.parse_args()
    config = CollectConfig(episodes=args.episodes)
    rows = []
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as root:
            start = time.perf_counter()
            collect(config, root, "grasp/bench-v0", workers=workers, previews=0)
            elapsed = time.perf_counter() - start
            steps = open_dataset(root, "grasp/bench-v0").total_steps
        rows.append(
            {
                "workers": workers,
                "episodes": args.episodes,
                "steps": steps,
                "seconds": elapsed,
                "steps/s": steps / elapsed,
            }
        )
    rows[1]["speed-up"] = rows[1]["steps/s"] / rows[0]["steps/s"]
    rows[0]["speed-up"] = 1.0
    write_results("collect_throughput", rows, "Phys-Grasp-v0, mixed policy, obs_mode=dict.")


if __name__ == "__main__":
    main()
