"""Untrusted models are data: crafted pickles in an SB3 zip, its torch files or a VecNormalize file never run.

Each payload is a pickle whose unpickling creates a marker file (``open(marker, "w")``). The
trusted (unpickling) load of the same file is run too, to show the payload is live: only the
safe load leaves the marker absent.
"""

import base64
import io
import json
import pickle
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from skillcell.cli import main as cli_main
from skillcell.policies.loading import UntrustedModelError, load_obs_normalization, load_sb3_model

PEG = "skillcell/PegInsert-v0"


class Payload:
    """Unpickling this calls ``open(marker, "w")``: the file appears iff the pickle was run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture(scope="module")
def env():
    env = gym.make(PEG)
    yield env
    env.close()


@pytest.fixture(scope="module")
def models(tmp_path_factory, env):
    """PPO and SAC trained a few steps, as `skillcell train` builds them (Tanh: pickled policy_kwargs)."""
    folder = tmp_path_factory.mktemp("models")
    ppo = PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu",
              policy_kwargs={"net_arch": {"pi": [32, 32], "vf": [32, 32]}, "log_std_init": -1.0,
                             "activation_fn": th.nn.Tanh})
    ppo.learn(64)
    ppo.save(folder / "ppo.zip")
    sac = SAC("MlpPolicy", env, learning_starts=16, batch_size=16, buffer_size=200, seed=0, device="cpu",
              policy_kwargs={"net_arch": [32, 32], "activation_fn": th.nn.Tanh})
    sac.learn(48)
    sac.save(folder / "sac.zip")
    return {"ppo": (PPO, folder / "ppo.zip"), "sac": (SAC, folder / "sac.zip")}


@pytest.fixture(scope="module")
def observations(env):
    rng = np.random.default_rng(0)
    obs, out = env.reset(seed=0)[0], []
    for _ in range(32):
        out.append(obs)
        obs, *_ = env.step(rng.uniform(-1, 1, env.action_space.shape))
    out = np.array(out, dtype=np.float32)
    return np.concatenate([out, rng.normal(0, 3, out.shape).astype(np.float32)])


def _rewrite(src, dst, member, data: bytes):
    """A copy of the zip ``src`` with ``member`` replaced by ``data``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item, data if item.filename == member else zin.read(item.filename))
    return dst


def _with_serialized_payload(src, dst, key, marker):
    with zipfile.ZipFile(src) as z:
        data = json.loads(z.read("data"))
    assert ":serialized:" in data[key]  # the entry SB3 would cloudpickle-load
    data[key][":serialized:"] = base64.b64encode(pickle.dumps(Payload(marker))).decode()
    return _rewrite(src, dst, "data", json.dumps(data).encode())


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_a_safely_loaded_model_predicts_as_sb3_load(models, observations, algo):
    cls, path = models[algo]
    reference = cls.load(path, device="cpu")
    loaded = load_sb3_model(path)
    assert loaded.algorithm == algo and not loaded.trusted
    assert type(loaded.model.policy) is type(reference.policy)
    assert loaded.model.policy_kwargs["activation_fn"] is th.nn.Tanh  # rebuilt from the readable kwargs
    assert loaded.model.observation_space == reference.observation_space
    assert loaded.model.action_space == reference.action_space
    assert "lr_schedule" in loaded.substituted and "policy_kwargs" not in loaded.substituted
    assert np.array_equal(loaded.predict(observations), reference.predict(observations, deterministic=True)[0])
    sampled = []
    for model in (loaded.model, reference):  # the same distribution: the same samples from the same seed
        th.manual_seed(3)
        sampled.append(model.predict(observations, deterministic=False)[0])
    assert np.array_equal(*sampled)


@pytest.mark.parametrize("key", ["observation_space", "policy_class", "lr_schedule", "policy_kwargs"])
def test_a_serialized_payload_never_runs(models, tmp_path, observations, key):
    cls, path = models["ppo"]
    marker = tmp_path / "pwned"
    crafted = _with_serialized_payload(path, tmp_path / "crafted.zip", key, marker)
    loaded = load_sb3_model(crafted)  # the readable fields are intact, so the model loads as data
    assert not marker.exists()
    reference = cls.load(path, device="cpu").predict(observations, deterministic=True)[0]
    assert np.array_equal(loaded.predict(observations), reference)
    try:
        load_sb3_model(crafted, trusted=True)  # SB3's own load runs the payload first
    except ValueError:
        pass  # and may then fail on the file object the payload returned
    assert marker.exists()


def test_a_crafted_policy_pth_never_runs(models, tmp_path):
    _, path = models["ppo"]
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    th.save({"mlp_extractor.policy_net.0.weight": Payload(marker)}, buffer)
    crafted = _rewrite(path, tmp_path / "crafted.zip", "policy.pth", buffer.getvalue())
    for trusted in (False, True):  # SB3 >= 2.9 reads weights with weights_only=True even when trusted
        with pytest.raises(UntrustedModelError) as info:
            load_sb3_model(crafted, trusted=trusted)
        message = str(info.value)
        assert "\n" not in message
        assert "objects other than tensors" in message and "--trust-model" in message
    assert not marker.exists()
    with zipfile.ZipFile(crafted) as z:  # the payload is live: a full torch unpickle runs it
        th.load(io.BytesIO(z.read("policy.pth")), weights_only=False)
    assert marker.exists()


def test_an_untrusted_file_that_needs_unpickling_is_a_one_line_error(models, tmp_path, capsys):
    _, path = models["ppo"]
    with zipfile.ZipFile(path) as z:
        data = json.loads(z.read("data"))
    data["observation_space"]["low"] = "[-inf -inf ... -inf]"  # as numpy prints a long array
    crafted = _rewrite(path, tmp_path / "long.zip", "data", json.dumps(data).encode())
    with pytest.raises(UntrustedModelError, match=r"observation_space cannot be rebuilt .* --trust-model"):
        load_sb3_model(crafted)
    data = json.loads(zipfile.ZipFile(path).read("data"))
    data["policy_kwargs"]["activation_fn"] = "<class 'os.system'>"
    crafted = _rewrite(path, tmp_path / "class.zip", "data", json.dumps(data).encode())
    code = cli_main(["eval", str(crafted), "--env", PEG, "--episodes", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "os.system, which a safe load does not construct" in err and "--trust-model" in err


def _vecnormalize(env_id=PEG, **kwargs):
    venv = VecNormalize(DummyVecEnv([lambda: gym.make(env_id)]), clip_obs=5.0, **kwargs)
    venv.reset()
    for _ in range(20):
        venv.step(np.array([venv.action_space.sample()]))
    return venv


@pytest.mark.parametrize("protocol", [4, 5])
def test_vecnormalize_statistics_load_as_data(tmp_path, protocol):
    venv = _vecnormalize()
    path = tmp_path / "vecnormalize.pkl"
    venv.venv, real = None, venv.venv  # as VecNormalize.save pickles itself
    path.write_bytes(pickle.dumps(venv, protocol=protocol))
    venv.venv = real
    safe, trusted = load_obs_normalization(path), load_obs_normalization(path, trusted=True)
    for stats in (safe, trusted):
        assert np.array_equal(stats.mean, venv.obs_rms.mean) and np.array_equal(stats.var, venv.obs_rms.var)
        assert (stats.epsilon, stats.clip_obs) == (venv.epsilon, 5.0)
    obs = np.random.default_rng(1).normal(0, 2, (8, venv.observation_space.shape[0])).astype(np.float32)
    venv.training = False
    assert np.array_equal(safe.apply(obs), venv.normalize_obs(obs))


def test_a_crafted_vecnormalize_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    bare = tmp_path / "bare.pkl"
    bare.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(UntrustedModelError, match=r"holds io.open, not VecNormalize statistics.*--trust-model"):
        load_obs_normalization(bare)
    assert not marker.exists()

    # A genuine file with a payload tucked into its state: the statistics still load, the payload stays data.
    venv = _vecnormalize()
    venv.metadata = {"render_modes": Payload(marker)}
    venv.save(str(tmp_path / "vecnormalize.pkl"))
    stats = load_obs_normalization(tmp_path / "vecnormalize.pkl")
    assert np.array_equal(stats.mean, venv.obs_rms.mean) and not marker.exists()
    load_obs_normalization(tmp_path / "vecnormalize.pkl", trusted=True)
    assert marker.exists()


def test_eval_and_render_read_a_run_directory_as_data(models, tmp_path, capsys):
    """The CLI's default is the safe load, a VecNormalize file next to the model included."""
    _, path = models["ppo"]
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.zip").write_bytes(path.read_bytes())
    marker = tmp_path / "pwned"
    venv = _vecnormalize()
    venv.metadata = {"render_modes": Payload(marker)}
    venv.save(str(run / "vecnormalize.pkl"))
    assert cli_main(["eval", str(run / "model.zip"), "--env", PEG, "--episodes", "1", "--no-progress"]) in (0, 1)
    assert "observations normalized by" in capsys.readouterr().out and not marker.exists()
    assert cli_main(["eval", str(run / "model.zip"), "--env", PEG, "--episodes", "1", "--no-progress",
                     "--trust-model"]) in (0, 1)
    assert marker.exists()


def test_render_of_a_crafted_model_runs_none_of_it(models, tmp_path, capsys):
    _, path = models["ppo"]
    marker = tmp_path / "pwned"
    crafted = _with_serialized_payload(path, tmp_path / "crafted.zip", "action_space", marker)
    size = ["--width", "96", "--height", "72", "--no-progress"]
    assert cli_main(["render", str(crafted), "--env", PEG, "--out", str(tmp_path / "m.mp4"), "--max-steps", "2",
                     *size]) == 0
    assert (tmp_path / "m.mp4").stat().st_size > 0 and not marker.exists()
    data = json.loads(zipfile.ZipFile(path).read("data"))
    data["policy_class"]["__module__"] = "evil.policies"
    crafted = _rewrite(path, tmp_path / "evil.zip", "data", json.dumps(data).encode())
    # auto detection already refuses an unknown policy module; named, the safe load refuses it
    assert cli_main(["render", str(crafted), "--env", PEG, "--algo", "PPO", "--out", str(tmp_path / "e.mp4"),
                     *size]) == 2
    err = capsys.readouterr().err
    assert "'evil.policies'" in err and "--trust-model" in err and not (tmp_path / "e.mp4").exists()


def test_training_reads_the_models_a_config_names_as_data(models, env, tmp_path, observations):
    """DAgger's expert and a residual's base come in through `frozen_policy`: the same loader, the same default."""
    from skillcell.config import ConfigError
    from skillcell.policies.frozen import frozen_policy

    cls, path = models["sac"]
    marker = tmp_path / "pwned"
    crafted = _with_serialized_payload(path, tmp_path / "crafted.zip", "lr_schedule", marker)
    policy = frozen_policy(str(crafted), env, where="dagger.expert")
    assert not marker.exists()
    reference = cls.load(path, device="cpu").predict(observations[0], deterministic=True)[0]
    assert np.array_equal(policy(observations[0]), reference)
    frozen_policy(str(crafted), env, where="dagger.expert", trusted=True)
    assert marker.exists()
    data = json.loads(zipfile.ZipFile(path).read("data"))
    data["policy_kwargs"]["features_extractor_class"] = "<class 'evil.Extractor'>"
    bad = _rewrite(path, tmp_path / "bad.zip", "data", json.dumps(data).encode())
    with pytest.raises(ConfigError, match=r"residual.base: .*evil.Extractor, which a safe load does not construct"):
        frozen_policy(str(bad), env, where="residual.base")
