# Copyright (c) mmbinary contributors. All rights reserved.
"""keep_freed_memory: glibc takes the settings, and allocation still works."""
import platform
import subprocess
import sys

import pytest


@pytest.mark.skipif(platform.system() != 'Linux', reason='glibc only')
def test_keep_freed_memory_in_a_fresh_process():
    code = ('import torch; from mmbinary.utils.memory import '
            'keep_freed_memory as k; ok = k(); '
            'x = [torch.ones(64 << 20, dtype=torch.uint8) for _ in range(3)]; '
            'del x; y = torch.ones(64 << 20, dtype=torch.uint8); '
            'print(ok, int(y.sum()) == 64 << 20)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ['True', 'True']
