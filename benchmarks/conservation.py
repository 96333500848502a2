"""The conservation ablation: Grasp RSSMs trained with and without the free-motion prior
(``conservation_weight``), side by side on ``compare``'s seeds.

Each run is a folder holding ``val/compare.json`` and ``test/compare.json`` (``wm-envs compare
--split val|test --out FOLDER/val|test``); every run must have been compared on the same
seeds. The table lists, per split and start (first frame, mid-episode), the object position
error at 1, 5 and 15 steps beside the copy baseline, image PSNR at 1 and 15 steps, and
success agreement, one column per run.

    python -m benchmarks.conservation shipped:DIR cons-0:DIR cons-20:DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.common import write_results

SPLITS = ("val", "test")
STARTS = ("first_frame", "mid_episode")
STEPS = (1, 5, 15)


def read_runs(runs: list[str]) -> dict[str, dict[str, dict]]:
    """``label:folder`` arguments -> label -> split -> compare.json, checked for equal seeds."""
    reports: dict[str, dict[str, dict]] = {}
    for run in runs:
        label, sep, folder = run.partition(":")
        if not sep or not label or not folder:
            raise ValueError(f"runs are given as label:folder, got {run!r}")
        reports[label] = {}
        for split in SPLITS:
            path = Path(folder) / split / "compare.json"
            if not path.is_file():
                raise ValueError(f"{label}: no {path} (run wm-envs compare --split {split})")
            reports[label][split] = json.loads(path.read_text())
    for split in SPLITS:
        seeds = {label: tuple(report[split]["seeds"]) for label, report in reports.items()}
        if len(set(seeds.values())) > 1:
            raise ValueError(f"the runs were compared on different {split} seeds: {seeds}")
    return reports


def weight_of(report: dict) -> float:
    """The conservation weight the compared checkpoint trained its last run with."""
    recipe = report["checkpoint"]["recipe"] or {}
    return float(recipe.get("model_overrides", {}).get("conservation_weight", 0.0))


def table(reports: dict[str, dict[str, dict]]) -> list[dict]:
    """One row per split, start and metric; one column per run."""
    rows = []

    def row(split: str, start: str, metric: str, values: dict[str, float]) -> None:
        rows.append({"split": split, "start": start, "metric": metric, **values})

    for split in SPLITS:
        first = next(iter(reports.values()))[split]
        seeds = "{}-{}".format(*first["seeds"])
        weights = {label: weight_of(report[split]) for label, report in reports.items()}
        row(split, "", f"conservation_weight (seeds {seeds})", weights | {"copy": None})
        for start in STARTS:
            curves = {label: report[split]["results"][start] for label, report in reports.items()}
            for key, name in (("position_cm", "object position cm"), ("psnr", "PSNR dB")):
                steps = STEPS if key == "position_cm" else (1, 15)
                for step in steps:
                    values = {label: c[key][step - 1] for label, c in curves.items()}
                    copy = next(iter(curves.values()))[f"copy_{key}"][step - 1]
                    row(split, start, f"{name} @{step}", values | {"copy": copy})
            values = {label: c["success_agrees"] for label, c in curves.items()}
            truth = next(iter(curves.values()))["true_success"]
            row(split, start, "success agreement", values | {"copy": max(truth, 1 - truth)})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="label:folder with val/ and test/compare.json")
    parser.add_argument("--name", default="conservation", help="results file name")
    args = parser.parse_args(argv)
    notes = (
        "Object position error (cm) and PSNR (dB) are means over the compared rollouts at "
        "each step; success agreement is the share of rollouts whose learned success flag "
        "matches physics. The copy column repeats the start frame and state (for success: the "
        "best constant guess). Same seeds for every run."
    )
    write_results(args.name, table(read_runs(args.runs)), notes)


if __name__ == "__main__":
    main()
