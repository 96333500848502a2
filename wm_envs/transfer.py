"""Does success in a learned simulator predict success in physics?

    wm-envs transfer --task grasp --model rssm --episodes 20

Each policy of a ladder of graded skill runs closed-loop on the same held-out seeds in
``Phys-<Task>-v0`` and in ``WM-<Task>-v0`` (each WM episode starts from the same seed's real
first frame; a trained agent sees the learned env through its own world model's filter, as it
sees physics). The learned env runs once per success rule (``success_from``: the task's own
rule on the predicted state, and the learned heads), side by side. Reported per rule: each
policy's success in both envs, its transfer gap (WM - physics) and per-seed agreement, and
Pearson and Spearman correlation of the two success rates over the ladder, with 95%
intervals from a paired bootstrap over seeds. Writes ``transfer.json`` and ``transfer.png``
(WM success against physics success, identity line drawn).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from wm_envs.evaluate import EvaluateConfig, run_policy
from wm_envs.io import atomic_path, write_json
from wm_envs.learned_env import SUCCESS_SOURCES
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


def default_rules(task: str) -> list[str]:
    """The learned env's success rules ``transfer`` compares on ``task`` unless told: the
    task's rule on the predicted state first where it has one (chosen on validation seeds
    for Grasp: README), and the learned heads."""
    return ["state", "head"] if TASKS[task].state_outcome else ["head"]


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
    #: The learned env's success rules (``WorldModelEnv``'s ``success_from``), each run and
    #: reported side by side; space-separated, the first is the headline. Empty: "state head"
    #: where the task has a success rule on its state (``TaskSpec.state_outcome``), else "head".
    success_from: str = ""
    #: Where a trained agent meets the learned env (``EvaluateConfig.agents_in``): "env" = the
    #: one named above, like every other policy (chosen on validation seeds: README); "own" =
    #: the world model it was trained in.
    agents_in: str = "env"


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
    """Run the ladder on both envs (the learned one once per success rule); write
    ``transfer.json`` and ``transfer.png``."""
    if config.task not in TASKS:
        raise ValueError(f"unknown task {config.task!r}; known: {sorted(TASKS)}")
    rules = config.success_from.split() or default_rules(config.task)
    if set(rules) - set(SUCCESS_SOURCES):
        raise ValueError(
            f"success_from must name one or more of {SUCCESS_SOURCES}, got {config.success_from!r}"
        )
    policies = config.policies.split() or list(default_ladder(config.task))
    name = TASKS[config.task].name
    runs_of = {"physics": (f"Phys-{name}-v0", "head")} | {
        rule: (f"WM-{name}-v0", rule) for rule in rules
    }
    rows, flags = [], {kind: [] for kind in runs_of}
    for policy in policies:
        runs = {}
        for kind, (env, rule) in runs_of.items():
            evaluation = EvaluateConfig(
                policy=policy,
                env=env,
                episodes=config.episodes,
                seed=config.seed,
                model=config.model,
                checkpoint=config.checkpoint,
                device=config.device,
                success_from=rule,
                agents_in=config.agents_in,
            )
            runs[kind] = run_policy(evaluation)
            flags[kind].append([record["success"] for record in runs[kind]])
        physics_rate = float(np.mean(flags["physics"][-1]))
        learned = {}
        for rule in rules:
            rate = float(np.mean(flags[rule][-1]))
            agreement = np.mean(np.equal(flags["physics"][-1], flags[rule][-1]))
            learned[rule] = {
                "success": rate,
                "gap": rate - physics_rate,
                "agreement": float(agreement),
            }
        rows.append(
            {"policy": policy, "physics_success": physics_rate, "wm": learned, "episodes": runs}
        )
        rates = "  ".join(f"WM ({rule}) {learned[rule]['success']:4.0%}" for rule in rules)
        print(f"{policy:28s} physics {physics_rate:4.0%}  {rates}")
    physics = np.array(flags["physics"], float)
    stats = {
        rule: correlations(physics, np.array(flags[rule], float), config.bootstrap)
        for rule in rules
    }
    result = {"config": asdict(config), "correlation": stats, "policies": rows}
    out = Path(config.out)
    write_json(out / "transfer.json", result)
    plot(rows, stats, out / "transfer.png", f"{name}: {config.model} vs physics")
    for rule, rule_stats in stats.items():
        for key, value in rule_stats.items():
            low, high = value["ci95"]
            print(
                f"success from {rule}: {key} r = {value['r']:.2f} (95% CI {low:.2f} to {high:.2f})"
            )
    return result


def plot(rows: list[dict], stats: dict, path: Path, title: str) -> None:
    """WM success against physics success, one numbered point per policy and success rule
    (a colour each)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8.5, 5.5))
    axis.plot([0, 1], [0, 1], color="grey", linestyle="--", label="identity")
    for colour, rule in enumerate(stats):
        points: dict[tuple[float, float], list[str]] = {}  # numbers of the policies on a point
        for number, row in enumerate(rows, 1):
            key = (row["physics_success"], row["wm"][rule]["success"])
            points.setdefault(key, []).append(str(number))
        label = f"success from {rule}: Pearson {stats[rule]['pearson']['r']:.2f}"
        label += f", Spearman {stats[rule]['spearman']['r']:.2f}"
        for index, ((x, y), numbers) in enumerate(points.items()):
            axis.scatter(x, y, color=f"C{colour}", label=None if index else label)
            axis.annotate(
                ",".join(numbers),
                (x, y),
                fontsize=8,
                color=f"C{colour}",
                xytext=(4, 4),
                textcoords="offset points",
            )
    key = "\n".join(f"{number:>2}  {row['policy']}" for number, row in enumerate(rows, 1))
    axis.text(1.04, 1.0, key, transform=axis.transAxes, va="top", fontsize=8, family="monospace")
    axis.set(
        xlabel="physics success",
        ylabel="learned-simulator success",
        xlim=(-0.05, 1.05),
        ylim=(-0.05, 1.05),
        title=title,
    )
    axis.legend(loc="lower right", fontsize=8)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(figure)
