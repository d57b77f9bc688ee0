"""Array backends: one source for NumPy and torch.

The model, the world process, the receiver's session state, the action forms and the features are
written once against an *array namespace* ``xp``: the namespace of their inputs, found with
:func:`namespace`. For NumPy arrays (and Python scalars) it is :data:`NUMPY`, whose functions *are*
NumPy's (``NUMPY.where is numpy.where``), so the NumPy backend runs exactly the operations it ran
before the core was made generic, bit for bit. For torch tensors it is a :class:`TorchNamespace`
bound to the tensors' device and floating dtype, giving the same names NumPy code uses
(``where``, ``maximum`` with a scalar, ``clip``, ``amax``, ``errstate`` ...) on torch.

This is the small shim the project needs rather than the full array API (``array-api-compat``):
the core uses ~50 functions, some of them outside the standard (``errstate``, ``ldexp``,
``frexp``, ``out=`` arguments), and the NumPy path must stay NumPy's own functions.

Random draws are the only backend-specific code: ``xp.random(rng, shape)`` and
``xp.standard_normal(rng, shape)`` draw from a NumPy ``Generator`` (the same calls as before) or
from a ``torch.Generator`` on the tensors' device.

torch is imported only when a torch tensor is met (or :func:`torch_namespace` is called).
"""

from __future__ import annotations

import contextlib
import math
import operator
import types
from typing import Any

import numpy as np

__all__ = [
    "NUMPY",
    "namespace",
    "is_torch",
    "torch_namespace",
    "TorchNamespace",
    "to_numpy",
    "BACKENDS",
    "resolve_device",
    "host_min_max",
]

BACKENDS = ("numpy", "torch")


class _NumpyNamespace(types.SimpleNamespace):
    """NumPy's names (the very functions) plus the backend's few extras; pickles as the one
    instance :data:`NUMPY`."""

    def __reduce__(self):
        return (_the_numpy_namespace, ())


def _the_numpy_namespace():
    return NUMPY


def _np_random(rng, shape):
    return rng.random(shape)


def _np_standard_normal(rng, shape):
    return rng.standard_normal(shape)


def _np_astype(x, dtype):
    return np.asarray(x).astype(dtype)


def _np_as_float(x):
    return np.asarray(x, dtype=np.float64)


def _numpy_namespace() -> _NumpyNamespace:
    ns = _NumpyNamespace(**{k: getattr(np, k) for k in dir(np) if not k.startswith("_")})
    ns.name = "numpy"
    ns.float = np.float64  # the floating dtype of the backend: NumPy computes in float64
    ns.device = None
    ns.is_torch = False
    ns.host = True  # data-dependent branches cost nothing (no device to synchronise with)
    ns.random = _np_random
    ns.standard_normal = _np_standard_normal
    ns.astype = _np_astype
    ns.numel = np.size
    ns.copy = operator.methodcaller("copy")  # ndarray.copy (C), not numpy.copy (Python)
    ns.as_float = _np_as_float
    ns.to_host = np.asarray
    return ns


NUMPY = _numpy_namespace()


def is_torch(x: Any) -> bool:
    """Whether ``x`` is a torch tensor (without importing torch)."""
    return type(x).__module__.startswith("torch") and hasattr(x, "device")


_HOST_TYPES = frozenset({np.ndarray, float, int, bool, np.float64, np.float32, np.int64, np.int8, type(None)})


def namespace(*xs: Any):
    """The array namespace of the inputs: a :class:`TorchNamespace` when one is a torch tensor
    (bound to its device and floating dtype), :data:`NUMPY` otherwise."""
    for x in xs:
        if type(x) in _HOST_TYPES:
            continue
        if is_torch(x):
            return torch_namespace(x.device, x.dtype if x.is_floating_point() else None)
    return NUMPY


_LIST_SIZE = 16  # up to this many elements, host_min_max reads a Python list


def host_min_max(x: np.ndarray) -> tuple[Any, Any]:
    """``(x.min(), x.max())`` of a non-empty NumPy array, for comparisons with thresholds.

    A small bool, integer or float64 array (a single round's) is read as a Python list: the same
    values up to the sign of a zero, several times faster than two NumPy reductions. A NaN makes
    the list's sum NaN and falls back to NumPy, which propagates it.
    """
    if x.size <= _LIST_SIZE and (x.dtype == np.float64 or x.dtype.kind in "biu"):
        values = x.tolist() if x.ndim == 1 else x.ravel().tolist()
        total = sum(values)
        if total == total:  # no NaN
            return min(values), max(values)
    return x.min(), x.max()


_TORCH_NAMESPACES: dict[tuple[str, Any], TorchNamespace] = {}


def torch_namespace(device: Any = "cpu", dtype: Any = None) -> TorchNamespace:
    """The torch namespace for ``device`` computing in ``dtype`` (default float64; cached)."""
    import torch

    dev = torch.device(device)
    dt = torch.float64 if dtype is None else dtype
    key = (str(dev), dt)
    ns = _TORCH_NAMESPACES.get(key)
    if ns is None:
        ns = _TORCH_NAMESPACES[key] = TorchNamespace(dev, dt)
    return ns


def resolve_device(device: Any = "auto") -> str:
    """``"auto"``: ``"cuda"`` when available, else ``"cpu"``; ``"cuda"`` without CUDA is a
    ``ValueError``."""
    import torch

    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    name = str(device)
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here; use device='cpu' or 'auto'")
    try:
        torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:k]'; got {device!r}") from exc
    return name


def to_numpy(x: Any) -> Any:
    """A NumPy copy of a tensor (or the input, for anything else); mappings element-wise."""
    if isinstance(x, dict):
        return {k: to_numpy(v) for k, v in x.items()}
    if is_torch(x):
        return x.detach().cpu().numpy()
    return x


class TorchNamespace:
    """NumPy's names on torch tensors of one device and floating dtype (see the module docstring).

    Scalars given where NumPy would broadcast them become tensors of the namespace's dtype.
    """

    name = "torch"
    is_torch = True
    newaxis = None
    pi = math.pi
    inf = math.inf

    def __reduce__(self):
        return (torch_namespace, (str(self.device), self.float))

    def __init__(self, device, dtype):
        import torch

        self.torch = torch
        self.device = device
        self._cpu = device.type == "cpu"
        self.float = dtype
        self.float64 = torch.float64
        self.float32 = torch.float32
        self.int64 = torch.int64
        self.int8 = torch.int8
        self.bool_ = torch.bool
        t = torch
        # same name, same meaning
        for name in (
            "log1p", "log", "log10", "log2", "exp", "expm1", "ceil", "floor", "abs", "sqrt", "isfinite",
            "isinf", "isnan", "fmin", "fmax", "cos", "sin", "sign", "logical_and", "logical_or",
            "logical_not", "square", "tanh",
        ):
            setattr(self, name, getattr(t, name))

    @property
    def host(self) -> bool:
        """Whether data-dependent branches (``if x.any():``) are cheap: on the CPU, yes; on a GPU
        they synchronise the host with the device, and under ``torch.compile`` they break the
        graph, so the code takes its branch-free forms there (same values)."""
        return self._cpu and not self.torch.compiler.is_compiling()

    # -- conversion ----------------------------------------------------------------------------

    def _t(self, x, dtype=None):
        t = self.torch
        if isinstance(x, t.Tensor):
            if dtype is not None and x.dtype != dtype:
                return x.to(dtype)
            if x.device != self.device:
                return x.to(self.device)
            return x
        if isinstance(x, np.ndarray) and dtype is None:
            dtype = self.float if x.dtype.kind == "f" else None
        elif isinstance(x, float) and dtype is None:
            dtype = self.float
        return t.as_tensor(x, dtype=dtype, device=self.device)

    def asarray(self, x, dtype=None):
        return self._t(x, dtype)

    def as_float(self, x):
        return self._t(x, self.float)

    def astype(self, x, dtype):
        return self._t(x).to(dtype)

    def to_host(self, x):
        return to_numpy(x)

    def copy(self, x):
        return x.clone()

    def numel(self, x):
        return x.numel() if isinstance(x, self.torch.Tensor) else np.size(x)

    # -- creation -------------------------------------------------------------------------------

    def _dt(self, dtype):
        return self.float if dtype is None or dtype is float or dtype is np.float64 else dtype

    def zeros(self, shape, dtype=None):
        return self.torch.zeros(shape, dtype=self._dt(dtype), device=self.device)

    def ones(self, shape, dtype=None):
        return self.torch.ones(shape, dtype=self._dt(dtype), device=self.device)

    def empty(self, shape, dtype=None):
        return self.torch.empty(shape, dtype=self._dt(dtype), device=self.device)

    def full(self, shape, value, dtype=None):
        return self.torch.full(shape, value, dtype=self._dt(dtype), device=self.device)

    def arange(self, n, dtype=None):
        return self.torch.arange(n, dtype=dtype, device=self.device)

    def zeros_like(self, x, dtype=None):
        return self.torch.zeros_like(x, dtype=dtype)

    def ones_like(self, x, dtype=None):
        return self.torch.ones_like(x, dtype=dtype)

    def full_like(self, x, value, dtype=None):
        return self.torch.full_like(x, value, dtype=dtype)

    # -- elementwise with NumPy's scalar broadcasting ---------------------------------------------

    def where(self, cond, a, b):
        t = self.torch
        ta, tb = isinstance(a, t.Tensor), isinstance(b, t.Tensor)
        if ta and tb:
            if a.dtype != b.dtype:
                dt = t.promote_types(a.dtype, b.dtype)
                a, b = a.to(dt), b.to(dt)
            return t.where(cond, a, b)
        if ta or tb:  # a Python scalar takes the tensor's dtype (torch.where does it, no tensor made)
            return t.where(cond, a, b)
        return t.where(cond, self._t(a), self._t(b))

    def maximum(self, a, b, out=None):
        if isinstance(b, (int, float)) and isinstance(a, self.torch.Tensor):
            return self.torch.clamp(a, min=b, out=out)
        r = self.torch.maximum(self._t(a), self._t(b))
        return r if out is None else out.copy_(r)

    def minimum(self, a, b, out=None):
        if isinstance(b, (int, float)) and isinstance(a, self.torch.Tensor):
            return self.torch.clamp(a, max=b, out=out)
        r = self.torch.minimum(self._t(a), self._t(b))
        return r if out is None else out.copy_(r)

    def add(self, a, b, out=None):
        return self.torch.add(self._t(a), self._t(b), out=out)

    def multiply(self, a, b, out=None):
        return self.torch.mul(self._t(a), self._t(b), out=out)

    def subtract(self, a, b, dtype=None):
        r = self._t(a) - self._t(b)
        return r if dtype is None else r.to(self._dt(dtype))

    def divide(self, a, b):
        return self._t(a) / self._t(b)

    def power(self, a, b):
        return self.torch.pow(a if isinstance(a, (int, float)) else self._t(a), self._t(b))

    def clip(self, x, lo, hi):
        return self.torch.clamp(self._t(x), lo, hi)

    def ldexp(self, x, e):
        return self.torch.ldexp(x, e)

    def frexp(self, x):
        return self.torch.frexp(x)

    def nextafter(self, x, toward):
        return self.torch.nextafter(x, self.torch.full_like(x, toward))

    def nan_to_num(self, x, nan=0.0, posinf=None, neginf=None):
        return self.torch.nan_to_num(x, nan=nan, posinf=posinf, neginf=neginf)

    # -- reductions and shapes ------------------------------------------------------------------

    def sum(self, x, axis=None, keepdims=False):
        return x.sum() if axis is None else x.sum(dim=axis, keepdim=keepdims)

    def amax(self, x, axis=-1, keepdims=False):
        return self.torch.amax(x, dim=axis, keepdim=keepdims)

    def amin(self, x, axis=-1, keepdims=False):
        return self.torch.amin(x, dim=axis, keepdim=keepdims)

    def mean(self, x, axis=None, keepdims=False):
        return x.mean() if axis is None else x.mean(dim=axis, keepdim=keepdims)

    def argmin(self, x, axis=-1):
        return self.torch.argmin(x, dim=axis)

    def cumsum(self, x, axis=0):
        return self.torch.cumsum(x, dim=axis)

    def concatenate(self, xs, axis=0):
        return self.torch.cat([self._t(x) for x in xs], dim=axis)

    def stack(self, xs, axis=0):
        return self.torch.stack([self._t(x) for x in xs], dim=axis)

    def broadcast_to(self, x, shape):
        return self._t(x).expand(shape)

    def broadcast_arrays(self, *xs):
        return self.torch.broadcast_tensors(*(self._t(x) for x in xs))

    def moveaxis(self, x, src, dst):
        return self.torch.movedim(x, src, dst)

    def ascontiguousarray(self, x):
        return x.contiguous()

    def flatnonzero(self, mask):
        return self.torch.nonzero(mask.reshape(-1)).reshape(-1)

    def any(self, x) -> bool:
        return bool(x.any())

    def all(self, x) -> bool:
        return bool(x.all())

    def shape(self, x):
        return tuple(x.shape) if isinstance(x, self.torch.Tensor) else np.shape(x)

    @staticmethod
    def errstate(**_kwargs):
        return contextlib.nullcontext()

    # -- random draws ---------------------------------------------------------------------------

    def random(self, rng, shape):
        return self.torch.rand(shape, generator=rng, dtype=self.float, device=self.device)

    def standard_normal(self, rng, shape):
        return self.torch.randn(shape, generator=rng, dtype=self.float, device=self.device)

    def generator(self, seed: int | None):
        """A ``torch.Generator`` on the namespace's device, seeded (``None``: from entropy)."""
        g = self.torch.Generator(device=self.device)
        if seed is None:
            g.seed()
        else:
            g.manual_seed(int(seed) & ((1 << 63) - 1))
        return g
