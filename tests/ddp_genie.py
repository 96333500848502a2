"""Two gloo ranks train a tiny Genie through a Ctrl-C, a time limit, two resumes and its
stage switches; each rank then saves where it stopped each time, its parameters and its RNG
state, for tests/test_train.py to compare.

    python tests/ddp_genie.py DATA_ROOT DATASET_ID OUT RESULTS

1. Ctrl-C reaches rank 1 alone, during the first update: both ranks stop at update 1.
2. Resume; rank 1's clock runs an hour ahead, so only rank 1 sees ``--max-minutes`` pass:
   both stop at the same update, after the switch from the tokenizer to the latent actions.
3. Resume and finish: the rest of the latent actions, then the dynamics and the heads.
"""

import os
import signal
import socket
import sys
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp


class ClockAhead:
    """``time.time`` that runs an hour ahead from its fifth reading on (the trainer reads it
    twice before the first update, then once per update)."""

    def __init__(self) -> None:
        self.readings = 0

    def time(self) -> float:
        self.readings += 1
        return time.time() + (3600.0 if self.readings >= 5 else 0.0)


def rank_main(rank: int, port: int, root: str, dataset_id: str, out: str, results: str) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    import wm_envs  # noqa: F401  (registers the env ids the dataset names)
    from wm_envs import train

    def config(**changes) -> train.TrainConfig:
        return train.TrainConfig(
            model="genie",
            preset="tiny",
            data=root,
            dataset_id=dataset_id,
            out=out,
            stage_steps="tokenizer=2,latent_actions=3,dynamics=3,heads=2",
            batch_size=2,
            window=8,
            eval_every=100,
            eval_context=2,
            eval_horizon=3,
            eval_windows=2,
            bank_size=2,
            save_every=100,
            threads=1,
            **changes,
        )

    stops = []
    trainer = train.Trainer(config())
    sample = trainer.train_data.sample

    def sample_under_ctrl_c(*args):
        if rank == 1 and trainer.step == 0:
            os.kill(os.getpid(), signal.SIGINT)
        return sample(*args)

    trainer.train_data.sample = sample_under_ctrl_c
    trainer.run()
    stops.append((trainer.stage, trainer.step))

    trainer = train.Trainer(config(max_minutes=30.0))
    if rank == 1:
        train.time = ClockAhead()
    trainer.run()
    train.time = time
    stops.append((trainer.stage, trainer.step))

    trainer = train.Trainer(config())
    trainer.run()
    stops.append((trainer.stage, trainer.step))
    torch.save(
        {
            "stops": stops,
            "model": trainer.model.state_dict(),
            "rng": trainer.rng.bit_generator.state,
        },
        Path(results) / f"rank{rank}.pt",
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    root, dataset_id, out, results = sys.argv[1:]
    mp.spawn(rank_main, args=(free_port(), root, dataset_id, out, results), nprocs=2)
