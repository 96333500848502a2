"""Does success in a learned simulator predict success in physics?

    wm-envs transfer --task grasp --model rssm --episodes 20

Each policy of a ladder of graded skill runs closed-loop on the same held-out seeds in
``Phys-<Task>-v0`` and in ``WM-<Task>-v0`` (each WM episode starts from the same seed's real
first frame). Reported: each policy's success in both and its transfer gap (WM - physics),
and Pearson and Spearman correlation of the two success rates over the ladder, with 95%
intervals from a paired bootstrap over seeds. Writes ``transfer.json`` and ``transfer.png``
(WM success against physics success, identity line drawn).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from wm_envs.evaluate import EvaluateConfig, run_policy
from wm_envs.io import atomic_path, write_json
from wm_envs.tasks import TASKS

#: Scripted policies of graded skill for every task (``wm_envs.agents.scripted`` specs).
LADDER = (
    "expert",
    "expert:noise=0.5",
    "expert:noise=0.8",
    "expert:noise=1.0",
    "expert:every=2",
    "expert:every=3",
    "random",
)
#: Grasp's own flaws on top: failures a learned simulator must not forgive.
GRASP_LADDER = ("expert:off_centre=0.04", "expert:release=3", "expert:never_close")


def default_ladder(task: str) -> tuple[str, ...]:
    """The policies ``transfer`` runs on ``task`` unless told otherwise."""
    return LADDER + (GRASP_LADDER if task == "grasp" else ())


@dataclass(frozen=True)
class TransferConfig:
    task: str = "grasp"
    model: str = "rssm"
    checkpoint: str = ""  # empty = the shipped one
    policies: str = ""  # space-separated specs (a spec has commas); empty = default_ladder(task)
    episodes: int = 20
    seed: int = 100_000  # held out: far from the training data's seeds
    bootstrap: int = 2000
    out: str = "transfer_out"
    device: str = "auto"


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of the last axis; NaN where either side is constant."""
    x = x - x.mean(-1, keepdims=True)
    y = y - y.mean(-1, keepdims=True)
    scale = np.sqrt((x * x).sum(-1) * (y * y).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(scale > 0, (x * y).sum(-1) / scale, np.nan)


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks along the last axis from 0, ties sharing their mean rank (for Spearman)."""
    below = (x[..., None, :] < x[..., :, None]).sum(-1)  # [..., P]
    tied = (x[..., None, :] == x[..., :, None]).sum(-1)
    return below + (tied - 1) / 2


def correlations(
    physics: np.ndarray, learned: np.ndarray, bootstrap: int, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Pearson and Spearman r of per-policy success rates, each with a 95% interval from
    resampling seeds (the same seeds for every policy and both envs: a paired bootstrap).
    ``physics`` and ``learned`` are success flags [policies, seeds]."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(physics.shape[1], size=(bootstrap, physics.shape[1]))  # [R, S]
    boot_physics = physics[:, picks].mean(-1).T  # [R, P]
    boot_learned = learned[:, picks].mean(-1).T
    rates = physics.mean(1), learned.mean(1)
    result = {}
    for name, transform in (("pearson", lambda a: a), ("spearman", ranks)):
        samples = pearson(transform(boot_physics), transform(boot_learned))
        defined = samples[np.isfinite(samples)]
        low, high = np.percentile(defined, [2.5, 97.5]) if defined.size else (np.nan, np.nan)
        result[name] = {
            "r": float(pearson(transform(rates[0]), transform(rates[1]))),
            "ci95": [float(low), float(high)],
            "defined_in": float(np.isfinite(samples).mean()),  # share of resamples with an r
        }
    return result


def transfer(config: TransferConfig) -> dict:
    """Run the ladder on both envs; write ``transfer.json`` and ``transfer.png``."""
    if config.task not in TASKS:
        raise ValueError(f"unknown task {config.task!r}; known: {sorted(TASKS)}")
    policies = config.policies.split() or list(default_ladder(config.task))
    name = TASKS[config.task].name
    rows, flags = [], {"physics": [], "learned": []}
    for policy in policies:
        runs = {}
        for kind, env in (("physics", f"Phys-{name}-v0"), ("learned", f"WM-{name}-v0")):
            evaluation = EvaluateConfig(
                policy=policy,
                env=env,
                episodes=config.episodes,
                seed=config.seed,
                model=config.model,
                checkpoint=config.checkpoint,
                device=config.device,
            )
            runs[kind] = run_policy(evaluation)
            flags[kind].append([record["success"] for record in runs[kind]])
        physics_rate = float(np.mean(flags["physics"][-1]))
        learned_rate = float(np.mean(flags["learned"][-1]))
        rows.append(
            {
                "policy": policy,
                "physics_success": physics_rate,
                "wm_success": learned_rate,
                "gap": learned_rate - physics_rate,
                "agreement": float(np.mean(np.equal(flags["physics"][-1], flags["learned"][-1]))),
                "episodes": runs,
            }
        )
        print(f"{policy:28s} physics {physics_rate:4.0%}  WM {learned_rate:4.0%}")
    stats = correlations(
        np.array(flags["physics"], float), np.array(flags["learned"], float), config.bootstrap
    )
    result = {"config": asdict(config), "correlation": stats, "policies": rows}
    out = Path(config.out)
    write_json(out / "transfer.json", result)
    plot(rows, stats, out / "transfer.png", f"{name}: {config.model} vs physics")
    for key, value in stats.items():
        print(
            f"{key}: r = {value['r']:.2f} (95% CI {value['ci95'][0]:.2f} to {value['ci95'][1]:.2f})"
        )
    return result


def plot(rows: list[dict], stats: dict, path: Path, title: str) -> None:
    """WM success against physics success, one labelled point per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8.5, 5.5))
    axis.plot([0, 1], [0, 1], color="grey", linestyle="--", label="identity")
    points: dict[tuple[float, float], list[str]] = {}  # numbers of the policies on a point
    for number, row in enumerate(rows, 1):
        key = (row["physics_success"], row["wm_success"])
        points.setdefault(key, []).append(str(number))
    for (x, y), numbers in points.items():
        axis.scatter(x, y, color="C0")
        axis.annotate(
            ",".join(numbers), (x, y), fontsize=8, xytext=(4, 4), textcoords="offset points"
        )
    key = "\n".join(f"{number:>2}  {row['policy']}" for number, row in enumerate(rows, 1))
    axis.text(1.04, 1.0, key, transform=axis.transAxes, va="top", fontsize=8, family="monospace")
    pearson_r, spearman_r = stats["pearson"]["r"], stats["spearman"]["r"]
    axis.set(
        xlabel="physics success",
        ylabel="learned-simulator success",
        xlim=(-0.05, 1.05),
        ylim=(-0.05, 1.05),
        title=f"{title}\nPearson {pearson_r:.2f}, Spearman {spearman_r:.2f}",
    )
    axis.legend(loc="lower right")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(figure)
