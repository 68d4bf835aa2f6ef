"""Array plumbing shared by the public functions: which array family a call uses (PyTorch or
NumPy), how arrays are handed to the native module without copies, and how outputs are
allocated. PyTorch is never imported here: a tensor can only exist if the caller imported it."""

import sys

import numpy as np

# NumPy dtypes that DLPack and the buffer protocol cannot describe (ml_dtypes), passed to the
# native module as (same-size integer view, openmla dtype name).
_NUMPY_VIEWS = {
    "bfloat16": (np.uint16, "bfloat16"),
    "float8_e4m3fn": (np.uint8, "float8_e4m3fn"),
}

# openmla dtype name -> NumPy dtype (bfloat16 and float8_e4m3fn come from ml_dtypes).
_NUMPY_DTYPES = {
    "float32": np.float32,
    "int32": np.int32,
    "int64": np.int64,
    "uint8": np.uint8,
    "int8": np.int8,
    "float16": np.float16,
}


def _torch():
    return sys.modules.get("torch")


def is_torch(x):
    """Whether `x` is a torch.Tensor (without importing torch)."""
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


def numpy_dtype(name):
    """NumPy dtype for an openmla dtype name; bfloat16 and float8_e4m3fn need ml_dtypes."""
    if name in _NUMPY_DTYPES:
        return np.dtype(_NUMPY_DTYPES[name])
    try:
        import ml_dtypes
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"openmla: NumPy arrays of {name} need the ml_dtypes package, a dependency of "
            "openmla that is missing here (pip install ml_dtypes)"
        ) from e
    return np.dtype(getattr(ml_dtypes, name))


def torch_dtype(name):
    torch = _torch()
    return getattr(torch, name)


_TO_DLPACK = []  # torch.utils.dlpack.to_dlpack, looked up once


def native(x):
    """What the native module receives for array `x`: the array itself when DLPack or the buffer
    protocol describe its element type, else an (integer view, dtype name) pair. Zero-copy.
    A CPU tensor goes as its DLPack capsule (torch.utils.dlpack.to_dlpack, under a microsecond),
    which the module takes like the tensor, rather than the tensor, whose Python-level
    `__dlpack__` costs several: on a decode-sized op that was a large part of the call."""
    if x is None:
        return None
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        if x.requires_grad:
            x = x.detach()
        name = None
        if x.dtype is torch.float8_e4m3fn:
            x, name = x.view(torch.uint8), "float8_e4m3fn"
        if x.is_cpu:
            if not _TO_DLPACK:
                _TO_DLPACK.append(torch.utils.dlpack.to_dlpack)
            x = _TO_DLPACK[0](x)
        return x if name is None else (x, name)
    if isinstance(x, np.ndarray):
        view = _NUMPY_VIEWS.get(x.dtype.name)
        if view is not None:
            return (x.view(view[0]), view[1])
    return x


class Family:
    """Allocates outputs in the array family of a reference input (PyTorch or NumPy)."""

    def __init__(self, like):
        self.torch = is_torch(like)
        # `like.device` builds a new object (most of a microsecond); CPU is the common case.
        self.device = (like.device if not like.is_cpu else "cpu") if self.torch else None

    def empty(self, shape, dtype_name, zero=False):
        shape = tuple(int(s) for s in shape)
        if self.torch:
            torch = _torch()
            make = torch.zeros if zero else torch.empty
            return make(shape, dtype=torch_dtype(dtype_name), device=self.device)
        make = np.zeros if zero else np.empty
        return make(shape, dtype=numpy_dtype(dtype_name))

    def transpose12(self, x):
        """The [a, b, c] -> [a, c, b] view (no copy)."""
        return x.transpose(1, 2) if self.torch else x.swapaxes(1, 2)

    def minimum(self, x, bound):
        if self.torch:
            return _torch().clamp(x, max=bound).to(x.dtype)
        return np.minimum(x, bound).astype(x.dtype, copy=False)


def shape_of(x):
    """Shape tuple for plan keys (None for None; objects without a shape key by type)."""
    if x is None:
        return None
    shape = getattr(x, "shape", None)
    return type(x).__name__ if shape is None else tuple(int(s) for s in shape)
