"""A restricted unpickler for SMPL model files and HMR2 result files.

The official SMPL `.pkl` files are Python-2 pickles holding chumpy arrays (`chumpy.ch.Ch`) and a
scipy sparse joint regressor. chumpy does not import on current numpy, and a general pickle can
run arbitrary code, so this module never imports the classes a file names. It resolves only a
short allow-list: numpy's array reconstruction helpers, plain containers, and inert stand-ins for
chumpy and scipy.sparse objects that are turned into numpy arrays after loading. Anything else
(`os.system`, `builtins.eval`, ...) raises `UnsafePickleError`.
"""

from __future__ import annotations

import copyreg
import importlib
import io
import pickle
from collections import OrderedDict
from typing import Any

import numpy as np


class UnsafePickleError(ValueError):
    """A pickle names a class or function outside the allow-list (it could run code)."""


class PickleFormatError(ValueError):
    """A file that is not a readable pickle / npy / npz (truncated, damaged or of another kind)."""


class _Stub:
    """Inert stand-in for a chumpy or scipy.sparse object: it only stores its pickled state."""

    _kind = "object"

    def __init__(self, *args: Any) -> None:
        self._args = args
        self._state: Any = None

    def __setstate__(self, state: Any) -> None:
        self._state = state


class _ChumpyStub(_Stub):
    _kind = "chumpy"


class _SparseStub(_Stub):
    _kind = "sparse"


def _numpy_attr(name: str) -> Any:
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise UnsafePickleError(f"numpy helper {name} not available")


def _frombuffer(*args: Any) -> Any:
    for module in ("numpy._core.numeric", "numpy.core.numeric"):
        try:
            return importlib.import_module(module)._frombuffer(*args)
        except (ImportError, AttributeError):
            continue
    raise UnsafePickleError("numpy _frombuffer not available")


def _safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    # copyreg._reconstructor would call base.__init__(obj, state): only allow the inert case.
    if isinstance(cls, type) and issubclass(cls, _Stub) and base is object:
        return cls.__new__(cls)
    if cls is np.ndarray or (isinstance(cls, type) and issubclass(cls, np.ndarray)):
        return copyreg._reconstructor(cls, base, state)
    raise UnsafePickleError(f"refusing to reconstruct {cls!r} from {base!r}")


_NUMPY_MODULES = ("numpy", "numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric",
                  "numpy._core.numeric", "numpy.dtypes")


_SAFE_BUILTINS = {"object": object, "set": set, "frozenset": frozenset, "slice": slice, "complex": complex}


class SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module in _NUMPY_MODULES:
            if name == "ndarray":
                return np.ndarray
            if name == "dtype":
                return np.dtype
            if name in ("_reconstruct", "scalar"):
                return _numpy_attr(name)
            if name == "_frombuffer":
                return _frombuffer
            if module == "numpy.dtypes" and name.endswith("DType"):
                return getattr(importlib.import_module("numpy.dtypes"), name)
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return _safe_reconstructor
        if module in ("__builtin__", "builtins") and name in _SAFE_BUILTINS:
            return _SAFE_BUILTINS[name]
        if module == "_codecs" and name == "encode":  # how protocol-2 pickles store bytes (text -> bytes only)
            import codecs

            return codecs.encode
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module.split(".")[0] == "chumpy":
            return _ChumpyStub
        if module.startswith("scipy.sparse") and name in ("csc_matrix", "csr_matrix", "coo_matrix"):
            return type(name, (_SparseStub,), {"_format": name[:3]})
        raise UnsafePickleError(
            f"the file asks to load '{module}.{name}', which is not allowed: only numpy arrays, chumpy and "
            "scipy.sparse data are accepted (a pickle naming other code could run it). Convert the file with "
            "the tool that made it, or use an .npz body model."
        )


def _to_numpy(obj: Any) -> Any:
    """Replace stand-ins with numpy arrays, recursively through dicts, lists and tuples."""
    if isinstance(obj, _ChumpyStub):
        state = obj._state if isinstance(obj._state, dict) else {}
        if "x" in state:
            return np.asarray(_to_numpy(state["x"]))
        raise PickleFormatError("unsupported chumpy object in the file (no stored value 'x'); convert it with chumpy first")
    if isinstance(obj, _SparseStub):
        state = obj._state if isinstance(obj._state, dict) else {}
        shape = tuple(state.get("_shape") or state.get("shape") or ())
        fmt = getattr(obj, "_format", "csc")
        data = np.asarray(_to_numpy(state.get("data")))
        if fmt == "coo":
            dense = np.zeros(shape, dtype=data.dtype)
            np.add.at(dense, (np.asarray(state["row"]), np.asarray(state["col"])), data)
            return dense
        indices = np.asarray(_to_numpy(state.get("indices")))
        indptr = np.asarray(_to_numpy(state.get("indptr")))
        dense = np.zeros(shape, dtype=data.dtype)
        for major in range(len(indptr) - 1):
            sl = slice(indptr[major], indptr[major + 1])
            if fmt == "csc":
                dense[indices[sl], major] = data[sl]
            else:
                dense[major, indices[sl]] = data[sl]
        return dense
    if isinstance(obj, dict):
        return {k: _to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_numpy(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_to_numpy(v) for v in obj)
    if isinstance(obj, np.ndarray) and obj.dtype == object:
        out = np.empty(obj.shape, dtype=object)
        for idx in np.ndindex(obj.shape):
            out[idx] = _to_numpy(obj[idx])
        return out
    return obj


def safe_loads(data: bytes) -> Any:
    """Unpickle bytes with the allow-list; chumpy/sparse objects come back as numpy arrays."""
    try:
        obj = SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # truncated or not a pickle at all
        raise PickleFormatError(f"not a readable pickle ({type(exc).__name__}: {exc})") from exc
    return _to_numpy(obj)


def safe_load_npy(data: bytes) -> np.ndarray:
    """Read a `.npy` payload; object arrays (pickled inside) go through the restricted unpickler."""
    fp = io.BytesIO(data)
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    else:  # 3.0: a utf-8 header, otherwise as 2.0
        shape, fortran, dtype = np.lib.format._read_array_header(fp, version)
    if dtype.hasobject:
        return safe_loads(fp.read())
    fp.seek(0)
    return np.load(fp, allow_pickle=False)


def safe_load_file(path: str) -> Any:
    """Load a `.pkl` pickle, a `.npy` (plain or pickled object array) or an `.npz` safely."""
    import zipfile

    with open(path, "rb") as fh:
        data = fh.read()
    try:
        if data[:6] == b"\x93NUMPY":
            return safe_load_npy(data)
        if data[:2] == b"PK":
            out = {}
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                for name in zf.namelist():
                    key = name[:-4] if name.endswith(".npy") else name
                    out[key] = safe_load_npy(zf.read(name))
            return out
        return safe_loads(data)
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except PickleFormatError as exc:
        raise PickleFormatError(f"{path}: {exc}; the file is damaged or not of this kind") from None
    except (zipfile.BadZipFile, EOFError, ValueError, KeyError) as exc:
        raise PickleFormatError(f"{path} is damaged or truncated ({type(exc).__name__}: {exc}); "
                                "copy or download it again") from exc
