"""What a GPU buys, in one table, within a fixed time budget (default 270 s: under 5 minutes).

* ``WM-Grasp-v0`` steps/s through ``gym.make_vec(num_envs=N, torch_obs=True)`` for N up to
  65536, in obs_mode ``latent`` (no decoding) and ``dict`` (decoded image and state), for
  the shipped RSSM and Genie; the largest N that ran also under bf16 autocast;
* training updates/s of every preset of both models, bf16 autocast off and on, on synthetic
  batches of the trainer's default shape (16 x 24; no dataset needed): the model's
  ``loss()``, gradient clipping and an AdamW step, as ``wm_envs.train`` does (Genie: its
  dynamics stage);
* the shipped models' latent ``step`` eager and under ``torch.compile(mode="reduce-overhead")``
  (CUDA graphs on a GPU), with the compile time.

The budget is split between the three parts (rolled over when one finishes early). A row is
skipped, with a note saying why, when the previous row of its series predicts that it would
not fit in the time left, and stopped when it runs past it; a failing or out-of-memory row
records the error and the run goes on. The table is written after every row, so a run cut
short still leaves what it measured.
``--quick`` is a smoke test of a few seconds, on any device: N = 1 and 8, the tiny presets on
small batches, no compiling.

    python -m benchmarks.gpu [--quick] [--budget S] [--seconds S] [--device D] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import gymnasium as gym
import torch

import wm_envs  # noqa: F401  (registers the env ids)
from benchmarks.common import RESULTS, rate_for, write_results
from wm_envs.checkpoint import load_checkpoint, shipped_checkpoint
from wm_envs.device import resolve_device
from wm_envs.models import MODELS as MODEL_CLASSES
from wm_envs.models import ModelSpec, WorldModel, build_model
from wm_envs.train import TrainConfig

MODELS = ("rssm", "genie")
SPEC = ModelSpec(image_size=64, state_dim=24, action_dim=4)  # WM-Grasp-v0's shapes
#: Where each part's share of the budget ends (fractions of the whole).
PART_ENDS = {"env": 0.45, "train": 0.75, "compile": 1.0}
#: Seconds compiling a model's step may take, per device type (a 2-core CPU took 170 s for
#: the RSSM); with less time left, the compiled row is skipped.
COMPILE_SECONDS = {"cuda": {"rssm": 60.0, "genie": 120.0}, "cpu": {"rssm": 200.0, "genie": 400.0}}


@dataclass(frozen=True)
class Plan:
    """What one run measures."""

    env_sizes: tuple[int, ...]
    presets: tuple[str, ...]
    batch: tuple[int, int]  # training batches: windows x steps
    compile_envs: int  # N of the compiled-step rows; 0: no compiling
    budget: float  # seconds for the whole run
    seconds: float  # timing per row


FULL = Plan(
    (1, 64, 1024, 16384, 65536),
    ("tiny", "small", "medium", "large"),
    (TrainConfig.batch_size, TrainConfig.window),  # the trainer's defaults
    compile_envs=4096,
    budget=270.0,
    seconds=2.0,
)
QUICK = Plan((1, 8), ("tiny",), (2, 8), compile_envs=0, budget=30.0, seconds=0.2)


@dataclass
class Series:
    """The last measured row of a series of growing cost (N envs, or model parameters), to
    predict the next: a call's time is taken to grow in proportion to the size."""

    size: int = 0
    seconds: float | None = None  # of one call at ``size``
    broken: bool = False  # a row did not run: the later ones are skipped too

    def predict(self, size: int) -> float | None:
        """Seconds of one call at ``size``; None for the first row, inf after a broken one."""
        if self.broken:
            return float("inf")
        return None if self.seconds is None else self.seconds * size / self.size

    def update(self, size: int, seconds: float | None) -> None:
        if seconds is None:
            self.broken = True
        else:
            self.size, self.seconds = size, seconds


@dataclass
class Run:
    """The clock, the budget and the table of one run; writes the table after every row."""

    plan: Plan
    budget: float
    seconds: float
    device: torch.device
    out: Path
    start: float = field(default_factory=time.perf_counter)
    rows: list[dict] = field(default_factory=list)

    def left(self, part: str) -> float:
        """Seconds left for ``part`` (its share of the budget, plus what earlier parts left)."""
        return self.start + PART_ENDS[part] * self.budget - time.perf_counter()

    def record(
        self, label: dict, rate: float | None, unit: str, note: str, peak: float | None = None
    ) -> None:
        """Add a row to the table (``peak``: GPU memory, GiB) and write the table."""
        row = {**label, "per s": rate, "unit": unit, "peak GiB": peak, "note": note}
        self.rows.append(row)
        write_results("gpu", self.rows, self.notes(), folder=self.out, echo=False)
        measured = "–" if rate is None else f"{rate:.4g} {unit}"
        print(" | ".join(map(str, label.values())) + f": {measured} {note}", flush=True)

    def notes(self) -> str:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "CPU"
        windows, steps = self.plan.batch
        return (
            f"Device: {name}; torch {torch.__version__}. Training batches: "
            f"{windows} windows x {steps} steps of 64x64 frames; Genie "
            f"trains its dynamics stage (tokenizer and latent actions frozen). Env rows: "
            f"shipped checkpoints, random actions, autoreset on, observations as torch "
            f"tensors on the device. Budget {self.budget:.0f} s, {self.used():.0f} s used; "
            f"measured {time.strftime('%Y-%m-%d')}."
        )

    def used(self) -> float:
        return time.perf_counter() - self.start

    def attempt(
        self,
        part: str,
        label: dict,
        unit: str,
        per_call: int,
        predicted: float | None,
        measure: Callable[[], tuple[float, str]],
    ) -> float | None:
        """Measure one row with ``measure()`` (its rate and a note), unless a call predicted
        to take ``predicted`` seconds would not fit in the time left; record it either way.
        Returns the seconds of one call (``per_call`` units: N env steps, or one update), or
        None when the row did not run."""
        left = self.left(part)
        needed = self.seconds + 5 * (predicted or 0.0)  # warm-up, probe and three timings
        rate, note, peak = None, "", None
        if predicted == float("inf"):
            note = "skipped: an earlier row of its series did not run"
        elif needed > left:
            note = f"skipped: needs ~{needed:.0f} s, {max(left, 0):.0f} s left"
        else:
            try:
                with time_limit(left):
                    rate, note = measure()
            except RowTimeout:
                note = f"stopped: the {left:.0f} s left ran out"
            except torch.OutOfMemoryError:
                note = "out of memory"
            except Exception as error:  # the row records its failure; the run goes on
                note = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:160]}"
            if self.device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(self.device) / 2**30
        self.record(label, rate, unit, note, peak)
        free_memory(self.device)
        return None if rate is None else per_call / rate


class RowTimeout(Exception):
    """A row ran past the time left."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ``RowTimeout`` in this (main) thread after ``seconds``: a row, a compile
    included, cannot overrun the budget by more than the torch call it is in."""

    def stop(signum, frame) -> None:
        raise RowTimeout

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, torch.bfloat16, enabled=bf16)


def label(measure: str, model: str, size: str, bf16: bool) -> dict:
    return {"measure": measure, "model": model, "size": size, "bf16": "on" if bf16 else "off"}


# -- learned-env steps ----------------------------------------------------------------------
def env_step_rate(
    model: str, obs_mode: str, num_envs: int, bf16: bool, run: Run
) -> tuple[float, str]:
    """Env steps/s of ``num_envs`` WM-Grasp-v0 envs in one vector env."""
    envs = gym.make_vec(
        "WM-Grasp-v0",
        num_envs=num_envs,
        model=model,
        obs_mode=obs_mode,
        device=str(run.device),
        torch_obs=True,
    )
    try:
        envs.reset(seed=0)
        generator = torch.Generator(run.device).manual_seed(0)
        actions = torch.rand(8, num_envs, 4, generator=generator, device=run.device) * 2 - 1
        counter = itertools.count()

        def step() -> None:
            with autocast(run.device, bf16):
                envs.step(actions[next(counter) % 8])
            synchronize(run.device)

        return num_envs * rate_for(step, run.seconds), ""
    finally:
        envs.close()


def env_rows(run: Run) -> None:
    """Every N for every (model, obs_mode) series, smallest N first (so that a short budget
    cuts the largest N of all series alike), then bf16 at each series' largest N that ran."""
    series = {(model, mode): Series() for model in MODELS for mode in ("latent", "dict")}
    for num_envs in run.plan.env_sizes:
        for (model, mode), history in series.items():
            seconds = run.attempt(
                "env",
                label(f"WM-Grasp-v0 step, {mode}", model, f"N={num_envs}", bf16=False),
                "env steps/s",
                num_envs,
                history.predict(num_envs),
                partial(env_step_rate, model, mode, num_envs, False, run),
            )
            history.update(num_envs, seconds)
    for (model, mode), history in series.items():
        largest = history.size or run.plan.env_sizes[0]  # of those that ran
        run.attempt(
            "env",
            label(f"WM-Grasp-v0 step, {mode}", model, f"N={largest}", bf16=True),
            "env steps/s",
            largest,
            float("inf") if history.seconds is None else history.seconds,
            partial(env_step_rate, model, mode, largest, True, run),
        )


# -- training updates -----------------------------------------------------------------------
def synthetic_batch(device: torch.device, batch_size: int, window: int) -> dict:
    """A training batch of the dataset's layout and shapes, random values [B, T, ...]."""
    generator = torch.Generator().manual_seed(0)
    size = (batch_size, window)
    is_first = torch.zeros(size, dtype=torch.bool)
    is_first[:, 0] = True
    batch = {
        "image": torch.randint(0, 256, (*size, 64, 64, 3), generator=generator).to(torch.uint8),
        "state": torch.randn(*size, SPEC.state_dim, generator=generator),
        "action": torch.rand(*size, SPEC.action_dim, generator=generator) * 2 - 1,
        "reward": torch.rand(size, generator=generator),
        "terminated": torch.rand(size, generator=generator) < 0.02,
        "success": torch.rand(size, generator=generator) < 0.1,
        "is_first": is_first,
    }
    return {key: value.to(device) for key, value in batch.items()}


def measured_stage(stages: tuple[str, ...]) -> str:
    """The stage a train row times: a multi-stage model's dynamics (Genie's costliest, the
    one its recipe spends most updates on), else the only one."""
    return "dynamics" if "dynamics" in stages else stages[-1]


def train_update_rate(model: WorldModel, bf16: bool, run: Run) -> tuple[float, str]:
    """Updates/s of the trainer's update (loss, backward, clipping, AdamW) on ``model``,
    moved to the device with its normalisers fitted to a synthetic batch."""
    config = TrainConfig()
    model.to(run.device).train()
    model.prepare(synthetic_batch(run.device, 4, 8))
    model.set_stage(measured_stage(model.stages))
    batch = synthetic_batch(run.device, *run.plan.batch)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, config.lr, weight_decay=config.weight_decay)

    def update() -> None:
        with autocast(run.device, bf16):
            loss, _ = model.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        synchronize(run.device)

    return rate_for(update, run.seconds), ""


def train_rows(run: Run) -> None:
    """Every preset of every model, bf16 off and on; an update's time is predicted from the
    previous preset's, scaled by the parameter count."""
    series = {name: Series() for name in MODELS}
    for preset in run.plan.presets:
        for name in MODELS:
            model = build_model(name, SPEC, preset)
            parameters = sum(p.numel() for p in model.parameters())
            stages = MODEL_CLASSES[name].stages
            stage = "" if len(stages) == 1 else f", {measured_stage(stages)} stage"
            for bf16 in (False, True):
                seconds = run.attempt(
                    "train",
                    label(
                        f"train update{stage}", name, f"{preset} ({parameters / 1e6:.3g}M)", bf16
                    ),
                    "updates/s",
                    1,
                    series[name].predict(parameters),
                    partial(train_update_rate, model, bf16, run),
                )
                if not bf16:
                    series[name].update(parameters, seconds)
            del model
            free_memory(run.device)


# -- compiled latent step -------------------------------------------------------------------
@torch.inference_mode()
def step_rate(name: str, num_envs: int, compiled: bool, run: Run) -> tuple[float, str]:
    """Steps/s of the shipped model's latent ``step`` for ``num_envs`` states started from
    its start bank, eager or under ``torch.compile(mode="reduce-overhead")``."""
    model, _, extra = load_checkpoint(shipped_checkpoint(name, "grasp"), run.device)
    rows = torch.arange(num_envs, device=run.device) % len(extra["bank/image"])
    context = {key: extra[f"bank/{key}"][rows, None] for key in ("image", "state")}  # [N, 1, ...]
    state = model.init_state(context)
    generator = torch.Generator(run.device).manual_seed(0)
    actions = torch.rand(8, num_envs, 4, generator=generator, device=run.device) * 2 - 1
    step = torch.compile(model.step, mode="reduce-overhead") if compiled else model.step
    counter = itertools.count()

    def call() -> None:
        nonlocal state
        if compiled:  # CUDA graphs: a new step, whose inputs are the last step's outputs
            torch.compiler.cudagraph_mark_step_begin()
        state = {k: v.clone() for k, v in step(state, actions[next(counter) % 8]).items()}
        synchronize(run.device)

    note = ""
    if compiled:
        start = time.perf_counter()
        for _ in range(3):  # compiling, then recording the graph
            call()
        note = f"compiling and the first 3 calls: {time.perf_counter() - start:.0f} s"
    return num_envs * rate_for(call, run.seconds), note


def compile_rows(run: Run) -> None:
    """Eager and compiled latent step of each shipped model, at ``run.plan.compile_envs`` envs."""
    for name in MODELS:
        for compiled in (False, True):
            size = f"N={run.plan.compile_envs}" if run.plan.compile_envs else "-"
            what = label(
                "model.step, " + ("torch.compile" if compiled else "eager"), name, size, False
            )
            left = run.left("compile")
            expected = COMPILE_SECONDS.get(run.device.type, COMPILE_SECONDS["cpu"])[name]
            if not run.plan.compile_envs:
                run.record(what, None, "env steps/s", "skipped: --quick")
            elif compiled and left < expected:
                note = f"skipped: compiling may take {expected:.0f} s, {left:.0f} s left"
                run.record(what, None, "env steps/s", note)
            else:
                run.attempt(
                    "compile",
                    what,
                    "env steps/s",
                    run.plan.compile_envs,
                    None,
                    partial(step_rate, name, run.plan.compile_envs, compiled, run),
                )
                torch.compiler.reset()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a smoke test of a few seconds")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help=f"seconds ({FULL.budget:g}; quick: {QUICK.budget:g})",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help=f"timing per row ({FULL.seconds:g}; quick: {QUICK.seconds:g})",
    )
    parser.add_argument("--device", default="auto", help="auto: CUDA when present")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for gpu.json/.md")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    run = Run(
        plan=plan,
        budget=plan.budget if args.budget is None else args.budget,
        seconds=plan.seconds if args.seconds is None else args.seconds,
        device=resolve_device(args.device),
        out=args.out,
    )
    env_rows(run)
    train_rows(run)
    compile_rows(run)
    write_results("gpu", run.rows, run.notes(), folder=run.out)


if __name__ == "__main__":
    main()
