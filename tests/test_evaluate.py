"""evaluate and transfer: policies of graded skill, closed-loop on Phys-* and WM-* envs."""

import json
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

import wm_envs  # noqa: F401
from wm_envs.agents.planner import LatentPlanner, PlannerConfig
from wm_envs.agents.scripted import Flaws, ScriptedPolicy, parse_policy
from wm_envs.evaluate import EvaluateConfig, evaluate
from wm_envs.models.base import ModelSpec, WorldModel
from wm_envs.transfer import TransferConfig, correlations, ranks, transfer


def test_policy_specs_parse_and_bad_ones_are_refused():
    assert parse_policy("expert") == ("expert", Flaws())
    assert parse_policy("expert:noise=0.3,every=2,never_close") == (
        "expert",
        Flaws(noise=0.3, every=2, never_close=True),
    )
    for bad, message in [
        ("planer", "scripted policy"),
        ("expert:speed=2", "unknown setting"),
        ("expert:noise=high", "needs a float"),
        ("expert:never_close=1", "takes no value"),
        ("expert:every=0", "every must be"),
        ("random:noise=0.1", "no flaws"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_policy(bad)
    with (
        gym.make("Phys-Drive-v0", obs_mode="state") as env,
        pytest.raises(ValueError, match="Grasp"),
    ):
        ScriptedPolicy(env, "expert:never_close")


def test_flaws_change_what_the_expert_does():
    with gym.make("Phys-Grasp-v0", obs_mode="state") as env:
        actions = {}
        for spec in ("expert", "expert:never_close", "expert:every=3"):
            policy = ScriptedPolicy(env, spec, seed=0)
            obs, _ = env.reset(seed=3)
            policy.reset()
            actions[spec] = []
            for _ in range(40):
                actions[spec].append(policy(obs))
                obs, *_ = env.step(actions[spec][-1])
            actions[spec] = np.array(actions[spec])
    assert (actions["expert"][:, 3] > 0).any() and (actions["expert:never_close"][:, 3] < 0).all()
    held = actions["expert:every=3"]
    assert (held[1] == held[0]).all() and (held[2] == held[0]).all()


def test_a_high_grasp_lifts_the_object_short_of_the_goal():
    """The workspace ceiling leaves a grasp 3 cm above the centre short of the 10 cm lift."""
    lifted = {}
    with gym.make("Phys-Grasp-v0", obs_mode="state") as env:
        for spec in ("expert", "expert:grasp_height=0.03"):
            policy = ScriptedPolicy(env, spec, seed=0)
            obs, _ = env.reset(seed=3)
            policy.reset()
            lifts, done = [], False
            while not done:
                obs, _, terminated, truncated, info = env.step(policy(obs))
                lifts.append(info["lift"])
                done = terminated or truncated
            lifted[spec] = (max(lifts), info["is_success"])
    assert lifted["expert"][1] and not lifted["expert:grasp_height=0.03"][1]
    assert 0.03 < lifted["expert:grasp_height=0.03"][0] < 0.1


def test_evaluate_on_physics_and_on_the_learned_env(tiny_checkpoint, tmp_path):
    physics = evaluate(
        EvaluateConfig(policy="expert", episodes=2, seed=7, out=str(tmp_path / "p.json"))
    )
    assert physics["success_rate"] == 1.0
    assert [r["seed"] for r in physics["episodes"]] == [7, 8]
    assert json.loads((tmp_path / "p.json").read_text())["success_rate"] == 1.0
    learned = evaluate(
        EvaluateConfig(
            policy="random", env="WM-Grasp-v0", episodes=2, seed=7, checkpoint=str(tiny_checkpoint)
        )
    )
    assert len(learned["episodes"]) == 2 and all(r["length"] >= 1 for r in learned["episodes"])
    with pytest.raises(ValueError, match="Phys-\\* or WM-\\*"):
        evaluate(EvaluateConfig(env="Grasp-v0"))


def test_correlations_with_intervals_and_ties():
    np.testing.assert_array_equal(ranks(np.array([3.0, 1.0, 1.0, 2.0])), [3, 0.5, 0.5, 2])
    rng = np.random.default_rng(0)
    physics = (rng.random((6, 30)) < np.linspace(0, 1, 6)[:, None]).astype(float)
    same = correlations(physics, physics, 200)
    assert same["pearson"]["r"] == pytest.approx(1.0) and same["spearman"]["r"] == pytest.approx(
        1.0
    )
    flipped = correlations(physics, 1 - physics, 200)
    assert flipped["pearson"]["r"] == pytest.approx(-1.0)
    low, high = flipped["pearson"]["ci95"]
    assert low <= -0.9 and high == pytest.approx(-1.0)


def test_transfer_runs_a_ladder_on_both_envs(tiny_checkpoint, tmp_path):
    result = transfer(
        TransferConfig(
            policies="expert random",
            episodes=2,
            seed=11,
            bootstrap=50,
            checkpoint=str(tiny_checkpoint),
            out=str(tmp_path),
        )
    )
    rows = {row["policy"]: row for row in result["policies"]}
    assert rows["expert"]["physics_success"] == 1.0 and rows["random"]["physics_success"] == 0.0
    for row in rows.values():
        assert set(row["wm"]) == {"state", "head"}  # Grasp's default: both rules, side by side
        for rule in row["wm"].values():
            assert rule["gap"] == pytest.approx(rule["success"] - row["physics_success"])
        assert len(row["episodes"]["state"]) == len(row["episodes"]["head"]) == 2
    assert set(result["correlation"]["state"]) == {"pearson", "spearman"}
    assert (tmp_path / "transfer.png").stat().st_size > 0
    assert json.loads((tmp_path / "transfer.json").read_text())["config"]["episodes"] == 2


class PointModel(WorldModel):
    """A known world for the planner: a point moved by the action, rewarded near a goal."""

    name = "point"
    feature_dim = 2

    def __init__(self, goal: list[float]) -> None:
        super().__init__(ModelSpec(image_size=4, state_dim=2, action_dim=2), config=None)
        self.goal = torch.tensor(goal)
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the model a device

    def init_state(self, obs_context, action_context=None, generator=None):
        return {"x": obs_context["state"][:, -1].float()}

    def step(self, state, action, generator=None):
        return {"x": state["x"] + 0.1 * action}

    def outcome_scores(self, state):
        distance = (state["x"] - self.goal).norm(dim=-1)
        return -distance, torch.zeros_like(distance), (distance < 0.05).float()

    def features(self, state):
        return state["x"]


SPACE = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
IMAGE = np.zeros((4, 4, 3), np.uint8)


def drive_point(planner: LatentPlanner, steps: int) -> np.ndarray:
    """Where ``planner`` takes PointModel's point from the origin in ``steps`` steps (each
    action checked against the action space)."""
    planner.reset()
    obs = {"state": np.zeros(2, np.float32), "image": IMAGE}
    for _ in range(steps):
        action = planner(obs)
        assert SPACE.contains(action)
        obs = {**obs, "state": obs["state"] + 0.1 * action}
    return obs["state"]


def test_planner_steers_toward_what_the_model_rewards_within_the_action_space():
    planner = LatentPlanner(PointModel([0.6, -0.6]), PlannerConfig(samples=64, horizon=6), SPACE)
    assert np.linalg.norm(drive_point(planner, 8) - [0.6, -0.6]) < 0.1  # from 0.85 away


def test_planner_given_a_goal_observation_reaches_it_instead_of_the_reward():
    planner = LatentPlanner(PointModel([0.6, -0.6]), PlannerConfig(samples=64, horizon=6), SPACE)
    planner.set_goal({"state": np.array([-0.5, 0.5], np.float32), "image": IMAGE})
    assert np.linalg.norm(drive_point(planner, 8) - [-0.5, 0.5]) < 0.1  # from 0.71 away


class GoalAgent:
    """An agent for PointModel's features: its critic values closeness to ``goal`` (which
    the model's reward does not) and its actor heads there."""

    def __init__(self, goal: list[float]) -> None:
        self.card = {"feature_dim": 2}
        goal = torch.tensor(goal)
        self.critic = SimpleNamespace(value=lambda features: -(features - goal).norm(dim=-1))
        self.actor = SimpleNamespace(
            distribution=lambda features: torch.distributions.Normal(
                (goal - features).clamp(-1.0, 1.0), torch.full_like(features, 0.1)
            )
        )


class NoReward(PointModel):
    def outcome_scores(self, state):
        zeros = torch.zeros(len(state["x"]))
        return zeros, zeros, zeros


def test_planner_with_an_agent_follows_its_value_past_the_horizon():
    config = PlannerConfig(samples=64, horizon=2, policy_samples=8)
    ends = {
        name: np.linalg.norm(
            drive_point(LatentPlanner(NoReward([0.0, 0.0]), config, SPACE, agent), 10) - [0.6, -0.6]
        )
        for name, agent in (("alone", None), ("agent", GoalAgent([0.6, -0.6])))
    }
    assert ends["agent"] < 0.1 and ends["alone"] > 0.5  # nothing else rewards the goal
    with pytest.raises(ValueError, match="features"):
        LatentPlanner(NoReward([0.0, 0.0]), config, SPACE, SimpleNamespace(card={"feature_dim": 3}))


class NoRewardState(NoReward):
    def state_vector(self, state):
        return state["x"]


def test_planner_with_a_goal_margin_goes_past_the_goal_and_needs_the_tasks_progress():
    """Progress 1 + x: the goal is at x = 0, its margin (0.4) pays most at x >= 0.4."""
    config = PlannerConfig(samples=64, horizon=6, goal_margin=0.4)
    planner = LatentPlanner(NoRewardState([0.0, 0.0]), config, SPACE, None, lambda s: 1 + s[..., 0])
    assert drive_point(planner, 8)[0] > 0.35  # from x = 0, where the goal alone pays nothing more
    with pytest.raises(ValueError, match="goal_progress"):
        LatentPlanner(NoRewardState([0.0, 0.0]), config, SPACE)


def test_planner_acts_on_physics_through_evaluate(tiny_checkpoint):
    result = evaluate(
        EvaluateConfig(
            policy="planner:samples=8,horizon=3,iterations=1,elites=4",
            episodes=1,
            seed=5,
            checkpoint=str(tiny_checkpoint),
        )
    )
    assert result["episodes"][0]["length"] >= 1
