"""A strict stand-in for CuPy, for checking the device path's host/device discipline on a
machine without a GPU. It is not a GPU and proves nothing about speed or CUDA: it checks that
code handed "device" arrays keeps them on the device and crosses to the host only explicitly.

`DeviceArray` wraps a NumPy array and behaves like `cupy.ndarray` where it matters here:
- implicit conversion to NumPy (`np.asarray`, `np.ascontiguousarray`, assigning into a NumPy
  array, ONNX Runtime's CPU inputs) raises TypeError, as CuPy does; `.get()` is the explicit copy;
- mixing it with NumPy arrays in arithmetic, ufuncs or array functions raises TypeError;
- the module (`install()` puts it in `sys.modules["cupy"]`) offers the NumPy API on device
  arrays; `asarray`/`array`/`ascontiguousarray` upload host arrays (explicit transfers);
- reductions return 0-d device arrays (`bool()`, `int()`, `float()` of them are allowed).
Results are computed by NumPy underneath, so they equal the host path exactly.
"""
from __future__ import annotations

import operator
import sys
import types

import numpy as np

UPLOADS = {"asarray", "array", "ascontiguousarray", "asanyarray"}
transfers = {"to_device": 0, "to_host": 0}


def _is_host_array(x) -> bool:
    return isinstance(x, np.ndarray) and x.ndim > 0


def _unwrap(x, fn: str, allow_host: bool = False):
    if isinstance(x, DeviceArray):
        return x._a
    if _is_host_array(x) and not allow_host:
        raise TypeError(f"cupy_sim: a NumPy array was passed to device function {fn!r} (CuPy refuses this)")
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v, fn, allow_host) for v in x)
    if isinstance(x, slice):
        return slice(*(_unwrap(v, fn, allow_host) for v in (x.start, x.stop, x.step)))
    return x


def _wrap(x):
    if isinstance(x, np.ndarray):
        return DeviceArray(x)
    if isinstance(x, np.generic):
        return DeviceArray(np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


class _Data:
    def __init__(self, a):
        self.ptr = a.__array_interface__["data"][0]


class DeviceArray:
    __slots__ = ("_a",)
    __array_priority__ = 1000

    def __init__(self, a: np.ndarray):
        self._a = a

    # --- what CuPy refuses ------------------------------------------------------------------
    def __array__(self, *args, **kwargs):
        raise TypeError("cupy_sim: implicit conversion to a NumPy array is not allowed; use .get()")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        ins = [_unwrap(x, ufunc.__name__) for x in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(_unwrap(x, ufunc.__name__) for x in kwargs["out"])
        return _wrap(getattr(ufunc, method)(*ins, **kwargs))

    def __array_function__(self, func, types_, args, kwargs):
        return _wrap(func(*_unwrap(list(args), func.__name__), **{k: _unwrap(v, func.__name__)
                                                                   for k, v in kwargs.items()}))

    # --- explicit transfer --------------------------------------------------------------------
    def get(self):
        transfers["to_host"] += 1
        return self._a.copy()

    # --- attributes -----------------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    ndim = property(lambda self: self._a.ndim)
    dtype = property(lambda self: self._a.dtype)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    T = property(lambda self: DeviceArray(self._a.T))
    data = property(lambda self: _Data(self._a))

    def __getattr__(self, name):
        if name.startswith("__"):
            # NumPy probes __array_interface__ / __array_struct__: no implicit way to the host.
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr)

        def method(*args, **kwargs):
            return _wrap(attr(*_unwrap(list(args), name), **{k: _unwrap(v, name) for k, v in kwargs.items()}))
        return method

    def __repr__(self):
        return f"DeviceArray({self._a!r})"

    # --- indexing -------------------------------------------------------------------------------
    def __getitem__(self, key):
        return _wrap(self._a[_unwrap(key, "__getitem__", allow_host=True)])

    def __setitem__(self, key, value):
        self._a[_unwrap(key, "__setitem__", allow_host=True)] = _unwrap(value, "__setitem__")

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(v) for v in self._a)

    def __bool__(self):
        return bool(self._a)

    def __int__(self):
        return int(self._a)

    def __float__(self):
        return float(self._a)

    def __index__(self):
        return operator.index(self._a)


def _binary(op):
    def f(self, other):
        return _wrap(op(self._a, _unwrap(other, op.__name__)))
    return f


def _rbinary(op):
    def f(self, other):
        return _wrap(op(_unwrap(other, op.__name__), self._a))
    return f


def _inplace(op):
    def f(self, other):
        self._a = op(self._a, _unwrap(other, op.__name__))
        return self
    return f


for _name, _op in [("add", operator.add), ("sub", operator.sub), ("mul", operator.mul),
                   ("truediv", operator.truediv), ("floordiv", operator.floordiv), ("mod", operator.mod),
                   ("pow", operator.pow), ("and", operator.and_), ("or", operator.or_), ("xor", operator.xor),
                   ("matmul", operator.matmul), ("lshift", operator.lshift), ("rshift", operator.rshift)]:
    setattr(DeviceArray, f"__{_name}__", _binary(_op))
    setattr(DeviceArray, f"__r{_name}__", _rbinary(_op))
    setattr(DeviceArray, f"__i{_name}__", _inplace(getattr(operator, f"i{_name}")))
for _name, _op in [("lt", operator.lt), ("le", operator.le), ("gt", operator.gt), ("ge", operator.ge),
                   ("eq", operator.eq), ("ne", operator.ne)]:
    setattr(DeviceArray, f"__{_name}__", _binary(_op))
DeviceArray.__neg__ = lambda self: DeviceArray(-self._a)
DeviceArray.__abs__ = lambda self: DeviceArray(abs(self._a))
DeviceArray.__invert__ = lambda self: DeviceArray(~self._a)
DeviceArray.__hash__ = None
DeviceArray.__module__ = "cupy_sim"          # what kernels._xp looks at to say "device array"


def _module() -> types.ModuleType:
    m = types.ModuleType("cupy")
    m.ndarray = DeviceArray

    def get_array_module(*arrays):
        return m if any(isinstance(a, DeviceArray) for a in arrays) else np

    def upload(name):
        fn = getattr(np, name)

        def f(obj, *args, **kwargs):
            if isinstance(obj, DeviceArray):
                return _wrap(fn(obj._a, *args, **kwargs))
            transfers["to_device"] += 1
            return DeviceArray(np.array(fn(obj, *args, **kwargs), copy=True))
        return f

    def module_getattr(name):
        if name in UPLOADS:
            return upload(name)
        obj = getattr(np, name)
        if isinstance(obj, type) or not callable(obj):
            return obj                                   # dtypes, constants

        def f(*args, **kwargs):
            return _wrap(obj(*_unwrap(list(args), name), **{k: _unwrap(v, name) for k, v in kwargs.items()}))
        return f

    class _Stream:
        ptr = 0

        def synchronize(self):
            pass

    m.cuda = types.SimpleNamespace(Device=lambda *a: types.SimpleNamespace(synchronize=lambda: None, id=0),
                                   get_current_stream=_Stream)
    m.get_array_module = get_array_module
    m.asnumpy = lambda a: a.get() if isinstance(a, DeviceArray) else np.asarray(a)
    m.__getattr__ = module_getattr
    return m


def install(monkeypatch) -> types.ModuleType:
    """Make `import cupy` give the stand-in for this test; returns it."""
    m = _module()
    monkeypatch.setitem(sys.modules, "cupy", m)
    transfers.update(to_device=0, to_host=0)
    return m
