# Copyright (c) mmbinary contributors. All rights reserved.
"""Shared pytest set-up: markers that skip cleanly where hardware is absent.

* ``@pytest.mark.cuda``: skipped without a GPU or without mmbinary's CUDA
  kernels.
* ``@pytest.mark.ext``: skipped without the compiled extension, unless
  ``MMBINARY_REQUIRE_EXT=1`` (set by ``tools/quickstart.sh test`` and CI),
  where a missing extension stops the run with its load error.
* ``@pytest.mark.nvcc``: skipped without the ``nvcc`` compiler.
"""
import os
import shutil

import pytest
import torch

from mmbinary.ops import build_info, ext_load_error, ext_loaded


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.getenv('MMBINARY_REQUIRE_EXT') == '1' and not ext_loaded():
        raise pytest.UsageError(
            'MMBINARY_REQUIRE_EXT=1 but mmbinary._C did not load: '
            f'{ext_load_error()}')


def _cuda_skip_reason() -> str:
    if not torch.cuda.is_available():
        return 'no CUDA GPU'
    if not (ext_loaded() and build_info()['with_cuda']):
        return 'mmbinary._C was built without CUDA kernels'
    return ''


def pytest_collection_modifyitems(config, items) -> None:
    cuda_reason = _cuda_skip_reason()
    for item in items:
        if 'cuda' in item.keywords and cuda_reason:
            item.add_marker(pytest.mark.skip(reason=cuda_reason))
        if 'ext' in item.keywords and not ext_loaded():
            item.add_marker(pytest.mark.skip(
                reason=f'mmbinary._C not built: {ext_load_error()}'))
        if 'nvcc' in item.keywords and shutil.which('nvcc') is None:
            item.add_marker(pytest.mark.skip(reason='nvcc not found'))
