# Copyright (c) mmbinary contributors. All rights reserved.
"""Compile-only checks of the CUDA sources with nvcc, so that CUDA code
cannot rot on machines without a GPU (CI included).

* each kernel header (``csrc/common/cuda/*.cuh``) compiles without torch;
* each launcher (``csrc/pytorch/cuda/*.cu``) compiles against torch's
  headers. A CPU build of torch lacks the generated
  ``c10/cuda/impl/cuda_cmake_macros.h``; the check writes it (one define,
  as the CUDA build generates it) into a temporary include folder.
"""
import os.path as osp
import shutil
import subprocess
import sysconfig
from glob import glob
from pathlib import Path

import pytest
from torch.utils.cpp_extension import include_paths

CSRC = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'mmbinary',
    'ops', 'csrc')
KERNEL_HEADERS = sorted(glob(osp.join(CSRC, 'common', 'cuda', '*.cuh')))
LAUNCHERS = sorted(glob(osp.join(CSRC, 'pytorch', 'cuda', '*.cu')))
# The oldest architecture with b1 tensor-core mma; compile-only.
ARCH = 'sm_80'


def run_nvcc(args, cwd):
    nvcc = shutil.which('nvcc')
    result = subprocess.run([nvcc, '-c', f'-arch={ARCH}', '-std=c++17',
                             '-w', *args], cwd=cwd, capture_output=True,
                            text=True)
    assert result.returncode == 0, (
        f'nvcc failed ({result.returncode}):\n{result.stderr[-6000:]}')


def test_sources_found():
    assert KERNEL_HEADERS and LAUNCHERS


@pytest.mark.nvcc
@pytest.mark.parametrize('header', KERNEL_HEADERS, ids=osp.basename)
def test_kernel_header_compiles_without_torch(header, tmp_path):
    unit = tmp_path / 'unit.cu'
    unit.write_text(f'#include "{header}"\n')
    run_nvcc([str(unit), '-o', str(tmp_path / 'unit.o')], tmp_path)


@pytest.mark.nvcc
@pytest.mark.slow
@pytest.mark.parametrize('source', LAUNCHERS, ids=osp.basename)
def test_launcher_compiles_against_torch(source, tmp_path):
    stub = tmp_path / 'stub' / 'c10' / 'cuda' / 'impl'
    stub.mkdir(parents=True)
    for folder in include_paths():
        if (Path(folder) / 'c10/cuda/impl/cuda_cmake_macros.h').exists():
            break
    else:
        (stub / 'cuda_cmake_macros.h').write_text(
            '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n')
    includes = [f'-I{tmp_path / "stub"}', f'-I{osp.join(CSRC, "common")}',
                f'-I{sysconfig.get_paths()["include"]}']
    includes += [f'-I{folder}' for folder in include_paths()]
    run_nvcc([*includes, '-DMMBINARY_WITH_CUDA', '-O1', source, '-o',
              str(tmp_path / 'launcher.o')], tmp_path)
