# Copyright (c) mmbinary contributors. All rights reserved.
"""The whole-model benchmark on a tiny input: every row of the table, and
the packed model checked against the training form."""
import importlib.util
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
TOOL = osp.join(REPO, 'tools', 'analysis_tools', 'benchmark_model.py')
DEMO_CONFIG = osp.join(REPO, 'configs', 'retinanet_mnv2_mbb_w2a2_trees.py')


@pytest.fixture(scope='module')
def tool():
    spec = importlib.util.spec_from_file_location('benchmark_model', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def speed_rows(output: str) -> dict:
    """Model name -> the cells of its row in the speed table."""
    section = output.split('## Speed', 1)[1].split('##', 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip('|').split('|')]
        if line.startswith('|') and cells[0] not in ('model', '---'):
            rows[cells[0].strip('*')] = cells[1:]
    return rows


def test_bits_pairs_and_set_bits(tool):
    assert tool.bits_pairs(['1,1', '2,4']) == [(1, 1), (2, 4)]
    assert tool.bits_pairs(['1', '1', '4', '4']) == [(1, 1), (4, 4)]
    for bad in (['1,1', '2'], ['1', '2', '3'], ['0,1'], ['9,9'], ['a,b']):
        with pytest.raises(ValueError, match='--bits'):
            tool.bits_pairs(bad)
    model = dict(backbone=dict(type='B', w_bits=2, a_bits=2),
                 neck=dict(type='N'),
                 head=dict(conv_cfg=dict(type='MBBConv', w_bits=2,
                                         a_bits=2)))
    assert tool.set_bits(model, 1, 4) == 2
    assert model['backbone']['w_bits'] == 1
    assert model['head']['conv_cfg']['a_bits'] == 4
    assert tool.config_bits(model) == [(1, 4)]
    assert tool.bits_name(tool.config_bits(model)) == 'W1A4'
    model['neck'] = dict(type='N', w_bits=2, a_bits=2)  # mixed precision
    assert tool.config_bits(model) == [(1, 4), (2, 2)]
    assert tool.bits_name(tool.config_bits(model)) == 'mixed W1A4/W2A2'
    assert tool.config_bits(dict(neck=dict(type='N'))) == []
    # a part's expand convs at their own activation bits
    expand = dict(backbone=dict(type='B', w_bits=2, a_bits=2,
                                expand_a_bits=4))
    assert tool.bits_name(tool.config_bits(expand)) == 'mixed W2A2/W2A4'


@pytest.mark.ext
def test_demo_detector_table_and_agreement(tool, capsys):
    cfg = Config.fromfile(DEMO_CONFIG)
    # the tool sets the default scope: leave other tests' scope unchanged
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        status = tool.main([
            DEMO_CONFIG, '--shape', '64', '96', '--threads', '1', '--bits',
            '2,2', '1,1', '--repeat', '1', '--warmup', '0',
            '--no-keep-freed-memory'  # a process-wide setting: not here
        ])
    output = capsys.readouterr().out
    assert status == 0, output[-4000:]
    assert 'input 1x3x64x96' in output
    assert re.search(r'- CPU: .+; avx512_vpopcntdq: (yes|no|n/a)', output)
    assert '- packed kernel: ' in output
    peak = re.search(r'peak of its instruction mix \(AND \+ POPCOUNT \+ '
                     r'ADD on registers, measured\): (\d+|n/a)', output)
    assert peak, output[:2000]
    variant = torch.ops.mmbinary.depthwise_pack_variant()
    assert ('fused depthwise convs: ' +
            ('portable (left to torch)' if variant == 'portable' else
             variant)) in output
    assert f'- command: python tools/analysis_tools/benchmark_model.py ' \
        f'{DEMO_CONFIG} --shape 64 96' in output

    rows = speed_rows(output)
    expected = {
        'float32, BN unfolded, NCHW', 'float32, BN folded, channels-last',
        'torch int8 (x86, FX)'
    } | {
        f'MBB {bits} {form}' for bits in ('W2A2', 'W1A1')
        for form in ('training form (eval)', 'packed, NCHW',
                     'packed, channels-last')
    }
    assert expected <= set(rows), rows
    folded = [name for name in rows if name.startswith('float32, BN folded (')]
    assert len(folded) == 1 and int(re.search(r'\((\d+)\)',
                                              folded[0]).group(1)) > 20
    for name, cells in rows.items():
        ms, vs_float, vs_int8 = cells
        assert float(ms) > 0, name
        assert re.fullmatch(r'\d+\.\d\dx', vs_float), (name, vs_float)
    # int8 ran (MobileNetV2 + FPN trace), so every row has a ratio to it.
    assert rows['torch int8 (x86, FX)'][2] == '1.00x'
    assert 'int8: backbone + neck (one FX graph); heads float' in output

    # Peak memory: a row per model, the packed weights far below float's.
    memory = output.split('## Peak memory of inference', 1)[1].split('##')[0]
    mem_rows = {
        cells[0]: cells[1:]
        for cells in (line.strip('|').split(' | ') for line in
                      memory.splitlines() if line.startswith('| ')
                      and not line.startswith(('| model', '|---')))
    }
    names = [name.strip() for name in mem_rows]
    assert names[0].startswith('float32 best ('), names
    assert {f'MBB {bits} packed, {form}' for bits in ('W2A2', 'W1A1')
            for form in ('NCHW', 'channels-last')} <= set(names), names
    held = {name.strip(): float(cells[0]) for name, cells in mem_rows.items()}
    float_held = held[names[0]]
    assert float_held > 0
    for bits in ('W2A2', 'W1A1'):
        assert 0 < held[f'MBB {bits} packed, NCHW'] < float_held / 2

    # The packed model was checked layer by layer against the training form.
    for bits in ('W2A2', 'W1A1'):
        line = next(line for line in output.splitlines()
                    if line.startswith(f'- {bits}: all '))
        count = int(re.search(r'all (\d+) packed layers agree', line)[1])
        assert count > 40, line
    assert 'MISMATCH' not in output
    for bits in ('W2A2', 'W1A1'):
        error = re.search(
            rf'- {bits}: the channels-last packed model\'s outputs differ '
            r'from the NCHW one\'s by (\S+) % \(L2\)', output)[1]
        assert float(error) < 1e-3

    # Encoded and float parts, and the per-layer table of packed layers.
    layout = r'(NCHW|channels-last)'
    assert re.search(rf'- W2A2 {layout}: \d+ packed MBB layers .*float '
                     'depthwise conv', output)
    breakdown = output.split('## Where the packed time goes', 1)[1]
    for bits in ('W2A2', 'W1A1'):
        assert re.search(rf'^\| {bits} {layout} \| 1 \|', breakdown, re.M)
    # a packed layer, or a module passing packed activations on ('flow:')
    layer_rows = re.findall(r'^\| (backbone\.\S+|neck\.\S+|bbox_head\.\S+) '
                            r'\| (?:flow: )?(\d+)->(\d+) (\d)x(\d)',
                            breakdown, re.M)
    # (an inverted-residual block is one row: its expand and linear convs)
    assert len(layer_rows) > 2 * 25
    assert re.search(
        r'^\| backbone\.layer2\.1 \| flow: 24->144 1x1 W2A2[^|+]* '
        r'\+ 144->24 1x1 W2A2', breakdown, re.M)
    if peak[1] != 'n/a':  # every timed layer has its share of the peak
        shares = re.findall(r'^\| (?:backbone|neck|bbox_head)\.\S+ \|.*\| '
                            r'(\d+) % \|', breakdown, re.M)
        assert len(shares) == len(layer_rows), (len(shares), len(layer_rows))
    assert '**all ' in breakdown


def test_no_row_bands_runs_blocks_at_once_for_that_run_only(tool, capsys):
    from mmbinary.models.packing import packed_flow
    banded = packed_flow.MIN_BANDED_BYTES
    seen = []

    def run_benchmark(args):
        seen.append(packed_flow.MIN_BANDED_BYTES)
        return 0

    original = tool.run_benchmark
    tool.run_benchmark = run_benchmark
    try:
        assert tool.main([DEMO_CONFIG, '--no-row-bands']) == 0
        assert tool.main([DEMO_CONFIG]) == 0
    finally:
        tool.run_benchmark = original
    assert seen == [float('inf'), banded]
    assert packed_flow.MIN_BANDED_BYTES == banded


@pytest.mark.ext
def test_a_mixed_precision_config_is_timed_as_configured(tool, capsys):
    """Without --bits each part keeps the config's bits: a W4A4 backbone
    with a W2A2 neck and head is timed as that (not as W4A4 everywhere)."""
    cfg = Config.fromfile(DEMO_CONFIG)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        status = tool.main([
            DEMO_CONFIG, '--shape', '64', '96', '--threads', '1',
            '--repeat', '1', '--warmup', '0', '--no-keep-freed-memory',
            '--no-int8', '--no-training-form', '--cfg-options',
            'model.backbone.w_bits=4', 'model.backbone.a_bits=4'
        ])
    output = capsys.readouterr().out
    assert status == 0, output[-4000:]
    assert 'MBB mixed W4A4/W2A2 packed, channels-last' in speed_rows(output)
    layers = output.split('Packed layers, mixed W4A4/W2A2', 1)[1]
    assert re.search(r'\| backbone\.\S+ \|[^|\n]*W4A4', layers)
    assert re.search(r'\| neck\.\S+ \|[^|\n]*W2A2', layers)
    assert not re.search(r'\| neck\.\S+ \|[^|\n]*W4A4', layers)
