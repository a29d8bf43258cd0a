# Copyright (c) mmbinary contributors. All rights reserved.
"""Environment report: mmengine's, plus how mmbinary's extension was built.

Run ``python -m mmbinary.utils.collect_env``.
"""
from collections import OrderedDict

from mmengine.utils import get_git_hash
from mmengine.utils.dl_utils import collect_env as collect_base_env

import mmbinary
from mmbinary.ops import build_info


def collect_env() -> OrderedDict:
    """Collect the environment, as a name → value mapping."""
    env_info = collect_base_env()
    for package in ('mmcv', 'mmdet', 'mmseg'):
        try:
            module = __import__(package)
            env_info[package] = module.__version__
        except Exception as error:  # a broken install is worth reporting
            env_info[package] = f'not importable ({error})'
    env_info['mmbinary'] = f'{mmbinary.__version__}+{get_git_hash()[:7]}'
    info = build_info()
    env_info['mmbinary._C loaded'] = info['loaded']
    if info['loaded']:
        env_info['mmbinary._C path'] = info['path']
        env_info['mmbinary._C CPU kernels'] = info['compiled_cpu_kernels']
        env_info['mmbinary._C OpenMP'] = info['with_openmp']
        env_info['mmbinary._C CUDA kernels'] = info['with_cuda']
        if info['with_cuda']:
            env_info['mmbinary._C CUDA archs'] = info['cuda_arch_list']
        env_info['CPU features (run time)'] = info['runtime_cpu_features']
    else:
        env_info['mmbinary._C error'] = info['error']
    return env_info


if __name__ == '__main__':
    for name, value in collect_env().items():
        print(f'{name}: {value}')
