# Copyright (c) mmbinary contributors. All rights reserved.
"""benchmark_mbb_conv2d.py: the table's columns, packed input included
(structure only: no timing is asserted)."""
import os.path as osp
import subprocess
import sys

import pytest

from mmbinary.models.packing import int8_kernel_available
from mmbinary.ops import ext_loaded

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark_mbb_conv2d.py')

pytestmark = pytest.mark.skipif(not ext_loaded(),
                                reason='mmbinary._C is not built')


def test_table_with_packed_input_and_share_of_peak():
    out = subprocess.run(
        [sys.executable, TOOL, '--preset', 'small', '--shapes',
         'res5 3x3 512', '--bits', '1,1', '2,2', '--threads', '1', '--runs',
         '1', '--warmup', '0', '--no-baselines', '--kernels', 'generic',
         '--packed-input', '--channels-last'],
        capture_output=True, text=True, check=True, cwd=ROOT).stdout
    lines = [line for line in out.splitlines() if line.startswith('|')]
    header = [cell.strip() for cell in lines[0].strip('|').split('|')]
    # the integer kernel's column where this CPU runs it
    integer = int8_kernel_available()
    words_in = ['words in'] + (
        ['integer kernel words in', 'integer kernel float in']
        if integer else [])
    assert header == (
        ['shape', 'N', 'thr', 'W/A', 'float32 ms', 'generic ms'] +
        [f'{w} ms' for w in words_in] + ['float32 / best'] +
        [f'float32 / {w}' for w in words_in] +
        ['bMAC/cyc', 'of peak', 'weights packed / float32'])
    rows = [[cell.strip() for cell in line.strip('|').split('|')]
            for line in lines[2:]]
    assert [row[3] for row in rows] == ['W1A1', 'W2A2']
    for row in rows:
        cells = dict(zip(header, row))
        assert float(cells['generic ms']) > 0
        for w in words_in:  # each timed, and its ratio
            assert float(cells[f'{w} ms']) > 0
            ratio = cells[f'float32 / {w}']
            assert ratio.endswith('x') and float(ratio[:-1]) > 0
    assert 'channels-last input' in out and '"words in"' in out
    assert ('"integer kernel words in"' in out) == integer
