# Copyright (c) mmbinary contributors. All rights reserved.
"""Defect 3: tools/test.py given a packed checkpoint without --packed tests
the packed model (with a notice) instead of random layers."""
import re

import pytest
from tiny_detector import run_tool


def metrics(log: str) -> str:
    found = re.findall(r'coco/bbox_mAP: (\S+)', log)
    assert found, log[-3000:]
    return found[-1]


@pytest.mark.slow
def test_packed_checkpoint_without_flag_runs_the_packed_model(tiny):
    result = run_tool('test.py', tiny['config'], tiny['packed'],
                      '--work-dir', tiny['root'] / 'no_flag',
                      cwd=tiny['root'])
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    assert 'is a packed checkpoint' in result.stderr
    assert 'as with --packed' in result.stderr
    # nothing was left randomly initialized
    assert 'missing keys' not in log and 'unexpected key' not in log
    # the kernels were chosen on the first batch; every layer on the
    # popcount kernel gives the same metrics
    assert 'packed kernels chosen on the first test batch' in log
    flagged = run_tool('test.py', tiny['config'], tiny['packed'], '--packed',
                       '--kernels', 'popcount', '--work-dir',
                       tiny['root'] / 'flag', cwd=tiny['root'])
    flagged_log = flagged.stdout + flagged.stderr
    assert flagged.returncode == 0, flagged.stderr[-3000:]
    assert 'packed kernels chosen' not in flagged_log
    assert metrics(log) == metrics(flagged_log)


@pytest.mark.slow
def test_packed_flag_with_an_unpacked_checkpoint_is_one_line(tiny):
    result = run_tool('test.py', tiny['config'], tiny['checkpoint'],
                      '--packed', '--work-dir', tiny['root'] / 'unpacked',
                      cwd=tiny['root'])
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert 'is not a packed checkpoint' in result.stderr
