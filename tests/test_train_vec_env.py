"""Vectorized training (``env.n_envs``: SubprocVecEnv) stays deterministic per seed.

``examples/train_peg_insert.yaml`` trains in 2 subprocess envs (faster on 2 cores:
benchmarks/train_throughput.py). Two tiny runs of it from the same seed must end at the same
policy, bit for bit, and a run from another seed elsewhere: the subprocesses are seeded from
the config's seed, and their steps are gathered in env order.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch as th

from skillcell.policies.train import train
from skillcell.policies.train_config import load_train_config

PEG = Path(__file__).resolve().parents[1] / "examples" / "train_peg_insert.yaml"
# PPO alone (no demonstrations): 2 updates of 2 x 32 env steps.
TINY = {"demos": {"source": "none"}, "bc": {"enabled": False}, "rl": {"steps": 128, "net_arch": [32, 32],
        "ppo": {"n_steps": 32, "batch_size": 32}}, "finetune": {"critic_warmup_steps": 0},
        "eval": {"every_steps": 0, "episodes": 1}, "checkpoints": False, "progress": False}


def _policy(tmp_path: Path, name: str, seed: int) -> dict[str, th.Tensor]:
    config = load_train_config(PEG, {**TINY, "seed": seed})
    assert config.env.n_envs == 2
    result = train(config, out=tmp_path / name, log=lambda _m: None)
    return {k: v.clone() for k, v in result.model.policy.state_dict().items()}


@pytest.mark.slow  # three runs of 2 subprocess envs each: ~40 s on 2 busy cores
def test_two_subprocess_envs_train_the_same_policy_from_the_same_seed(tmp_path):
    a, b, other = _policy(tmp_path, "a", 0), _policy(tmp_path, "b", 0), _policy(tmp_path, "c", 1)
    assert a.keys() == b.keys() and all(th.equal(a[k], b[k]) for k in a)
    assert any(not th.equal(a[k], other[k]) for k in a)  # the seed matters: the check can fail
