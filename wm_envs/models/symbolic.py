"""Symbolic dynamics: explicit update equations, one set per contact phase, as a world model.

The model state is the task's state vector itself. One step is

    x_{t+1}[targets] = x_t[targets] + Theta(u_t) xi[phase(x_t)],   u_t = (x_t[inputs], a_t)

where ``Theta`` is a library of candidate terms -- 1, every input, every product of two
inputs, and sin / cos of the inputs that vary over more than a half period -- and ``xi`` holds
sparse coefficients fitted by sequentially thresholded least squares
(``wm_envs.symbolic``, which also prints the equations). The phase comes from the state
alone (``GraspRules.phase``), so a rollout can pick it with no look at the next frame.
Dimensions the task derives from others are recomputed after each step rather than
predicted (``GraspRules.complete``), and each predicted value stays within the range the
training data spans -- widened by that range on either side, except where joint limits set the
range (``GraspRules.bounded``): a quadratic law driven far outside its data can diverge, a
clamped one cannot.

Reward, termination and success come from the task's own definitions applied to the
predicted state, not from regressions: they are exact functions of the state (the lift, the
fingertip distance, steps held at the goal) except Grasp's "both fingers touch the object",
which the state does not record and which the ``held`` phase stands in for.

There is no image decoder: learned envs serve ``obs_mode="state"`` and ``"latent"`` (the state
vector in units of the data's statistics). The one-step filter ``observe`` takes the real
state as it is: nothing about the state is hidden from the equations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from wm_envs.models.base import Batch, ModelSpec, State, WorldModel
from wm_envs.tasks import TASKS, grasp


@dataclass(frozen=True)
class SymbolicConfig:
    task: str = "grasp"  # whose phase rule, derived dimensions and outcomes (``RULES``)
    degree: int = 2  # of the polynomial terms: 1 or 2
    #: Library inputs (indices into ``inputs`` followed by the action) that get sin/cos terms.
    trig_inputs: tuple[int, ...] = ()
    threshold: float = 0.01  # the STLSQ threshold the fit chose (a record: stepping ignores it)


class Library(nn.Module):
    """The candidate terms ``Theta(u)`` of inputs u [N, D]: 1, z_i and z_i z_j (i <= j,
    degree 2) of the standardised inputs z = (u - shift) / scale, then sin u_k and cos u_k of
    the raw inputs k in ``trig``.

    Standardising keeps the terms apart: on raw inputs a nearly constant one (an object's
    size) makes its products all but copies of the others, and least squares trades them off
    with large cancelling coefficients that no threshold removes. ``skip_squares`` drops the
    squares of inputs a constraint ties to the others (a unit quaternion's first component:
    w^2 = 1 - x^2 - y^2 - z^2), which would otherwise make the terms linearly dependent."""

    def __init__(
        self, dim: int, degree: int, trig: tuple[int, ...], skip_squares: tuple[int, ...] = ()
    ) -> None:
        super().__init__()
        if degree not in (1, 2):
            raise ValueError(f"degree must be 1 or 2, got {degree}")
        if any(not 0 <= k < dim for k in (*trig, *skip_squares)):
            raise ValueError(f"trig inputs {list(trig)} must lie in [0, {dim})")
        self.dim, self.degree, self.trig = dim, degree, tuple(int(k) for k in trig)
        left, right = torch.triu_indices(dim, dim) if degree == 2 else torch.zeros(2, 0).long()
        kept = ~((left == right) & torch.isin(left, torch.tensor(skip_squares, dtype=torch.long)))
        self.register_buffer("left", left[kept], persistent=False)
        self.register_buffer("right", right[kept], persistent=False)
        self.register_buffer(
            "trig_index", torch.tensor(self.trig, dtype=torch.long), persistent=False
        )
        self.register_buffer("shift", torch.zeros(dim))  # fitted: the inputs' mean and std
        self.register_buffer("scale", torch.ones(dim))

    @property
    def size(self) -> int:
        return 1 + self.dim + self.left.numel() + 2 * len(self.trig)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Inputs [N, D] -> terms [N, F]."""
        z = (inputs - self.shift) / self.scale  # [N, D]
        trig = inputs[:, self.trig_index]  # [N, K]
        return torch.cat(
            [
                torch.ones_like(z[:, :1]),
                z,
                z[:, self.left] * z[:, self.right],
                trig.sin(),
                trig.cos(),
            ],
            dim=1,
        )

    def names(self, inputs: list[str]) -> list[str]:
        """The terms in the raw inputs (1, u_i, u_i u_j, sin u_k, cos u_k), as formulas of the
        inputs' names, in column order: what ``raw_coefficients`` multiply."""
        if len(inputs) != self.dim:
            raise ValueError(f"the library has {self.dim} inputs, got {len(inputs)} names")
        pairs = [
            f"{inputs[i]}**2" if i == j else f"{inputs[i]}*{inputs[j]}"
            for i, j in zip(self.left.tolist(), self.right.tolist(), strict=True)
        ]
        trig = [inputs[k] for k in self.trig]
        return ["1", *inputs, *pairs, *[f"sin({n})" for n in trig], *[f"cos({n})" for n in trig]]

    def raw_coefficients(self, coefficients: torch.Tensor) -> torch.Tensor:
        """Coefficients [F, ...] of the standardised terms -> the same law's coefficients
        [F, ...] of the raw terms of ``names``: z_i = (u_i - m_i) / s_i multiplied out."""
        dim, shift, scale = self.dim, self.shift.double(), self.scale.double()
        coefficients = coefficients.double()
        raw = coefficients.clone()
        linear = coefficients[1 : 1 + dim] / _column(scale, coefficients)
        pairs = coefficients[1 + dim : 1 + dim + self.left.numel()]
        left, right = self.left, self.right
        weight = pairs / _column(scale[left] * scale[right], pairs)  # of u_i u_j
        linear = linear.index_add(0, left, -weight * _column(shift[right], pairs))
        linear = linear.index_add(0, right, -weight * _column(shift[left], pairs))
        raw[0] = (
            coefficients[0]
            - (coefficients[1 : 1 + dim] * _column(shift / scale, linear)).sum(0)
            + (weight * _column(shift[left] * shift[right], pairs)).sum(0)
        )
        raw[1 : 1 + dim] = linear
        raw[1 + dim : 1 + dim + left.numel()] = weight
        return raw


def _column(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values`` [F'] shaped to broadcast over ``like`` [F', ...]."""
    return values.reshape(-1, *([1] * (like.dim() - 1)))


def _range(start: int, stop: int) -> tuple[int, ...]:
    return tuple(range(start, stop))


@dataclass(frozen=True)
class GraspRules:
    """What symbolic dynamics needs to know of Grasp's state vector (layout in
    ``wm_envs.tasks.grasp_mujoco``).

    Phases, from the state before a step:

    * ``flight`` and ``rest``: the object untouched, in free flight or lying still on the
      table -- the task's own rule (``TaskSpec.free_motion``);
    * ``held``: the object between the fingers and the fingers closed on it: its centre within
      1 cm of the fingertip centre across the fingers (y), 5 cm along them (x, z), and the gap
      between 4.5 and 10 cm (objects are 5.6-7.6 cm wide; the fingers open to 12 cm and close
      to 0 on nothing). In the data the object follows the gripper on these steps;
    * ``contact``: everything else -- pushed, sliding, touched by open fingers.

    Predicted: every dimension but the object-minus-fingertips offset (20-22, recomputed from
    the positions) and the object's half height (23, constant); the quaternion is renormalised.
    """

    state_names: tuple[str, ...] = (
        *("x_g", "y_g", "z_g", "vx_g", "vy_g", "vz_g", "gap"),
        *("x_o", "y_o", "z_o", "qw", "qx", "qy", "qz", "vx_o", "vy_o", "vz_o"),
        *("wx_o", "wy_o", "wz_o", "dx_of", "dy_of", "dz_of", "h_o"),
    )
    action_names: tuple[str, ...] = ("a_x", "a_y", "a_z", "a_grip")
    inputs: tuple[int, ...] = (*_range(0, 20), 23)
    #: Targets held to the data's own range, which joint limits set: the gripper's position
    #: and the finger gap. The others may leave it by its width (an object falls off the table).
    bounded: tuple[int, ...] = (0, 1, 2, 6)
    #: Positions in ``inputs`` of the square the library leaves out: the quaternion's w.
    skip_squares: tuple[int, ...] = (10,)
    targets: tuple[int, ...] = _range(0, 20)
    phases: tuple[str, ...] = ("flight", "rest", "held", "contact")
    object_position: tuple[int, int] = (7, 10)
    object_velocity: tuple[int, int] = (14, 17)

    def phase(self, states: torch.Tensor) -> torch.Tensor:
        """Phase index [...] (into ``phases``) of state vectors [..., 24]."""
        flight, rest = TASKS["grasp"].free_motion.phases(states)
        offset, gap = states[..., 20:23].abs(), states[..., 6]
        held = (offset[..., 1] < 0.01) & (offset[..., 0] < 0.05) & (offset[..., 2] < 0.05)
        held &= (gap > 0.045) & (gap < 0.1)
        phase = torch.full_like(gap, 3, dtype=torch.long)  # contact
        phase = torch.where(held, 2, phase)
        phase = torch.where(rest, 1, phase)
        return torch.where(flight, 0, phase)

    def complete(self, states: torch.Tensor) -> torch.Tensor:
        """State vectors [B, 24] with the derived dimensions recomputed from the predicted ones."""
        quaternion = states[:, 10:14]
        quaternion = quaternion / quaternion.norm(dim=1, keepdim=True).clamp_min(1e-6)
        fingertips = states[:, 0:3] - states.new_tensor([0.0, 0.0, grasp.FINGERTIP_OFFSET])
        offset = states[:, 7:10] - fingertips
        return torch.cat([states[:, :10], quaternion, states[:, 14:20], offset, states[:, 23:]], 1)

    def at_goal(self, states: torch.Tensor) -> torch.Tensor:
        """Whether the object is lifted to the goal height [...] (``grasp.evaluate``)."""
        return states[..., 9] - states[..., 23] >= grasp.LIFT_GOAL

    def outcomes(
        self, states: torch.Tensor, held_steps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Grasp's reward, terminated and success [B] (``grasp.shaped_reward`` and
        ``grasp.evaluate``) for states [B, 24] after ``held_steps`` [B] steps at the goal;
        "grasped" is the ``held`` phase."""
        reach = 1.0 - torch.tanh(10.0 * states[:, 20:23].norm(dim=1))
        grasped = (self.phase(states) == self.phases.index("held")).float()
        lift = ((states[:, 9] - states[:, 23]) / grasp.LIFT_GOAL).clamp(0.0, 1.0)
        reward = 0.25 * reach + 0.25 * grasped + 0.5 * lift - 1.0
        success = held_steps >= grasp.HOLD_STEPS
        return reward, success, success  # Grasp ends on success, never on failure


#: The tasks symbolic dynamics knows the phases, derived dimensions and outcomes of.
RULES = {"grasp": GraspRules()}


def rules_of(task: str) -> GraspRules:
    if task not in RULES:
        raise ValueError(
            f"symbolic dynamics knows the contact phases and outcomes of {sorted(RULES)}; "
            f"task {task!r} has no rules"
        )
    return RULES[task]


class SymbolicModel(WorldModel):
    """Sparse explicit update equations per contact phase (see the module docstring)."""

    name = "symbolic"
    config_class = SymbolicConfig
    obs_modes: ClassVar[tuple[str, ...]] = ("state", "latent")

    def __init__(self, spec: ModelSpec, config: SymbolicConfig) -> None:
        super().__init__(spec, config)
        self.rules = rules = rules_of(config.task)
        if spec.state_dim != len(rules.state_names):
            raise ValueError(
                f"{config.task} states have {len(rules.state_names)} dimensions, the spec "
                f"{spec.state_dim}"
            )
        self.library = Library(
            len(rules.inputs) + spec.action_dim,
            config.degree,
            tuple(config.trig_inputs),
            rules.skip_squares,
        )
        phases, terms, targets = len(rules.phases), self.library.size, len(rules.targets)
        #: Physical-unit coefficients: the change of target t in phase p is Theta @ xi[p, :, t].
        self.register_buffer("coefficients", torch.zeros(phases, terms, targets))
        #: Bounds on each target: the training data's range, widened by itself on either side
        #: unless the rules say joint limits bound it.
        self.register_buffer("low", torch.full((targets,), -torch.inf))
        self.register_buffer("high", torch.full((targets,), torch.inf))
        self.register_buffer("inputs", torch.tensor(rules.inputs), persistent=False)
        self.register_buffer("targets", torch.tensor(rules.targets), persistent=False)

    @property
    def feature_dim(self) -> int:
        return self.spec.state_dim

    def library_inputs(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The library's inputs u [B, D] of states [B, S] and actions [B, A]."""
        return torch.cat([states[:, self.inputs], actions], dim=1)

    def next_states(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """States [B, S] and actions [B, A] -> the states one step later [B, S]."""
        terms = self.library(self.library_inputs(states, actions))  # [B, F]
        phase = self.rules.phase(states)  # [B]
        coefficients = self.coefficients[phase]  # [B, F, T]
        change = torch.einsum("bf,bft->bt", terms, coefficients)  # [B, T]
        after = (states[:, self.targets] + change).clamp(self.low, self.high)  # [B, T]
        return self.rules.complete(states.index_copy(1, self.targets, after))

    def _held(self, held_steps: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """Steps at the goal [B] after arriving at ``states`` [B, S]."""
        return torch.where(self.rules.at_goal(states), held_steps + 1, 0)

    def init_state(
        self,
        obs_context: Batch,
        action_context: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> State:
        states = obs_context["state"].float()  # [B, K, S]
        if not torch.isfinite(states).all():
            raise ValueError("the context's states hold NaN or inf")
        held = torch.zeros(states.shape[0], dtype=torch.long, device=states.device)
        for k in range(states.shape[1]):  # the context's frames, not the batch
            held = self._held(held, states[:, k])
        return {"state": states[:, -1], "held_steps": held}

    def step(
        self, state: State, action: torch.Tensor, generator: torch.Generator | None = None
    ) -> State:
        states = self.next_states(state["state"], action.float())
        return {"state": states, "held_steps": self._held(state["held_steps"], states)}

    def observe(
        self,
        state: State,
        action: torch.Tensor,
        obs: Batch,
        generator: torch.Generator | None = None,
    ) -> State:
        states = obs["state"].float()
        return {"state": states, "held_steps": self._held(state["held_steps"], states)}

    def decode(self, state: State) -> dict[str, torch.Tensor]:
        return {"state": state["state"]}

    def state_vector(self, state: State) -> torch.Tensor:
        return state["state"]

    def features(self, state: State) -> torch.Tensor:
        return self.normalise_state(state["state"])

    def outcome_scores(self, state: State) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        reward, terminated, success = self.rules.outcomes(state["state"], state["held_steps"])
        return reward, terminated.float(), success.float()

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        raise ValueError(
            "a symbolic model is fitted by sparse regression (`wm-envs symbolic`), "
            "not trained by `wm-envs train`"
        )


PRESETS = {"small": {}, "tiny": {"degree": 1}}  # tiny: a linear library
