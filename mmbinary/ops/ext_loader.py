# Copyright (c) mmbinary contributors. All rights reserved.
"""Loading of the compiled extension ``mmbinary._C``.

``import mmbinary`` never fails because the extension is missing: the reason
is kept, and only the packed ops raise it, with how to build the extension.
"""
import importlib
from types import ModuleType
from typing import Optional

import torch  # noqa: F401  (loads libc10 and libtorch, which _C links)

BUILD_HINT = (
    'Build it from the repository root with '
    '`pip install -v -e . --no-build-isolation` (torch must already be '
    'installed; do not set MMBINARY_WITH_OPS=0).')

_extension: Optional[ModuleType] = None
_load_error: Optional[str] = None


def _load() -> None:
    global _extension, _load_error
    try:
        _extension = importlib.import_module('mmbinary._C')
    except ImportError as error:  # not built, or built for another torch
        _extension, _load_error = None, f'{type(error).__name__}: {error}'


_load()


def ext_loaded() -> bool:
    """Whether ``mmbinary._C`` is loaded (``torch.ops.mmbinary`` usable)."""
    return _extension is not None


def ext_load_error() -> Optional[str]:
    """Why ``mmbinary._C`` did not load, or None when it did."""
    return _load_error


def get_extension() -> ModuleType:
    """Return the loaded extension module.

    Raises:
        RuntimeError: when the extension did not load, saying why and how to
            build it.
    """
    if _extension is None:
        raise RuntimeError(
            'mmbinary\'s compiled extension mmbinary._C is not available '
            f'({_load_error}). {BUILD_HINT}')
    return _extension


def require_ext(op_name: str = 'this function') -> None:
    """Raise a RuntimeError naming ``op_name`` without the extension."""
    if _extension is None:
        raise RuntimeError(
            f'{op_name} needs mmbinary\'s compiled extension mmbinary._C, '
            f'which is not available ({_load_error}). {BUILD_HINT}')


def build_info() -> dict:
    """How the extension was built, for environment reports.

    Returns:
        dict: ``loaded``, and either ``error`` or ``with_cuda``,
        ``with_openmp``, ``compiled_cpu_kernels``, ``runtime_cpu_features``,
        ``cuda_arch_list``.
    """
    if _extension is None:
        return dict(loaded=False, error=_load_error)
    ext = _extension
    return dict(
        loaded=True,
        path=ext.__file__,
        with_cuda=bool(ext.with_cuda),
        with_openmp=bool(ext.with_openmp),
        compiled_cpu_kernels=ext.compiled_cpu_kernels,
        runtime_cpu_features=ext.runtime_cpu_features,
        cuda_arch_list=ext.cuda_arch_list)
