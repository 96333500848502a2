"""Dreamer in imagination: λ-returns, the two-hot critic, updates, checkpoints and resume."""

import json
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from wm_envs.agents.dreamer import (
    Dreamer,
    DreamerConfig,
    DreamerPolicy,
    DreamerRun,
    TwoHotCritic,
    lambda_returns,
    margin_bonus,
    shipped_name,
    symexp,
    symlog,
)
from wm_envs.agents.loop import LoopConfig, run_loop
from wm_envs.assets import CHECKPOINTS
from wm_envs.data import CollectConfig, collect
from wm_envs.data.windows import WindowDataset
from wm_envs.evaluate import EvaluateConfig, evaluate, make_env, plan_policy
from wm_envs.tasks import grasp
from wm_envs.train import episode_seeds
from wm_envs.wrappers import LatentObservation


def config_for(tiny_checkpoint, tiny_dataset, out, **changes):
    root, dataset_id = tiny_dataset
    values = dict(
        world_model=str(tiny_checkpoint),
        data=str(root),
        dataset_id=dataset_id,
        out=str(out),
        updates=4,
        starts=16,
        horizon=5,
        pool=32,
        hidden=32,
        save_every=2,
    )
    return DreamerConfig(**{**values, **changes})


def test_lambda_returns_match_their_recursion():
    reward = torch.tensor([[1.0], [2.0]])
    continues = torch.tensor([[1.0], [0.0]])
    value = torch.tensor([[0.5], [4.0], [9.0]])
    returns = lambda_returns(reward, continues, value, discount=0.9, lam=0.5)
    last = 2.0  # the second step ends the episode: nothing after it counts
    first = 1.0 + 0.9 * (0.5 * 4.0 + 0.5 * last)
    torch.testing.assert_close(returns, torch.tensor([[first], [last]]))
    torch.testing.assert_close(
        symexp(symlog(torch.tensor([-30.0, 0.0, 7.0]))), torch.tensor([-30.0, 0.0, 7.0])
    )


def test_two_hot_critic_learns_a_return():
    torch.manual_seed(0)
    critic = TwoHotCritic(features=3, hidden=16, bins=255)
    optimizer = torch.optim.Adam(critic.parameters(), 1e-2)
    features, target = torch.randn(64, 3), torch.full((64,), -7.5)
    for _ in range(200):
        optimizer.zero_grad()
        critic.loss(critic.net(features).log_softmax(-1), target).mean().backward()
        optimizer.step()
    assert critic.value(features).mean().item() == pytest.approx(-7.5, abs=0.3)


@pytest.mark.parametrize("gradient", ["reinforce", "backprop"])
def test_updates_lower_the_critic_loss_and_move_the_actor(
    tiny_checkpoint, tiny_dataset, tmp_path, gradient
):
    config = config_for(
        tiny_checkpoint, tiny_dataset, tmp_path / "agent", critic_lr=3e-3, actor_gradient=gradient
    )
    run = DreamerRun(config)
    start = {key: value[:16] for key, value in run.start_pool().items()}
    actor = [p.clone() for p in run.agent.actor.parameters()]
    losses = [run.agent.update(start)["critic_loss"] for _ in range(30)]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    moved = zip(actor, run.agent.actor.parameters(), strict=True)
    assert any(not torch.equal(before, after) for before, after in moved)
    assert not any(p.requires_grad for p in run.agent.model.parameters())  # the model is fixed


def test_an_unknown_actor_gradient_is_refused(tiny_checkpoint, tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match="actor_gradient"):
        DreamerRun(config_for(tiny_checkpoint, tiny_dataset, tmp_path, actor_gradient="evolve"))


def test_training_checkpoints_resumes_and_the_policy_acts(tiny_checkpoint, tiny_dataset, tmp_path):
    out = tmp_path / "agent"
    DreamerRun(config_for(tiny_checkpoint, tiny_dataset, out, updates=2)).run()
    resumed = DreamerRun(config_for(tiny_checkpoint, tiny_dataset, out, updates=4))
    assert resumed.step == 2
    saved_actor = {k: v.clone() for k, v in resumed.agent.actor.state_dict().items()}
    resumed.run()
    policy = DreamerPolicy(out)
    assert policy.card["recipe"]["updates"] == 4
    assert policy.card["world_model"]["checkpoint"] == str(tiny_checkpoint)
    assert policy.card["world_model"]["shipped"] is None
    assert shipped_name(CHECKPOINTS / "rssm-grasp") == "rssm-grasp"  # found where installed
    assert any(not torch.equal(saved_actor[k], v) for k, v in policy.actor.state_dict().items())
    action = policy(np.zeros(policy.card["feature_dim"], np.float32))
    assert action.shape == (4,) and np.all(np.abs(action) <= 1)
    with pytest.raises(ValueError, match="different agent run"):
        DreamerRun(config_for(tiny_checkpoint, tiny_dataset, out, horizon=3))
    # evaluated by folder on physics (through the world model's filter) and in learned envs:
    # the one named, seen through the agent's own filter, or that of its own world model
    runs = (("Phys-Grasp-v0", "env"), ("WM-Grasp-v0", "env"), ("WM-Grasp-v0", "own"))
    for env, agents_in in runs:
        config = EvaluateConfig(policy=str(out), env=env, episodes=1, seed=9, agents_in=agents_in)
        assert evaluate(config)["episodes"][0]["length"] >= 1
        with make_env(config, plan_policy(config)) as made:
            filtered = isinstance(made, LatentObservation)
            assert filtered == (agents_in == "env")
            inner = made.env if filtered else made
            assert isinstance(inner.observation_space, gym.spaces.Dict) == filtered  # frames
    with pytest.raises(ValueError, match="agents_in must be one of"):
        evaluate(EvaluateConfig(policy=str(out), env="WM-Grasp-v0", agents_in="mine"))
    # the planner in the agent's world model, with its critic and actor
    planner = f"planner:agent={out},samples=8,policy_samples=2,horizon=3,iterations=1,elites=4"
    result = evaluate(EvaluateConfig(policy=planner, episodes=1, seed=9))
    assert result["episodes"][0]["length"] >= 1


def test_the_dreamer_loop_collects_agent_episodes_to_train_on(
    tiny_checkpoint, tiny_dataset, tmp_path
):
    """The loop's data step: the agent's own physics episodes, and windows over them and the
    original data together ("+"-joined ids), whose seeds the card will keep."""
    root, dataset_id = tiny_dataset
    out = tmp_path / "agent"
    DreamerRun(config_for(tiny_checkpoint, tiny_dataset, out, updates=1)).run()
    agent_root = tmp_path / "data"
    for name in (dataset_id,):  # the original data beside the agent's, in one root
        shutil.copytree(Path(root) / name, agent_root / name)
    config = CollectConfig(episodes=2, policy="agent", agent=str(out), seed=500)
    collect(config, agent_root, "grasp/agent-v0", workers=1, previews=0)
    both = WindowDataset(agent_root, f"{dataset_id}+grasp/agent-v0", 4, "train")
    val = WindowDataset(agent_root, f"{dataset_id}+grasp/agent-v0", 4, "val")
    assert len(both.episode_ids) + len(val.episode_ids) == 6 + 2
    assert {500, 501} <= set(episode_seeds(agent_root, f"{dataset_id}+grasp/agent-v0"))
    with pytest.raises(ValueError, match="--agent"):
        CollectConfig(policy="agent")


def tiny_loop_config(data: Path, dataset_id: str, out: Path, **changes) -> LoopConfig:
    """A loop of one iteration with tiny budgets everywhere."""
    values = dict(
        dataset_id=dataset_id,
        data=str(data),
        out=str(out),
        episodes=2,
        finetune_steps=2,
        agent_updates=1,
        val_episodes=1,
        workers=1,
        threads=1,
        device="cpu",
    )
    return LoopConfig(**{**values, **changes})


def test_the_dreamer_loop_collects_fine_tunes_trains_and_counts_physics_steps(
    tiny_checkpoint, tiny_dataset, tmp_path
):
    """One loop iteration with tiny budgets: the agent's episodes land in a new dataset,
    the world model continues from its checkpoint on all the data, a new agent trains in
    it, and loop.json counts the physics steps; re-running resumes without redoing."""
    root, dataset_id = tiny_dataset
    data = tmp_path / "data"
    shutil.copytree(Path(root) / dataset_id, data / dataset_id)
    first = tmp_path / "agent"
    DreamerRun(config_for(tiny_checkpoint, tiny_dataset, first, updates=1)).run()
    config = tiny_loop_config(data, dataset_id, tmp_path / "loop", agent=str(first), seed=600)
    log = run_loop(config)
    (iteration,) = log["iterations"]
    assert iteration["dataset"] == "grasp/loop-1-v0"
    assert {600, 601} <= set(episode_seeds(data, f"{dataset_id}+grasp/loop-1-v0"))
    world_card = json.loads((tmp_path / "loop/iteration-1/world_model/card.json").read_text())
    assert world_card["recipe"]["history"]  # continued from the tiny checkpoint
    assert world_card["recipe"]["train_config"]["window"] == 8  # its settings kept
    agent_card = json.loads((tmp_path / "loop/iteration-1/agent/card.json").read_text())
    assert agent_card["world_model"]["checkpoint"].endswith("iteration-1/world_model")
    assert log["physics_steps"]["iteration_1"] > 0
    assert log["physics_steps_total"] == sum(log["physics_steps"].values())
    assert json.loads((tmp_path / "loop/loop.json").read_text()) == json.loads(json.dumps(log))
    assert run_loop(config)["physics_steps"] == log["physics_steps"]  # resumed: nothing new


def test_the_planner_loop_collects_the_planners_episodes_and_scores_it_in_the_new_model(
    tiny_checkpoint, tiny_dataset, tmp_path
):
    """The loop for the latent planner: it collects with MPPI in the current model (its
    settings kept in the dataset), the model is fine-tuned on them, and the planner is scored
    planning in the fine-tuned model; no agent is trained."""
    root, dataset_id = tiny_dataset
    data = tmp_path / "data"
    shutil.copytree(Path(root) / dataset_id, data / dataset_id)
    settings = "samples=8,horizon=3,iterations=1,elites=4"
    config = tiny_loop_config(
        data,
        dataset_id,
        tmp_path / "planner",
        agent=f"planner:{settings}",
        world_model=str(tiny_checkpoint),
        seed=700,
    )
    (iteration,) = run_loop(config)["iterations"]
    assert iteration["dataset"] == "grasp/planner-1-v0"
    assert iteration["agent"] == f"planner:{settings}"
    collected = json.loads((data / "grasp/planner-1-v0/collect.json").read_text())
    assert collected["policy"] == "planner" and collected["checkpoint"] == str(tiny_checkpoint)
    assert not (tmp_path / "planner/iteration-1/agent").exists()
    val = json.loads((tmp_path / "planner/iteration-1/val.json").read_text())
    assert val["config"]["checkpoint"].endswith("iteration-1/world_model")
    with pytest.raises(ValueError, match="--world-model"):
        run_loop(LoopConfig(agent="planner", dataset_id=dataset_id))
    with pytest.raises(ValueError, match="--planner and --checkpoint"):
        CollectConfig(policy="expert", checkpoint=str(tiny_checkpoint))


def test_an_agent_starts_from_another_agents_weights_and_refuses_one_that_does_not_fit(
    tiny_checkpoint, tiny_dataset, tmp_path
):
    DreamerRun(config_for(tiny_checkpoint, tiny_dataset, tmp_path / "first", updates=2)).run()
    first = DreamerPolicy(tmp_path / "first", device="cpu")
    run = DreamerRun(
        config_for(
            tiny_checkpoint, tiny_dataset, tmp_path / "next", init_from=str(tmp_path / "first")
        )
    )
    for key, value in first.actor.state_dict().items():
        torch.testing.assert_close(run.agent.actor.state_dict()[key], value)
    assert run.step == 0  # its own run, with a fresh optimizer
    with pytest.raises(ValueError, match="hidden"):
        DreamerRun(
            config_for(
                tiny_checkpoint,
                tiny_dataset,
                tmp_path / "wider",
                hidden=64,
                init_from=str(tmp_path / "first"),
            )
        )


def test_the_goal_margin_pays_a_ramp_past_the_goal_and_needs_the_tasks_progress(
    tiny_checkpoint, tiny_dataset, tmp_path
):
    config = config_for(tiny_checkpoint, tiny_dataset, tmp_path, goal_margin=0.2, margin_reward=0.5)
    run = DreamerRun(config)
    state = {key: value[:5] for key, value in run.start_pool().items()}
    lifts = torch.tensor([0.05, 0.10, 0.11, 0.12, 0.15])  # metres above the resting height
    predicted = run.agent.model.state_vector(state).clone()
    predicted[:, 9] = predicted[:, 23] + lifts  # the object's z over its half height
    assert torch.allclose(grasp.goal_progress(predicted), lifts / grasp.LIFT_GOAL)
    run.agent.model.state_vector = lambda _: predicted
    bonus = margin_bonus(run.agent.model, state, grasp.goal_progress, 0.2, 0.5)
    torch.testing.assert_close(bonus, torch.tensor([0.0, 0.0, 0.25, 0.5, 0.5]))
    with pytest.raises(ValueError, match="goal_progress"):
        Dreamer(config, run.agent.model)  # a margin with no task progress to measure it on
