# Copyright (c) mmbinary contributors. All rights reserved.
"""The main job: train an encoded detector on the embedded data, evaluate it,
pack it, evaluate the packed model and summarise.

Not implemented yet: for now it checks the installation (the compiled op
against its reference) and says so.
"""
import sys

import torch

from mmbinary.ops import build_info, pack_signs, pack_signs_reference


def main() -> int:
    info = build_info()
    if not info['loaded']:
        print(f'mmbinary._C did not load: {info["error"]}', file=sys.stderr)
        return 1
    x = torch.randn(2, 100, 16, 16)
    same = torch.equal(pack_signs(x), pack_signs_reference(x))
    print(f'mmbinary._C loaded from {info["path"]} (CPU kernels: '
          f'{info["compiled_cpu_kernels"]}, CUDA kernels: '
          f'{info["with_cuda"]}); packed op equals its reference: {same}')
    print('The demo (train, evaluate, pack and evaluate an encoded detector '
          'on the embedded data) is not implemented yet.')
    return 0 if same else 1


if __name__ == '__main__':
    sys.exit(main())
