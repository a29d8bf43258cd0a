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


@pytest.mark.skipif(platform.system() != 'Linux', reason='/proc only')
def test_forward_peak_memory_counts_what_the_call_touches():
    code = ('import torch; from mmbinary.utils.memory import '
            'keep_freed_memory as k, forward_peak_memory as f; k(); '
            'big = f(lambda: torch.ones(64 << 20, dtype=torch.uint8)); '
            'again = f(lambda: torch.ones(64 << 20, dtype=torch.uint8)); '
            'small = f(lambda: torch.ones(8 << 20, dtype=torch.uint8)); '
            'print(big >> 20, again >> 20, small >> 20)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, check=True).stdout.split()
    big, again, small = (int(v) for v in out)
    # 64 MiB touched, each time (freed memory kept by the allocator is
    # given back first, so the second call is not hidden by the first).
    assert 64 <= big < 72 and 64 <= again < 72, out
    assert 8 <= small < 16, out


def test_tensor_bytes_counts_shared_storage_once():
    import torch
    from torch import nn

    from mmbinary.utils.memory import tensor_bytes
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))
    expected = (4 * 8 + 8 + 8 + 8 + 8 + 8) * 4 + 8  # + num_batches_tracked
    assert tensor_bytes(model) == expected
    model[1].weight = model[0].bias  # one storage, two names
    assert tensor_bytes(model) == expected - 8 * 4
    assert tensor_bytes(nn.Sequential(nn.Linear(2, 2, bias=False))) == 16
    assert torch.is_tensor(model[1].weight)
