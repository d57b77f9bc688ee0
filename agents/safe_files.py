"""Validation of the safe files (JSON + safetensors) before anything they claim is allocated.

The safe format exists so that a shared run can be loaded without trusting its author; this module
makes sure nothing a file only *claims* is trusted either:

* JSON is read with a size limit (:data:`MAX_JSON_BYTES`) and a nesting-depth limit
  (:data:`MAX_JSON_DEPTH`, checked before parsing: a 100,000-deep document is a ``ValueError``, not
  a ``RecursionError``); ``NaN`` / ``Infinity`` literals parse but every numeric field is checked.
* A safetensors header (8 bytes little-endian length + JSON) is read without the tensor data and
  checked: known dtypes, non-negative shapes, data offsets that match the shapes and lie inside the
  file (:func:`read_safetensors_header`).
* ``policy.json``'s schema (:func:`validate_policy_info`): types, ranges, a chain of layers whose
  sizes agree with each other and stay within the documented limits :data:`MAX_LAYER_UNITS`,
  :data:`MAX_HIDDEN_LAYERS` and :data:`MAX_POLICY_PARAMETERS`, normalisation statistics with a
  finite mean and a finite variance >= 0; :func:`check_actor_header` then compares the
  safetensors header's shapes with the architecture before any tensor is read, and
  :func:`check_finite_tensors` refuses NaN / inf weights.

Every refusal is one ``ValueError`` whose message names the file and the field
(``"<file>: field architecture.policy_net[2].linear: ..."``).
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_SAFETENSORS_HEADER_BYTES",
    "MAX_LAYER_UNITS",
    "MAX_HIDDEN_LAYERS",
    "MAX_POLICY_PARAMETERS",
    "load_json_file",
    "loads_json_limited",
    "read_safetensors_header",
    "validate_policy_info",
    "validate_architecture",
    "validate_normalization",
    "check_actor_header",
    "check_finite_tensors",
    "mlp_parameters",
    "field_error",
]

MAX_JSON_BYTES = 8 * 1024 * 1024  # a policy.json / run.json / marl.json larger than 8 MiB is refused (real ones: < 1 MiB)
MAX_JSON_DEPTH = 64  # nesting of arrays / objects; real files nest at most ~8 deep
MAX_SAFETENSORS_HEADER_BYTES = 1024 * 1024  # the JSON header of a safetensors file (real ones: a few KiB)
# The network size limits (train.py's --net-arch and the multi-agent --hidden / --depth obey the same):
MAX_LAYER_UNITS = 8192  # units of one layer (also the largest observation / action size accepted)
MAX_HIDDEN_LAYERS = 32  # hidden layers of one network
MAX_POLICY_PARAMETERS = 2**25  # 33.5 M parameters (134 MB of float32) for one network

_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_ACTIVATIONS = ("relu", "tanh", "elu", "silu")


def field_error(path: str | os.PathLike, field: str, problem: str) -> ValueError:
    """The one error every refusal is: ``<path>: field <field>: <problem>``."""
    return ValueError(f"{path}: field {field}: {problem}")


# ---------------------------------------------------------------------------------------------
# JSON with limits


def _json_depth(data: bytes) -> int:
    """Largest nesting depth of ``[`` / ``{`` outside strings (an over-estimate on broken JSON)."""
    stripped = _STRING.sub(b'""', data)
    arr = np.frombuffer(stripped, dtype=np.uint8)
    if arr.size == 0:
        return 0
    step = ((arr == 0x5B) | (arr == 0x7B)).astype(np.int8) - ((arr == 0x5D) | (arr == 0x7D)).astype(np.int8)
    return int(np.cumsum(step, dtype=np.int32).max(initial=0))


def loads_json_limited(data: bytes, source: str | os.PathLike, what: str = "JSON file",
                       max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON ``data`` with the depth limit; ``ValueError`` naming ``source`` otherwise."""
    if len(data) > MAX_JSON_BYTES:
        raise ValueError(f"{source}: {what} is {len(data)} bytes; at most {MAX_JSON_BYTES} are read")
    depth = _json_depth(data)
    if depth > max_depth:
        raise ValueError(f"{source}: {what} nests {depth} levels deep; at most {max_depth} are accepted")
    try:
        text = data.decode("utf-8")
        return json.loads(text)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{source}: corrupt {what}: not UTF-8 ({exc})") from None
    except (json.JSONDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{source}: corrupt {what}: {exc}") from None


def load_json_file(path: str | os.PathLike, what: str = "JSON file", max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Read and parse a JSON file with the size and depth limits. ``FileNotFoundError`` if missing,
    ``ValueError`` naming the path for anything else (unreadable, too large, too deep, not JSON)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise ValueError(f"{path}: {what} is {size} bytes; at most {MAX_JSON_BYTES} are read")
        with open(path, "rb") as fh:
            data = fh.read(MAX_JSON_BYTES + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the {what}: {exc}") from None
    return loads_json_limited(data, path, what, max_depth)


# ---------------------------------------------------------------------------------------------
# Checked values


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int_in(path, field: str, v: Any, lo: int, hi: int) -> int:
    if not _is_int(v):
        raise field_error(path, field, f"must be an integer; got {type(v).__name__} {_short(v)}")
    if not lo <= v <= hi:
        raise field_error(path, field, f"must be in [{lo}, {hi}]; got {_short(v)}")
    return v


def _finite(path, field: str, v: Any, *, minimum: float | None = None, strict: bool = False) -> float:
    if not _is_real(v):
        raise field_error(path, field, f"must be a number; got {type(v).__name__} {_short(v)}")
    try:
        f = float(v)
    except OverflowError:
        raise field_error(path, field, f"must be a finite number; got {_short(v)}") from None
    if not math.isfinite(f):
        raise field_error(path, field, f"must be finite; got {f}")
    if minimum is not None and (f < minimum or (strict and f == minimum)):
        raise field_error(path, field, f"must be {'>' if strict else '>='} {minimum}; got {f}")
    return f


def _finite_list(path, field: str, v: Any, length: int, *, minimum: float | None = None,
                 strict: bool = False) -> list[float]:
    if not isinstance(v, list):
        raise field_error(path, field, f"must be a list of {length} numbers; got {type(v).__name__}")
    if len(v) != length:
        raise field_error(path, field, f"must hold {length} numbers; got {len(v)}")
    return [_finite(path, f"{field}[{i}]", x, minimum=minimum, strict=strict) for i, x in enumerate(v)]


def _dict(path, field: str, v: Any) -> dict:
    if not isinstance(v, dict):
        raise field_error(path, field, f"must be an object; got {type(v).__name__}")
    return v


def _short(v: Any) -> str:
    try:
        s = repr(v)
    except Exception:  # noqa: BLE001 - only for the message (an int too large to print, ...)
        s = f"<{type(v).__name__} that cannot be printed>"
    return s if len(s) <= 60 else s[:57] + "..."


def mlp_parameters(sizes: list[int]) -> int:
    """Parameters of a chain of linear layers ``sizes[0] -> sizes[1] -> ...`` (weights + biases)."""
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


# ---------------------------------------------------------------------------------------------
# policy.json


def validate_architecture(arch: Any, path: str | os.PathLike, field: str = "architecture") -> dict[str, Any]:
    """Check the actor description of ``policy.json`` (no allocation). Returns a normalised copy:
    ``{"obs_dim", "action_dim", "layers": [("linear", in, out) | ("activation", name)], "action_net":
    (in, out), "action_low", "action_high"}``."""
    arch = _dict(path, field, arch)
    if arch.get("kind") != "sb3.ActorCriticPolicy.mlp":
        raise field_error(path, f"{field}.kind", f"must be 'sb3.ActorCriticPolicy.mlp'; got {_short(arch.get('kind'))}")
    if arch.get("squash_output", False) is not False:
        raise field_error(path, f"{field}.squash_output", f"must be false (squashed outputs are not supported); "
                                                          f"got {_short(arch.get('squash_output'))}")
    if arch.get("distribution", "diag_gaussian") != "diag_gaussian":
        raise field_error(path, f"{field}.distribution", f"must be 'diag_gaussian'; got {_short(arch.get('distribution'))}")
    for key in ("obs_dim", "action_dim", "policy_net", "action_net", "action_low", "action_high"):
        if key not in arch:
            raise field_error(path, f"{field}.{key}", "is missing")
    obs_dim = _int_in(path, f"{field}.obs_dim", arch["obs_dim"], 1, MAX_LAYER_UNITS)
    action_dim = _int_in(path, f"{field}.action_dim", arch["action_dim"], 1, MAX_LAYER_UNITS)
    net = arch["policy_net"]
    if not isinstance(net, list):
        raise field_error(path, f"{field}.policy_net", f"must be a list of layers; got {type(net).__name__}")
    if len(net) > 2 * MAX_HIDDEN_LAYERS:
        raise field_error(path, f"{field}.policy_net", f"holds {len(net)} layers; at most {2 * MAX_HIDDEN_LAYERS} "
                                                       f"({MAX_HIDDEN_LAYERS} linear + activation pairs)")
    layers: list[tuple] = []
    width = obs_dim
    sizes = [obs_dim]
    for i, layer in enumerate(net):
        f = f"{field}.policy_net[{i}]"
        if not isinstance(layer, dict) or len(layer) != 1:
            raise field_error(path, f, f"must be {{'linear': [in, out]}} or {{'activation': name}}; got {_short(layer)}")
        if "linear" in layer:
            pair = layer["linear"]
            if not isinstance(pair, list) or len(pair) != 2:
                raise field_error(path, f + ".linear", f"must be [in_features, out_features]; got {_short(pair)}")
            n_in = _int_in(path, f + ".linear[0]", pair[0], 1, MAX_LAYER_UNITS)
            n_out = _int_in(path, f + ".linear[1]", pair[1], 1, MAX_LAYER_UNITS)
            if n_in != width:
                raise field_error(path, f + ".linear[0]", f"is {n_in} but the layer before gives {width} features")
            layers.append(("linear", n_in, n_out))
            width = n_out
            sizes.append(n_out)
        elif "activation" in layer:
            name = layer["activation"]
            if name not in _ACTIVATIONS:
                raise field_error(path, f + ".activation", f"must be one of {_ACTIVATIONS}; got {_short(name)}")
            layers.append(("activation", name))
        else:
            raise field_error(path, f, f"must be {{'linear': [in, out]}} or {{'activation': name}}; got {_short(layer)}")
    if len(sizes) - 1 > MAX_HIDDEN_LAYERS:
        raise field_error(path, f"{field}.policy_net", f"has {len(sizes) - 1} linear layers; at most {MAX_HIDDEN_LAYERS}")
    pair = arch["action_net"]
    if not isinstance(pair, list) or len(pair) != 2:
        raise field_error(path, f"{field}.action_net", f"must be [in_features, out_features]; got {_short(pair)}")
    a_in = _int_in(path, f"{field}.action_net[0]", pair[0], 1, MAX_LAYER_UNITS)
    a_out = _int_in(path, f"{field}.action_net[1]", pair[1], 1, MAX_LAYER_UNITS)
    if a_in != width:
        raise field_error(path, f"{field}.action_net[0]", f"is {a_in} but the policy net gives {width} features")
    if a_out != action_dim:
        raise field_error(path, f"{field}.action_net[1]", f"is {a_out} but action_dim is {action_dim}")
    n_params = mlp_parameters(sizes + [a_out])
    if n_params > MAX_POLICY_PARAMETERS:
        raise field_error(path, f"{field}.policy_net", f"describes {n_params} parameters; at most "
                                                       f"{MAX_POLICY_PARAMETERS} are loaded")
    low = _finite_list(path, f"{field}.action_low", arch["action_low"], action_dim)
    high = _finite_list(path, f"{field}.action_high", arch["action_high"], action_dim)
    for i, (lo, hi) in enumerate(zip(low, high)):
        if lo > hi:
            raise field_error(path, f"{field}.action_low[{i}]", f"{lo} is above action_high[{i}] = {hi}")
    return {"obs_dim": obs_dim, "action_dim": action_dim, "layers": layers, "action_net": (a_in, a_out),
            "action_low": low, "action_high": high}


def validate_normalization(spec: Any, obs_dim: int, path: str | os.PathLike,
                           field: str = "normalization") -> dict[str, Any]:
    """Check the saved ``VecNormalize`` statistics: finite mean, finite variance >= 0, epsilon > 0, ..."""
    spec = _dict(path, field, spec)
    norm = spec.get("norm_obs", False)
    if not isinstance(norm, bool):
        raise field_error(path, f"{field}.norm_obs", f"must be true or false; got {_short(norm)}")
    if not norm:
        return {"norm_obs": False}
    for key in ("mean", "var", "epsilon", "clip_obs"):
        if key not in spec:
            raise field_error(path, f"{field}.{key}", "is missing")
    out = {
        "norm_obs": True,
        "mean": _finite_list(path, f"{field}.mean", spec["mean"], obs_dim),
        "var": _finite_list(path, f"{field}.var", spec["var"], obs_dim, minimum=0.0),
        "epsilon": _finite(path, f"{field}.epsilon", spec["epsilon"], minimum=0.0, strict=True),
        "clip_obs": _finite(path, f"{field}.clip_obs", spec["clip_obs"], minimum=0.0, strict=True),
    }
    if "count" in spec:
        out["count"] = _finite(path, f"{field}.count", spec["count"], minimum=0.0)
    return out


_RUN_STRINGS = ("env_id", "action_form", "features")


def validate_policy_info(info: Any, path: str | os.PathLike, policy_format: str) -> dict[str, Any]:
    """Check a parsed ``policy.json`` against its schema; returns it unchanged (a ``ValueError``
    naming ``path`` and the field otherwise)."""
    if not isinstance(info, dict):
        raise ValueError(f"{path} is not a jmsra_env policy description (expected a JSON object with format "
                         f"{policy_format!r}; got {type(info).__name__})")
    if info.get("format") != policy_format:
        raise ValueError(f"{path} is not a jmsra_env policy description: field format must be "
                         f"{policy_format!r}; got {_short(info.get('format'))}")
    for key in ("num_timesteps", "files", "architecture", "normalization", "run"):
        if key not in info:
            raise field_error(path, key, "is missing (the policy description lacks it)")
    _int_in(path, "num_timesteps", info["num_timesteps"], 0, 2**63 - 1)
    files = _dict(path, "files", info["files"])
    for name, digest in files.items():
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise field_error(path, f"files.{name}", f"must be a SHA-256 hex digest; got {_short(digest)}")
    arch = validate_architecture(info["architecture"], path)
    validate_normalization(info["normalization"], arch["obs_dim"], path)
    run = _dict(path, "run", info["run"])
    for key in _RUN_STRINGS:
        if key not in run:
            raise field_error(path, f"run.{key}", "is missing (the policy description lacks the run field)")
        if not isinstance(run[key], str):
            raise field_error(path, f"run.{key}", f"must be a string; got {type(run[key]).__name__}")
    if "action_encoding" in run and not isinstance(run["action_encoding"], str):
        raise field_error(path, "run.action_encoding", f"must be a string; got {type(run['action_encoding']).__name__}")
    _dict(path, "run.config", run.get("config"))
    return info


# ---------------------------------------------------------------------------------------------
# safetensors


def read_safetensors_header(path: str | os.PathLike) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{name: (dtype, shape)}`` of a safetensors file, read from its header alone (8 bytes
    little-endian length + JSON; no tensor data is read) and checked: known dtypes, shapes of
    non-negative integers, data offsets that match the shapes and lie inside the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ValueError(f"{path}: field header: the file is {size} bytes, shorter than a safetensors header")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_SAFETENSORS_HEADER_BYTES or n > size - 8:
                raise field_error(path, "header", f"claims {n} bytes of header; the file has {size - 8} after the "
                                                  f"length and at most {MAX_SAFETENSORS_HEADER_BYTES} are read")
            data = fh.read(n)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the weights: {exc}") from None
    header = loads_json_limited(data, path, "safetensors header", max_depth=4)
    header = _dict(path, "header", header)
    body = size - 8 - n
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        f = f"header.{name}"
        entry = _dict(path, f, entry)
        dtype = entry.get("dtype")
        if dtype not in _DTYPE_BYTES:
            raise field_error(path, f + ".dtype", f"must be one of {sorted(_DTYPE_BYTES)}; got {_short(dtype)}")
        shape = entry.get("shape")
        if not isinstance(shape, list) or len(shape) > 8:
            raise field_error(path, f + ".shape", f"must be a list of at most 8 sizes; got {_short(shape)}")
        dims = tuple(_int_in(path, f"{f}.shape[{i}]", d, 0, 2**40) for i, d in enumerate(shape))
        offsets = entry.get("data_offsets")
        if not isinstance(offsets, list) or len(offsets) != 2:
            raise field_error(path, f + ".data_offsets", f"must be [begin, end]; got {_short(offsets)}")
        begin = _int_in(path, f + ".data_offsets[0]", offsets[0], 0, body)
        end = _int_in(path, f + ".data_offsets[1]", offsets[1], begin, body)
        nbytes = _DTYPE_BYTES[dtype] * math.prod(dims)
        if end - begin != nbytes:
            raise field_error(path, f + ".data_offsets", f"span {end - begin} bytes but shape {list(dims)} of "
                                                         f"{dtype} needs {nbytes}")
        out[name] = (dtype, dims)
    return out


def check_actor_header(header: Mapping[str, tuple[str, tuple[int, ...]]], arch: Mapping[str, Any],
                       path: str | os.PathLike) -> list[str]:
    """Compare the safetensors header with a validated architecture (:func:`validate_architecture`):
    every actor tensor present, float32, of the shape the architecture gives. Returns the names of
    the actor's tensors (what has to be read)."""
    want: dict[str, tuple[int, ...]] = {}
    for i, layer in enumerate(arch["layers"]):
        if layer[0] == "linear":
            _, n_in, n_out = layer
            want[f"mlp_extractor.policy_net.{i}.weight"] = (n_out, n_in)
            want[f"mlp_extractor.policy_net.{i}.bias"] = (n_out,)
    a_in, a_out = arch["action_net"]
    want["action_net.weight"] = (a_out, a_in)
    want["action_net.bias"] = (a_out,)
    want["log_std"] = (arch["action_dim"],)
    extra = sorted(k for k in header if k.startswith("mlp_extractor.policy_net.") and k not in want)
    if extra:
        raise field_error(path, f"header.{extra[0]}", "is a policy-net tensor the architecture does not describe")
    for name, shape in want.items():
        if name not in header:
            raise field_error(path, f"header.{name}", "is missing (the architecture needs it)")
        dtype, got = header[name]
        if dtype != "F32":
            raise field_error(path, f"header.{name}.dtype", f"must be F32; got {dtype}")
        if tuple(got) != shape:
            raise field_error(path, f"header.{name}.shape", f"is {list(got)} but the architecture gives {list(shape)}")
    return list(want)


def check_finite_tensors(tensors: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Refuse NaN / inf weights (torch tensors or arrays), naming the tensor."""
    import torch

    for name, t in tensors.items():
        t = torch.as_tensor(t)
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise field_error(path, name, "holds NaN or infinite values")


# ---------------------------------------------------------------------------------------------
# The multi-agent run format (marl.json + actor.safetensors)


def validate_marl_network(hp: Mapping[str, Any], n_features: int, path: str | os.PathLike,
                          field: str = "marl") -> None:
    """The actor's ``hidden`` / ``depth`` within the size limits (before the network is built)."""
    hidden = _int_in(path, f"{field}.hidden", hp.get("hidden"), 1, MAX_LAYER_UNITS)
    depth = _int_in(path, f"{field}.depth", hp.get("depth"), 1, MAX_HIDDEN_LAYERS)
    n_params = mlp_parameters([n_features] + [hidden] * depth + [4])
    if n_params > MAX_POLICY_PARAMETERS:
        raise field_error(path, f"{field}.hidden", f"hidden={hidden} x depth={depth} describes {n_params} "
                                                   f"parameters; at most {MAX_POLICY_PARAMETERS} are loaded")


def validate_feature_stats(stats: Any, sizes: Mapping[str, int], path: str | os.PathLike,
                           field: str = "feature_stats") -> dict[str, list[float]]:
    """Standardisation statistics: each ``<name>_mean`` finite, each ``<name>_std`` finite and > 0,
    of the sizes given (``{"agent_mean": F, ...}``)."""
    stats = _dict(path, field, stats)
    out = {}
    for key, n in sizes.items():
        if key not in stats:
            raise field_error(path, f"{field}.{key}", "is missing")
        positive = key.endswith("_std")
        out[key] = _finite_list(path, f"{field}.{key}", stats[key], n, minimum=0.0 if positive else None,
                                strict=positive)
    return out


def check_tensor_shapes(header: Mapping[str, tuple[str, tuple[int, ...]]], expected: Mapping[str, tuple[int, ...]],
                        path: str | os.PathLike) -> None:
    """The safetensors header holds exactly the ``expected`` float32 tensors and shapes."""
    for name in sorted(set(header) - set(expected)):
        raise field_error(path, f"header.{name}", "is a tensor the network does not have")
    for name, shape in expected.items():
        if name not in header:
            raise field_error(path, f"header.{name}", "is missing (the network needs it)")
        dtype, got = header[name]
        if dtype != "F32":
            raise field_error(path, f"header.{name}.dtype", f"must be F32; got {dtype}")
        if tuple(got) != tuple(shape):
            raise field_error(path, f"header.{name}.shape", f"is {list(got)} but the network has {list(shape)}")
