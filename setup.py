# Copyright (c) mmbinary contributors. All rights reserved.
"""Build and install mmbinary.

The compiled ops (``mmbinary._C``) are built with
``torch.utils.cpp_extension``, so torch must be installed first and the build
must see it: ``pip install -v -e . --no-build-isolation``.

Environment switches:
    MMBINARY_WITH_OPS=0   build no compiled ops (pure-PyTorch install).
    MMBINARY_WITH_CUDA=1  build the CUDA kernels (needs a CUDA build of torch
                          and a toolkit); =0 never; unset: build them when
                          torch has CUDA and a toolkit is found.
"""
import glob
import os
import os.path as osp
import platform

from setuptools import find_packages, setup

CSRC = osp.join('mmbinary', 'ops', 'csrc')


def read_version() -> str:
    namespace: dict = {}
    with open(osp.join('mmbinary', 'version.py'), encoding='utf-8') as f:
        exec(compile(f.read(), 'version.py', 'exec'), namespace)
    return namespace['__version__']


def read_requirements(path: str) -> list:
    with open(path, encoding='utf-8') as f:
        lines = (line.split('#')[0].strip() for line in f)
        return [line for line in lines if line and not line.startswith('-')]


def env_switch(name: str):
    """Return True/False for ``name`` set to 1/0, None when unset."""
    value = os.getenv(name)
    if value is None or value == '':
        return None
    if value not in ('0', '1'):
        raise ValueError(f'{name} must be 0 or 1, got {value!r}')
    return value == '1'


def should_build_cuda() -> bool:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME
    requested = env_switch('MMBINARY_WITH_CUDA')
    available = torch.version.cuda is not None and CUDA_HOME is not None
    if requested and not available:
        raise RuntimeError(
            'MMBINARY_WITH_CUDA=1 needs a CUDA build of torch and a CUDA '
            f'toolkit; found torch.version.cuda={torch.version.cuda!r}, '
            f'CUDA_HOME={CUDA_HOME!r}')
    return available if requested is None else requested


def get_extensions() -> list:
    if env_switch('MMBINARY_WITH_OPS') is False:
        print('mmbinary: MMBINARY_WITH_OPS=0, building no compiled ops')
        return []
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    with_cuda = should_build_cuda()
    sources = sorted(
        glob.glob(osp.join(CSRC, 'pytorch', '*.cpp')) +
        glob.glob(osp.join(CSRC, 'pytorch', 'cpu', '*.cpp')))
    cuda_arch_list = ''
    # CPU kernel variants (picked at run time by CPU features); the x86
    # ones are compiled with target pragmas, not with a global -mavx2.
    x86 = platform.machine().lower() in ('x86_64', 'amd64')
    cpu_kernels = 'generic,popcnt,avx2,avx512' if x86 else 'generic'
    define_macros = [('MMBINARY_COMPILED_CPU_KERNELS', f'"{cpu_kernels}"')]
    extra_compile_args = {
        # No FMA contraction: the packed ops repeat the float32 arithmetic
        # of the training layers operation by operation.
        'cxx': ['-O3', '-std=c++17', '-fopenmp', '-ffp-contract=off'],
    }
    extension_type = CppExtension
    if with_cuda:
        sources += sorted(glob.glob(osp.join(CSRC, 'pytorch', 'cuda', '*.cu')))
        define_macros.append(('MMBINARY_WITH_CUDA', None))
        extra_compile_args['nvcc'] = ['-O3', '-std=c++17', '--fmad=false']
        cuda_arch_list = os.getenv('TORCH_CUDA_ARCH_LIST', 'auto')
        extension_type = CUDAExtension
    define_macros.append(('MMBINARY_CUDA_ARCH_LIST', f'"{cuda_arch_list}"'))
    print(f'mmbinary: building mmbinary._C with CUDA={with_cuda}, '
          f'{len(sources)} sources')
    return [
        extension_type(
            name='mmbinary._C',
            sources=sources,
            include_dirs=[osp.abspath(osp.join(CSRC, 'common'))],
            define_macros=define_macros,
            extra_compile_args=extra_compile_args,
            extra_link_args=['-fopenmp'],
        )
    ]


def get_cmdclass() -> dict:
    if env_switch('MMBINARY_WITH_OPS') is False:
        return {}
    from torch.utils.cpp_extension import BuildExtension
    return {'build_ext': BuildExtension.with_options(use_ninja=True)}


if __name__ == '__main__':
    setup(
        name='mmbinary',
        version=read_version(),
        description='Multi-precision binary-branch (encoding decomposition) '
        'quantized networks for OpenMMLab detection and segmentation',
        long_description=open('README.md', encoding='utf-8').read(),
        long_description_content_type='text/markdown',
        license='Apache License 2.0',
        python_requires='>=3.9',
        packages=find_packages(exclude=('configs', 'tools', 'tests')),
        package_data={'mmbinary.ops': ['csrc/**/*']},
        include_package_data=True,
        install_requires=read_requirements('requirements/runtime.txt'),
        extras_require={'tests': read_requirements('requirements/tests.txt')},
        ext_modules=get_extensions(),
        cmdclass=get_cmdclass(),
        zip_safe=False,
    )
