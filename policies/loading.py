"""Loading stable-baselines3 models and `VecNormalize` statistics without running code from the files.

An SB3 ``.zip`` is a JSON ``data`` member plus torch files (``policy.pth``, optimizer states,
``pytorch_variables.pth``). Whatever in ``data`` is not plain JSON (the policy class, the spaces,
schedules, often ``policy_kwargs``) is stored as a cloudpickle under ``:serialized:``, and
``PPO.load`` unpickles it: a crafted file runs its code while loading, before any check (SB3
issue #2281). A ``VecNormalize`` file (``VecNormalize.save``) is a plain pickle, same risk. So
`load_sb3_model` reads models as data unless told the file is trusted:

- every ``:serialized:`` entry of ``data`` is replaced through SB3's own ``custom_objects``
  (which ``json_to_data`` substitutes *instead of* unpickling). What prediction depends on is
  rebuilt exactly from the readable copy SB3 writes beside each pickle: the policy class (the
  algorithm's ``MlpPolicy``, after checking the recorded module), ``policy_kwargs`` (plain values,
  and classes only from an allow-list: torch activations and optimizers, SB3's
  ``FlattenExtractor``) and ``Box`` spaces (dtype, shape, bounds as printed). Objects only
  training uses (schedules, buffer classes, ``train_freq``, action noise, the last rollout's
  observations) get inert stand-ins and are listed in `LoadedModel.substituted`: a model loaded
  this way predicts exactly as ``PPO.load``'s does, but continuing to train it needs a trusted load;
- the torch files are read with ``torch.load(..., weights_only=True)`` (SB3 >= 2.9 does this in
  ``load_from_zip_file``): tensors and plain containers only;
- ``VecNormalize`` files go through a restricted unpickler: the only callables it hands the
  pickle are numpy's array, dtype and scalar reconstructors; every other name the file mentions
  (``VecNormalize``, ``RunningMeanStd``, spaces, ``os.system``) becomes an inert record of its
  arguments and state, which is then checked for the statistics. Nothing the file names is ever
  imported, called or instantiated, yet the file SB3 itself writes still loads. (Whitelisting the
  real SB3 classes would run their ``__setstate__`` and everything their state pickles in turn;
  writing the statistics a second time as ``.npz`` would not read anyone else's ``vecnormalize.pkl``.)

``trusted=True`` (``--trust-model`` on the command line) is SB3's full load, pickles included:
only for files from a trusted source, since it runs any code they contain.
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from skillcell.paths import sha256_file

__all__ = [
    "ALGORITHMS",
    "TRUST_MODEL_HELP",
    "TRUST_NOTE",
    "LoadedModel",
    "ObsNormalization",
    "UntrustedModelError",
    "detect_algorithm",
    "load_obs_normalization",
    "load_sb3_model",
]

#: algorithms that can be loaded, by the name ``--algo`` takes
ALGORITHMS = ("ppo", "sac", "a2c", "td3", "ddpg")

TRUST_NOTE = ("SB3 .zip models and VecNormalize files are read as data (no unpickling) unless loaded with "
              "--trust-model, which unpickles them and so runs any code they contain: trust only models from a "
              "trusted source. Deploy the exported ONNX file, checked against its recorded SHA-256.")

TRUST_MODEL_HELP = ("load the SB3 model and VecNormalize file with full unpickling, which runs any code they "
                    "contain: only for files from a trusted source (default: read them as data)")


class UntrustedModelError(ValueError):
    """A model or statistics file that only an unpickling (trusted) load could read."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}, so it cannot be loaded without unpickling; unpickling runs code from "
                         "the file: pass --trust-model (trusted=True) only if you trust its source")


@dataclass(frozen=True)
class ObsNormalization:
    """`VecNormalize` observation statistics, applied as SB3 applies them."""

    mean: np.ndarray
    var: np.ndarray
    epsilon: float
    clip_obs: float

    def apply(self, obs: np.ndarray) -> np.ndarray:
        """``VecNormalize.normalize_obs`` for a Box observation."""
        out = np.clip((obs - self.mean) / np.sqrt(self.var + self.epsilon), -self.clip_obs, self.clip_obs)
        return out.astype(np.float32)


@dataclass
class LoadedModel:
    """An SB3 model with its observation normalization and provenance.

    ``substituted``: the pickled training-only entries replaced by stand-ins (untrusted load).
    """

    model: Any
    algorithm: str
    path: Path
    sha256: str
    trusted: bool
    obs_norm: ObsNormalization | None = None
    vecnormalize_path: Path | None = None
    vecnormalize_sha256: str | None = None
    substituted: tuple[str, ...] = ()

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        """Raw observation(s) as the policy sees them (through the VecNormalize statistics, if any)."""
        return self.obs_norm.apply(np.asarray(obs, np.float32)) if self.obs_norm is not None else obs

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """The env action for raw observation(s): ``model.predict`` after `normalize`."""
        return self.model.predict(self.normalize(obs), deterministic=deterministic)[0]

    def provenance(self) -> dict[str, Any]:
        return {"kind": "sb3", "path": str(self.path), "algorithm": self.algorithm, "sha256": self.sha256,
                "policy_class": type(self.model.policy).__name__, "trusted": self.trusted,
                "vecnormalize": None if self.vecnormalize_path is None else
                {"path": str(self.vecnormalize_path), "sha256": self.vecnormalize_sha256}}


def _read_data(path: str | Path) -> dict[str, Any]:
    """The JSON ``data`` member of an SB3 zip (reading it runs nothing)."""
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
    except (OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a stable-baselines3 model zip ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a stable-baselines3 model zip (its data member is not a JSON object)")
    return data


def detect_algorithm(path: str | Path) -> str:
    """The SB3 algorithm of a ``.zip``, from its JSON ``data`` member (nothing is unpickled).

    DDPG saves TD3's policy and is reported as ``td3``, which predicts the same.
    """
    data = _read_data(path)
    entry = data.get("policy_class")
    module = str(entry.get("__module__", "")) if isinstance(entry, dict) else ""
    if module.startswith("stable_baselines3.sac"):
        return "sac"
    if module.startswith("stable_baselines3.td3"):
        return "td3"
    if module.startswith("stable_baselines3.common.policies"):
        return "ppo" if "clip_range" in data else "a2c"
    raise ValueError(f"{path}: cannot tell the algorithm from policy module {module!r}; pass --algo")


# ---------------------------------------------------------------------- the model zip


def _serialized(value: Any) -> bool:
    return isinstance(value, dict) and ":serialized:" in value


def _policy_class(data: dict[str, Any], cls: type, path: Path) -> type:
    policy = cls.policy_aliases["MlpPolicy"]
    entry = data.get("policy_class")
    module = entry.get("__module__") if _serialized(entry) else None
    if module != policy.__module__:
        raise UntrustedModelError(path, f"its policy class (module {module!r}) is not {cls.__name__}'s MlpPolicy "
                                        f"({policy.__module__})")
    return policy


_NUMBER = re.compile(r"[-+]?(inf|nan|(\d+\.?\d*|\.\d+)(e[-+]?\d+)?)", re.IGNORECASE)


def _box(data: dict[str, Any], key: str, path: Path):
    """A ``Box`` from the readable fields SB3 stores beside a pickled space: dtype, shape, bounds as printed."""
    entry = data.get(key)
    if not _serialized(entry) or not str(entry.get(":type:", "")).endswith(".spaces.box.Box'>"):
        kind = entry.get(":type:") if isinstance(entry, dict) else type(entry).__name__
        raise UntrustedModelError(path, f"its {key} is not a Box ({kind})")
    try:
        dtype = np.dtype(str(entry["dtype"]))
        shape = tuple(int(n) for n in entry["_shape"])
        bounds = []
        for side in ("low", "high"):
            tokens = str(entry[side]).replace("[", " ").replace("]", " ").split()
            if not tokens or not all(_NUMBER.fullmatch(t) for t in tokens):
                raise ValueError(f"{side} {str(entry[side])[:60]!r} is not printed in full")
            bounds.append(np.array([float(t) for t in tokens], dtype=dtype).reshape(shape))
        return spaces.Box(bounds[0], bounds[1], shape, dtype)
    except (KeyError, TypeError, ValueError) as exc:
        raise UntrustedModelError(path, f"its {key} cannot be rebuilt from the readable fields ({exc})") from None


def _allowed_classes() -> dict[str, type]:
    """Classes ``policy_kwargs`` may name in an untrusted file: constructing them runs no file code."""
    import torch
    from stable_baselines3.common.torch_layers import FlattenExtractor

    activation = torch.nn.modules.activation
    classes = [c for c in vars(activation).values() if isinstance(c, type) and c.__module__ == activation.__name__]
    classes += [c for c in vars(torch.optim).values() if isinstance(c, type) and issubclass(c, torch.optim.Optimizer)]
    classes.append(FlattenExtractor)
    return {f"{c.__module__}.{c.__qualname__}": c for c in classes}


_CLASS_REPR = re.compile(r"<class '([\w.]+)'>")


def _policy_kwargs(entry: dict[str, Any], path: Path) -> dict[str, Any]:
    """``policy_kwargs`` from the readable copy of a pickled one: plain values as they are, class names
    (``<class 'torch.nn.modules.activation.Tanh'>``) from `_allowed_classes`."""
    allowed = _allowed_classes()
    kwargs: dict[str, Any] = {}
    for name, value in entry.items():
        if name.startswith(":"):
            continue
        match = _CLASS_REPR.fullmatch(value) if isinstance(value, str) else None
        if match is not None:
            if match.group(1) not in allowed:
                raise UntrustedModelError(path, f"its policy_kwargs[{name!r}] is {match.group(1)}, which a safe load "
                                                "does not construct")
            value = allowed[match.group(1)]
        kwargs[name] = value
    return kwargs


#: stand-ins for pickled entries only training uses; any other pickled entry becomes None
_TRAINING_STAND_INS: dict[str, Any] = {"learning_rate": 0.0, "clip_range": 0.0, "train_freq": 1}


def _custom_objects(data: dict[str, Any], cls: type, path: Path) -> tuple[dict[str, Any], tuple[str, ...]]:
    """SB3 ``custom_objects`` replacing every pickled entry of ``data``, and the training-only ones replaced."""
    objects: dict[str, Any] = {
        "policy_class": _policy_class(data, cls, path),
        "observation_space": _box(data, "observation_space", path),
        "action_space": _box(data, "action_space", path),
        "env": None,  # a stored env would be built (gym.make of whatever id the file names)
    }
    substituted = []
    for key, value in data.items():
        if key in objects or not _serialized(value):
            continue
        if key == "policy_kwargs":
            objects[key] = _policy_kwargs(value, path)
            continue
        objects[key] = _TRAINING_STAND_INS.get(key)
        substituted.append(key)
        if key.endswith("_buffer_class"):  # None: SB3 picks its default buffer, whose kwargs these are not
            objects[key.replace("_class", "_kwargs")] = {}
    return objects, tuple(substituted)


def load_sb3_model(path: str | Path, *, algorithm: str = "auto", trusted: bool = False,
                   vecnormalize: str | Path | None = None) -> LoadedModel:
    """Loads an SB3 ``.zip`` (PPO, SAC, A2C, TD3, DDPG) on the CPU, and optionally its VecNormalize statistics.

    Without ``trusted`` nothing in the files is unpickled (module docstring); a file that cannot be
    read that way is an `UntrustedModelError`. ``trusted=True`` is ``PPO.load`` etc. as they are:
    it runs any code the files contain. Other bad files are a one-line `ValueError`.
    """
    import stable_baselines3 as sb3

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such model file")
    algorithm = detect_algorithm(path) if algorithm == "auto" else algorithm.lower()
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)} or auto, got {algorithm!r}")
    cls = getattr(sb3, algorithm.upper())
    objects, substituted = (None, ()) if trusted else _custom_objects(_read_data(path), cls, path)
    try:
        model = cls.load(path, device="cpu", custom_objects=objects)
    except (ValueError, KeyError, TypeError, RuntimeError, AssertionError, AttributeError, OSError, ImportError,
            EOFError, pickle.UnpicklingError) as exc:  # the last three: a trusted load's pickles
        if isinstance(exc, pickle.UnpicklingError) and str(exc).startswith("Weights only load failed"):
            # torch's weights_only refusal (a multi-page message): a .pth member pickles more than tensors
            raise UntrustedModelError(path, "a .pth member holds objects other than tensors") from None
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ValueError(f"{path}: not a loadable {algorithm.upper()} model ({first})") from None
    loaded = LoadedModel(model, algorithm, path, sha256_file(path), trusted, substituted=substituted)
    if vecnormalize is not None:
        loaded.vecnormalize_path = Path(vecnormalize)
        loaded.obs_norm = load_obs_normalization(vecnormalize, trusted=trusted)
        loaded.vecnormalize_sha256 = sha256_file(vecnormalize)
        shape = model.observation_space.shape
        if loaded.obs_norm is not None and loaded.obs_norm.mean.shape != shape:
            raise ValueError(f"{vecnormalize}: statistics of shape {loaded.obs_norm.mean.shape}, the model observes "
                             f"{shape}")
    return loaded


# ---------------------------------------------------------------------- VecNormalize statistics


class _Inert:
    """What a restricted unpickle makes of any name the file mentions: its arguments and state, nothing run."""

    qualname = ""

    def __new__(cls, *args: Any, **kwargs: Any):
        obj = super().__new__(cls)
        obj.args, obj.state = args, None
        return obj

    def __init__(self, *args: Any, **kwargs: Any):
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _numpy_reconstructors() -> dict[tuple[str, str], Any]:
    """numpy's own reconstructors, under the names its pickles give them (numpy 1 and 2 spell the module
    differently), taken from numpy's ``__reduce__`` so that no private module is imported."""
    found = [np.ndarray, np.dtype, np.zeros(1).__reduce__()[0], np.float64(0).__reduce__()[0],
             np.zeros(1).__reduce_ex__(5)[0]]
    names = {}
    for obj in found:
        for module in {obj.__module__, obj.__module__.replace("numpy._core", "numpy.core"),
                       obj.__module__.replace("numpy.core", "numpy._core")}:
            names[(module, obj.__name__)] = obj
    return names


class _StatsUnpickler(pickle.Unpickler):
    def __init__(self, file):
        super().__init__(file)
        self._numpy = _numpy_reconstructors()
        self._inert: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._numpy:
            return self._numpy[(module, name)]
        qualname = f"{module}.{name}"
        if qualname not in self._inert:
            self._inert[qualname] = type("Inert", (_Inert,), {"qualname": qualname})
        return self._inert[qualname]


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _safe_obs_normalization(path: Path) -> ObsNormalization | None:
    from stable_baselines3.common.running_mean_std import RunningMeanStd
    from stable_baselines3.common.vec_env import VecNormalize

    try:
        with open(path, "rb") as f:
            root = _StatsUnpickler(f).load()
    except Exception as exc:  # any malformed pickle: the restricted unpickler has run nothing of it
        raise ValueError(f"{path}: not a VecNormalize file ({type(exc).__name__}: {str(exc)[:120]})") from None
    state = root.state if isinstance(root, _Inert) and root.qualname == _qualname(VecNormalize) else None
    if not isinstance(state, dict):
        what = root.qualname if isinstance(root, _Inert) else type(root).__name__
        raise UntrustedModelError(path, f"it holds {what[:120]}, not VecNormalize statistics")
    if not state.get("norm_obs", False):
        return None
    rms = state.get("obs_rms")
    if isinstance(rms, dict):
        raise ValueError(f"{path}: dict observations are not supported")
    rms_state = rms.state if isinstance(rms, _Inert) and rms.qualname == _qualname(RunningMeanStd) else None
    try:
        mean, var = (np.asarray(rms_state[k], dtype=np.float64) for k in ("mean", "var"))
        epsilon, clip_obs = float(state["epsilon"]), float(state["clip_obs"])
    except (TypeError, KeyError, ValueError):
        raise ValueError(f"{path}: its VecNormalize holds no readable observation statistics") from None
    if mean.shape != var.shape or not (np.isfinite(mean).all() and np.isfinite(var).all() and (var >= 0).all()):
        raise ValueError(f"{path}: observation statistics are not finite means and non-negative variances "
                         "of one shape")
    return ObsNormalization(mean, var, epsilon, clip_obs)


def _trusted_obs_normalization(path: Path) -> ObsNormalization | None:
    from stable_baselines3.common.vec_env import VecNormalize

    with open(path, "rb") as f:
        stats = pickle.load(f)  # trusted=True: the caller vouches for the file
    if not isinstance(stats, VecNormalize):
        raise ValueError(f"{path}: expected a pickled VecNormalize, got {type(stats).__name__}")
    if not stats.norm_obs:
        return None
    if isinstance(stats.obs_rms, dict):
        raise ValueError(f"{path}: dict observations are not supported")
    return ObsNormalization(np.asarray(stats.obs_rms.mean, np.float64), np.asarray(stats.obs_rms.var, np.float64),
                            float(stats.epsilon), float(stats.clip_obs))


def load_obs_normalization(path: str | Path, *, trusted: bool = False) -> ObsNormalization | None:
    """The observation statistics of a ``VecNormalize.save`` file (None when it does not normalize observations).

    Without ``trusted`` the file is read by a restricted unpickler that runs nothing from it (module docstring).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such VecNormalize file")
    return _trusted_obs_normalization(path) if trusted else _safe_obs_normalization(path)
