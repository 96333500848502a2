"""Shared fixtures: a tiny collected dataset and a tiny trained checkpoint, made once."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # tests are small; one thread avoids contention with other jobs


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """Six mixed-policy Grasp episodes in a Minari root: (root, dataset_id)."""
    from wm_envs.data import CollectConfig, collect

    root = tmp_path_factory.mktemp("datasets")
    collect(CollectConfig(episodes=6, seed=0), root, "grasp/tiny-v0", workers=1, previews=1)
    return root, "grasp/tiny-v0"


def train_tiny(tiny_dataset, out, model: str = "rssm"):
    """Train a tiny-preset ``model`` for a few updates on ``tiny_dataset`` into ``out``;
    returns the run's final metrics."""
    from wm_envs.train import TrainConfig, Trainer

    root, dataset_id = tiny_dataset
    config = TrainConfig(
        model=model,
        preset="tiny",
        data=str(root),
        dataset_id=dataset_id,
        out=str(out),
        steps=3,
        batch_size=2,
        window=8,
        eval_every=3,
        eval_context=2,
        eval_horizon=3,
        eval_windows=2,
        bank_size=4,
    )
    return Trainer(config).run()


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_dataset, tmp_path_factory):
    """A tiny RSSM trained for a few updates on ``tiny_dataset``: its folder."""
    out = tmp_path_factory.mktemp("runs") / "rssm"
    train_tiny(tiny_dataset, out)
    return out


@pytest.fixture
def lift_predictions(monkeypatch):
    """Make a Grasp model predict the object held 11 cm up on every step (its state vector),
    so that the task's success rule on the predicted state fires after five steps."""

    def lift(model) -> None:
        lifted = torch.zeros(24)
        lifted[9], lifted[23] = 0.13, 0.02  # object height, its half height

        def state_vector(state):
            return lifted.expand(next(iter(state.values())).shape[0], -1)

        monkeypatch.setattr(model, "state_vector", state_vector)

    return lift
