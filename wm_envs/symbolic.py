"""Symbolic dynamics from recorded trajectories: SINDy-style sparse regression of explicit
per-variable update equations, shipped as a world model (``model="symbolic"``).

    wm-envs symbolic --data data --dataset-id grasp/mixed-6k-v0 --out runs/symbolic-grasp

For each phase p of the task's contact rule and each predicted state variable x_t,

    x_t[k+1] - x_t[k] = Theta(x[k], a[k]) xi_t^p

with ``Theta`` the library of ``wm_envs.models.symbolic.Library`` (1, the state and action,
their pairwise products, sin and cos of the inputs that vary over more than a half period:
on narrower ranges sin u and cos u duplicate u and 1 - u^2 / 2) and ``xi`` sparse. One
coefficient set per phase, because a contact switches the law: an object untouched in the air
falls at g, one held follows the gripper, one lying on the table stays put. The phase comes
from the state before the step (``GraspRules.phase``), the rule a rollout applies too.

The fit is sequentially thresholded least squares (STLSQ, Brunton et al. 2016, as PySINDy's
``STLSQ``): least squares with a small ridge, then every coefficient below the threshold set
to zero and the rest refitted, until the active set stops changing. Columns are scaled to unit
RMS and targets too first, so one threshold means the same for every
term and variable: a term whose share is below ``threshold`` times the change's RMS per unit
RMS of the term is dropped. STLSQ runs on the normal equations (``Theta^T Theta``,
accumulated in float64 over chunks), so hundreds of thousands of transitions need no
design matrix in memory. The threshold is chosen on the dataset's validation episodes (the
trainer's split): the one whose open-loop rollouts from mid-episode starts (``compare``'s
rule) have the smallest tracked error ``horizon`` steps ahead. Compare's seeds (90000+) are
never read.

Why not PySINDy: a learned env evaluates the library on torch tensors, batched, on the GPU
when there is one, and the checkpoint must hold the coefficients as tensors; PySINDy's
libraries evaluate numpy arrays on the host and its fit wants the design matrix whole. So the
library is a small torch module and STLSQ is the twenty lines of ``stlsq`` (tests/test_symbolic
checks it recovers known sparse laws). Equations are printed with sympy and written to the
checkpoint's card (``equations``) and its MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import sympy
import torch
from tqdm import tqdm

from wm_envs.checkpoint import save_checkpoint
from wm_envs.config import add_config_arguments
from wm_envs.data.windows import open_datasets, read_state_episodes, split_episodes
from wm_envs.eval.compare import mid_episode_start
from wm_envs.models.base import ModelSpec
from wm_envs.models.symbolic import SymbolicConfig, SymbolicModel, rules_of
from wm_envs.tasks import TASKS, task_of, tracked_errors
from wm_envs.train import seed_ranges


@dataclass
class SymbolicFitConfig:
    data: str = "data"  # Minari datasets root
    dataset_id: str = "grasp/mixed-6k-v0"
    out: str = "runs/symbolic-grasp"
    degree: int = 2
    thresholds: str = "0.001,0.003,0.01,0.03,0.1,0.3,1"  # STLSQ candidates, chosen on val
    ridge: float = 1e-6  # on the unit-scaled normal equations
    iterations: int = 10  # STLSQ rounds at most
    trig_range: float = math.pi  # sin/cos terms for inputs whose 1-99% range exceeds this
    horizon: int = 15  # the validation rollouts' length
    bank_size: int = 64  # start observations stored with the checkpoint
    chunk: int = 32768  # transitions per block of the normal equations


def stlsq(
    gram: torch.Tensor,
    moment: torch.Tensor,
    threshold: float,
    ridge: float = 1e-6,
    iterations: int = 10,
    usable: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sequentially thresholded least squares on the normal equations: ``gram`` [F, F]
    (Theta^T Theta / n) and ``moment`` [F, T] (Theta^T Y / n) -> sparse coefficients [F, T].

    Least squares with ``ridge``, then coefficients with magnitude below ``threshold`` are
    zeroed and the others refitted, until the active set no longer changes (or after
    ``iterations`` rounds). ``usable`` [F] (bool) excludes terms from the start."""
    terms, targets = moment.shape
    eye = torch.eye(terms, dtype=gram.dtype)
    active = torch.ones(terms, targets, dtype=torch.bool)
    if usable is not None:
        active &= usable[:, None]
    coefficients = torch.zeros_like(moment)
    for _ in range(iterations):
        for t in range(targets):  # each variable's own active set
            rows = active[:, t].nonzero().flatten()
            coefficients[:, t] = 0.0
            if len(rows):
                system = gram[rows][:, rows] + ridge * eye[: len(rows), : len(rows)]
                coefficients[rows, t] = torch.linalg.solve(system, moment[rows, t])
        kept = active & (coefficients.abs() >= threshold)
        if torch.equal(kept, active):
            break
        active = kept
    return coefficients * active


@dataclass
class NormalEquations:
    """Per phase: ``gram`` [P, F, F] and ``moment`` [P, F, T] (sums over its transitions),
    ``square`` [P, T] (sums of the squared changes) and ``count`` [P] transitions."""

    gram: torch.Tensor
    moment: torch.Tensor
    square: torch.Tensor
    count: torch.Tensor

    def target_rms(self) -> torch.Tensor:
        """Root mean square of each target's change over every phase [T]."""
        return (self.square.sum(0) / self.count.sum().clamp_min(1)).sqrt().clamp_min(1e-12)


def transitions(episodes: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Episodes -> states before [N, S], actions [N, A] and states after [N, S]."""
    before = np.concatenate([episode["state"][:-1] for episode in episodes])
    actions = np.concatenate([episode["action"] for episode in episodes])
    after = np.concatenate([episode["state"][1:] for episode in episodes])
    return torch.from_numpy(before), torch.from_numpy(actions), torch.from_numpy(after)


def accumulate(
    model: SymbolicModel,
    before: torch.Tensor,
    actions: torch.Tensor,
    after: torch.Tensor,
    chunk: int,
) -> NormalEquations:
    """The normal equations of every phase, over blocks of ``chunk`` transitions (float64)."""
    phases, terms = len(model.rules.phases), model.library.size
    targets = model.targets
    gram = torch.zeros(phases, terms, terms, dtype=torch.float64)
    moment = torch.zeros(phases, terms, len(targets), dtype=torch.float64)
    square = torch.zeros(phases, len(targets), dtype=torch.float64)
    count = torch.zeros(phases, dtype=torch.long)
    for start in range(0, len(before), chunk):
        rows = slice(start, start + chunk)
        states = before[rows]
        theta = model.library(model.library_inputs(states, actions[rows])).double()  # [n, F]
        change = (after[rows, targets] - states[:, targets]).double()  # [n, T]
        phase = model.rules.phase(states)  # [n]
        for p in range(phases):
            mine = phase == p
            gram[p] += theta[mine].T @ theta[mine]
            moment[p] += theta[mine].T @ change[mine]
            square[p] += change[mine].square().sum(0)
            count[p] += int(mine.sum())
    return NormalEquations(gram, moment, square, count)


def sparse_fit(
    equations: NormalEquations, threshold: float, ridge: float = 1e-6, iterations: int = 10
) -> torch.Tensor:
    """Physical-unit coefficients [P, F, T] by STLSQ on each phase's normal equations, with
    columns scaled to unit RMS and each target to the RMS of its change over all phases (RMS,
    not std: a change that is the same on every step, as g in free flight, keeps its scale)."""
    target_scale = equations.target_rms()  # [T]
    fitted = []
    for gram, moment, count in zip(equations.gram, equations.moment, equations.count, strict=True):
        if count == 0:  # a phase the data never visits keeps every variable still
            fitted.append(torch.zeros_like(moment))
            continue
        gram, moment = gram / count, moment / count
        scale = gram.diagonal().sqrt()  # [F] column RMS
        usable = scale > 1e-12
        scale = torch.where(usable, scale, 1.0)
        unit_gram = gram / (scale[:, None] * scale[None, :])
        unit_moment = moment / (scale[:, None] * target_scale[None, :])
        xi = stlsq(unit_gram, unit_moment, threshold, ridge, iterations, usable)
        fitted.append(xi * target_scale[None, :] / scale[:, None])
    return torch.stack(fitted).float()


def trig_inputs(inputs: torch.Tensor, trig_range: float) -> tuple[int, ...]:
    """Library inputs [N, D] whose 1-99% range exceeds ``trig_range``: those get sin/cos."""
    low, high = torch.quantile(
        inputs[:: max(1, len(inputs) // 100_000)], torch.tensor([0.01, 0.99]), dim=0
    )
    return tuple(int(k) for k in torch.nonzero(high - low > trig_range).flatten())


def validation_starts(
    task: str, episodes: list[dict], horizon: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Compare's mid-episode starts in episodes long enough for ``horizon`` steps: start
    states [B, S], the actions that follow [horizon, B, A] and the true states [horizon, B, S]."""
    trigger = TASKS[task].start_trigger
    trigger = slice(*trigger) if trigger else None
    starts, plans, truths = [], [], []
    for episode in episodes:
        states = episode["state"]
        if len(states) < horizon + 2:
            continue
        start = mid_episode_start(states, trigger, horizon)
        starts.append(states[start])
        plans.append(episode["action"][start : start + horizon])
        truths.append(states[start + 1 : start + 1 + horizon])
    if not starts:
        raise ValueError(f"no validation episode runs {horizon + 1} steps")
    return (
        torch.from_numpy(np.stack(starts)),
        torch.from_numpy(np.stack(plans, 1)),
        torch.from_numpy(np.stack(truths, 1)),
    )


def rollout(model: SymbolicModel, start: torch.Tensor, plan: torch.Tensor) -> torch.Tensor:
    """Open-loop states [T, B, S] from start states [B, S] under actions [T, B, A]."""
    states, out = start, []
    for action in plan:
        states = model.next_states(states, action)
        out.append(states)
    return torch.stack(out)


def tracked_at_horizon(task: str, predicted: torch.Tensor, truth: torch.Tensor) -> dict:
    """Mean tracked errors of rollouts [T, B, S] at their last step."""
    errors = tracked_errors(task, predicted[-1].numpy(), truth[-1].numpy())
    return {name: float(np.mean(value)) for name, value in errors.items()}


def one_step_error(
    model: SymbolicModel,
    target_scale: torch.Tensor,
    before: torch.Tensor,
    actions: torch.Tensor,
    after: torch.Tensor,
) -> dict[str, float]:
    """Per phase: the share of transitions, and the mean squared one-step error of the
    predicted change in units of the change's mean square over all phases (``target_scale``
    [T], its root),
    averaged over the predicted variables, beside the same for "no change" (the copy)."""
    targets = model.targets
    predicted = model.next_states(before, actions)[:, targets] - before[:, targets]
    change = after[:, targets] - before[:, targets]
    phase = model.rules.phase(before)
    scale = target_scale.float().square()
    scores = {}
    for p, name in enumerate(model.rules.phases):
        mine = phase == p
        scores[f"val/share_{name}"] = float(mine.float().mean())
        if mine.any():
            error = (predicted[mine] - change[mine]).square().mean(0) / scale
            scores[f"val/one_step_error_{name}"] = float(error.mean())
            scores[f"val/copy_one_step_error_{name}"] = float(
                (change[mine].square().mean(0) / scale).mean()
            )
    return scores


def flight_gravity(model: SymbolicModel) -> dict[str, float]:
    """The gravity the flight phase's law states: minus the constant term (in raw units) of
    the object's vertical velocity change, over the control step (``TaskSpec.free_motion``);
    {} for a task that declares no free motion."""
    law = TASKS[model.config.task].free_motion
    if law is None or "flight" not in model.rules.phases:
        return {}
    rules = model.rules
    vertical = rules.targets.index(law.velocity[0] + 2)
    flight = model.coefficients[rules.phases.index("flight"), :, vertical]
    return {"flight_gravity": -float(model.library.raw_coefficients(flight)[0]) / law.dt}


def library_terms(model: SymbolicModel) -> list[sympy.Expr]:
    """The library's raw terms as sympy expressions of the task's variable names."""
    rules = model.rules
    names = [rules.state_names[i] for i in rules.inputs] + list(rules.action_names)
    return [sympy.sympify(term) for term in model.library.names(names)]


def formula(coefficients: torch.Tensor, terms: list[sympy.Expr], digits: int = 4) -> sympy.Expr:
    """Raw-term coefficients [F] (``Library.raw_coefficients``) times the raw ``terms``, as a
    sympy expression in physical units, coefficients rounded to ``digits`` figures."""
    pairs = zip(coefficients.tolist(), terms, strict=True)
    return sympy.Add(*(sympy.Float(c, digits) * term for c, term in pairs if c))


def equations(model: SymbolicModel) -> dict[str, dict[str, str]]:
    """The fitted update equations as formulas: {phase: {"d<var>": formula}}."""
    rules, terms = model.rules, library_terms(model)
    raw = model.library.raw_coefficients(model.coefficients.transpose(0, 1))  # [F, P, T]
    return {
        phase: {
            f"d{rules.state_names[target]}": sympy.sstr(formula(raw[:, p, t], terms))
            for t, target in enumerate(rules.targets)
        }
        for p, phase in enumerate(rules.phases)
    }


def prepared_model(
    task: str,
    spec: ModelSpec,
    before: torch.Tensor,
    actions: torch.Tensor,
    after: torch.Tensor,
    degree: int = 2,
    trig_range: float = math.pi,
) -> SymbolicModel:
    """A symbolic model of ``task`` with the statistics of transitions (states before [N, S],
    actions [N, A], states after [N, S]) set: the library's sin/cos inputs and scaling, the
    state normaliser and the bounds on predictions. Its coefficients are still zero."""
    inputs = SymbolicModel(spec, SymbolicConfig(task, degree)).library_inputs(before, actions)
    model = SymbolicModel(spec, SymbolicConfig(task, degree, trig_inputs(inputs, trig_range)))
    # in float64: an input the data holds constant then gets its own value as the shift, and
    # its terms are exactly zero (unusable), not a rounding error that mimics the constant
    model.library.shift.copy_(inputs.double().mean(0))
    model.library.scale.copy_(inputs.double().std(0).clamp_min(1e-6))
    states = torch.cat([before, after[-1:]])
    model.state_mean.copy_(states.mean(0))
    model.state_std.copy_(states.std(0).clamp_min(1e-3))
    low, high = states[:, model.targets].amin(0), states[:, model.targets].amax(0)
    bounded = torch.isin(model.targets, torch.tensor(model.rules.bounded))
    margin = torch.where(bounded, 0.0, high - low)  # [T]
    model.low.copy_(low - margin)
    model.high.copy_(high + margin)
    return model


def load_episodes(root: str, dataset_id: str) -> tuple[str, str, dict, list[dict]]:
    """Task, env id, env kwargs and the episodes of a dataset; refused with a clear error if
    the task has no symbolic rules or the data holds NaN or inf."""
    spec = open_datasets(root, dataset_id)[0].spec.env_spec
    task = task_of(spec.id)
    rules_of(task)  # a task without rules is refused before anything is read
    episodes = read_state_episodes(root, dataset_id)
    for index, episode in enumerate(episodes):
        for key in ("state", "action"):
            if not np.isfinite(episode[key]).all():
                raise ValueError(
                    f"dataset {dataset_id!r} episode {index} (seed {episode['seed']}) holds NaN "
                    f"or inf in its {key}s"
                )
    return task, spec.id, spec.kwargs, episodes


def fit(config: SymbolicFitConfig, command: str = "") -> SymbolicModel:
    """Fit the equations on the train split, choose the threshold on validation, and write
    the checkpoint (coefficients, card with the equations and recipe, start bank) to
    ``config.out``."""
    started = time.perf_counter()
    thresholds = sorted(float(t) for t in config.thresholds.split(",") if t.strip())
    if not thresholds or min(thresholds) < 0:
        raise ValueError(f"--thresholds must list non-negative numbers, got {config.thresholds!r}")
    task, env_id, env_kwargs, episodes = load_episodes(config.data, config.dataset_id)
    train = [episodes[i] for i in split_episodes(len(episodes), "train")]
    val = [episodes[i] for i in split_episodes(len(episodes), "val")]
    before, actions, after = transitions(train)
    spec = ModelSpec(
        image_size=episodes[0]["first_image"].shape[0],
        state_dim=before.shape[1],
        action_dim=actions.shape[1],
    )
    model = prepared_model(task, spec, before, actions, after, config.degree, config.trig_range)
    print(
        f"symbolic fit on {config.dataset_id}: {len(train)} train / {len(val)} val episodes, "
        f"{len(before)} transitions, {model.library.size} library terms; {asdict(config)}"
    )
    system = accumulate(model, before, actions, after, config.chunk)
    start, plan, truth = validation_starts(task, val, config.horizon)
    copy = tracked_at_horizon(task, start.expand_as(truth), truth)
    sweep = []
    for threshold in tqdm(thresholds, desc="thresholds", unit="fit"):
        model.coefficients.copy_(sparse_fit(system, threshold, config.ridge, config.iterations))
        errors = tracked_at_horizon(task, rollout(model, start, plan), truth)
        terms = int((model.coefficients != 0).sum())
        sweep.append({"threshold": threshold, "terms": terms, **errors})
        tqdm.write(f"threshold {threshold:g}: {terms} terms, {errors} (copy {copy})")
    tracked = next(iter(copy))
    best = min(row[tracked] for row in sweep)
    chosen = max(
        (row for row in sweep if row[tracked] <= 1.05 * best), key=lambda row: row["threshold"]
    )
    model.config = replace(model.config, threshold=chosen["threshold"])
    model.coefficients.copy_(
        sparse_fit(system, chosen["threshold"], config.ridge, config.iterations)
    )
    metrics = one_step_error(model, system.target_rms(), *transitions(val))
    horizon = config.horizon
    metrics |= {f"val/{key}_{horizon}step": value for key, value in chosen.items() if key in copy}
    metrics |= {f"val/copy_{key}_{horizon}step": value for key, value in copy.items()}
    metrics |= flight_gravity(model)
    card = fit_card(config, command, task, env_id, env_kwargs, episodes, train, val, model)
    card["recipe"] |= {
        "threshold_sweep": sweep,
        "phase_transitions": dict(zip(model.rules.phases, system.count.tolist(), strict=True)),
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    card["metrics"] = metrics
    bank = train[: config.bank_size]
    extra = {
        "bank/image": torch.from_numpy(np.stack([e["first_image"] for e in bank])),
        "bank/state": torch.from_numpy(np.stack([e["state"][0] for e in bank])),
    }
    save_checkpoint(config.out, model, card, extra)
    print(f"chosen threshold {chosen['threshold']:g}: {metrics}; wrote {config.out}")
    return model


def fit_card(
    config: SymbolicFitConfig,
    command: str,
    task: str,
    env_id: str,
    env_kwargs: dict,
    episodes: list[dict],
    train: list[dict],
    val: list[dict],
    model: SymbolicModel,
) -> dict:
    """The checkpoint card's task, dataset, recipe and equations (metrics added by ``fit``)."""
    return {
        "task": task,
        "env_id": env_id,
        "env_kwargs": env_kwargs,
        "dataset": {
            "root": str(config.data),
            "id": config.dataset_id,
            "train_episodes": len(train),
            "val_episodes": len(val),
            "train_steps": sum(len(e["action"]) for e in train),
            "seed_ranges": seed_ranges([e["seed"] for e in episodes]),
        },
        "recipe": {
            "command": command,
            "fit_config": asdict(config),
            "preset": "small",
            "stage": "fit",
            "updates": 0,
            "device": "cpu",
            "processes": 1,
            "parameters": int((model.coefficients != 0).sum()),
            "library_terms": model.library.size,
        },
        "equations": equations(model),
        "notes": [
            "Explicit update equations fitted by STLSQ (`wm_envs.symbolic`): for every predicted "
            "variable, its change over one control step is a sparse combination of 1, the "
            "state and action, their pairwise products and sin/cos of the inputs that span "
            "more than a half period. One coefficient set per phase, picked from the state "
            "before the step: flight and rest (the object untouched: the task's free-motion "
            "rule), held (between the closed fingers) and contact (the rest). Derived "
            "dimensions are recomputed, not predicted; predictions stay inside the data's "
            "range (widened by itself, except the joint-limited gripper position and gap).",
            f"Threshold {model.config.threshold:g} chosen on the dataset's validation "
            f"episodes: the sparsest of {config.thresholds} whose {config.horizon}-step "
            "object error from mid-episode starts is within 5% of the best "
            "(`recipe.threshold_sweep`).",
            "Reward, termination and success are the task's own definitions on the predicted "
            "state (grasped: the held phase; success after 5 steps at the goal height). No "
            "image decoder: obs_mode 'state' and 'latent' (the normalised state) only.",
        ],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="wm-envs symbolic",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser, SymbolicFitConfig)
    argv = sys.argv[1:] if argv is None else argv
    config = SymbolicFitConfig(**vars(parser.parse_args(argv)))
    import wm_envs  # noqa: F401  (the dataset's env spec names a registered id)

    fit(config, "wm-envs symbolic " + " ".join(shlex.quote(a) for a in argv))


if __name__ == "__main__":
    main()
