# Copyright (c) mmbinary contributors. All rights reserved.
"""Hardware resources of an exported model, per MBB node and in total, for
one input of the example shape (batch 1).

Per MBB node (``docs/export.md`` derives each count):

* ``binary_macs``: 1-bit products, ``valid taps x O x Cg x M x K``, summed
  over the outputs (padded taps are skipped, as the op skips them);
* ``and_popcounts``: AND + popcount operations on 64-bit words,
  ``valid taps x O x Wg x M x K``;
* ``act_popcounts``: popcounts of activation words for ``S_a``,
  ``H x W x groups x K x Wg`` (once per input pixel);
* ``popcount_width``: 64, with ``bits_per_word`` channels used in a word;
* ``acc_bound`` = ``Cg x kh x kw x (2^M - 1) x (2^K - 1)`` bounds
  ``|acc|``; ``acc_bits`` (two's complement) holds it;
* ``weight_bits``: stored weight words, ``O x M x kh x kw x Wg x 64``, and
  ``epilogue_bits``: float32 out_scale, out_bias and inv_step.
"""
import math
from typing import List, Tuple

from mmbinary.packed_format import WORD_BITS, accumulator_bound

from .format import PackedExport


def _valid_taps(size: int, out: int, kernel: int, stride: int, padding: int,
                dilation: int) -> int:
    """Sum over the outputs of one axis of the taps inside the input."""
    total = 0
    for position in range(out):
        start = position * stride - padding
        total += sum(1 for i in range(kernel)
                     if 0 <= start + i * dilation < size)
    return total


def signed_bits(bound: int) -> int:
    """Bits of a two's complement integer holding ``[-bound, bound]``."""
    return math.ceil(math.log2(bound + 1)) + 1


def resources(export: PackedExport) -> dict:
    """Per-node resource counts and totals (JSON-ready)."""
    shapes = {node['name']: node.get('shape') for node in export.nodes}
    rows, float_macs = [], 0
    for node in export.nodes:
        layer = export.layers.get(node.get('layer'))
        in_shape = shapes.get(node['inputs'][0]) if node['inputs'] else None
        if node['op'] in ('conv2d', 'linear'):
            attrs = layer['attributes']
            out_shape = node['shape']
            if node['op'] == 'conv2d':
                float_macs += (math.prod(out_shape[1:]) *
                               attrs['in_channels'] // attrs['groups'] *
                               math.prod(attrs['kernel_size']))
            else:
                float_macs += math.prod(out_shape[1:]) * attrs['in_features']
            continue
        if node['op'] not in ('mbb_conv2d', 'mbb_linear'):
            continue
        attrs = layer['attributes']
        m, k, groups = attrs['w_bits'], attrs['a_bits'], attrs['groups']
        out_channels = attrs['out_channels']
        cg = attrs['in_channels'] // groups
        words = attrs['words_per_group']
        kh, kw = attrs['kernel_size']
        if node['op'] == 'mbb_linear':
            height = width = out_h = out_w = 1
            pixels = math.prod(in_shape[1:-1]) if len(in_shape) > 2 else 1
            taps = pixels
        else:
            height, width = in_shape[2:]
            out_h, out_w = node['shape'][2:]
            pixels = 1
            taps = (_valid_taps(height, out_h, kh, attrs['stride'][0],
                                attrs['padding'][0], attrs['dilation'][0]) *
                    _valid_taps(width, out_w, kw, attrs['stride'][1],
                                attrs['padding'][1], attrs['dilation'][1]))
        bound = accumulator_bound(cg, (kh, kw), m, k)
        rows.append(dict(
            node=node['name'], layer=layer['name'], w_bits=m, a_bits=k,
            mode=attrs['mode'],
            shape=f"{attrs['in_channels']}->{out_channels} "
            f'{kh}x{kw}/{attrs["stride"][0]} g{groups}',
            outputs=out_channels * out_h * out_w * pixels,
            binary_macs=taps * out_channels * cg * m * k,
            and_popcounts=taps * out_channels * words * m * k,
            act_popcounts=height * width * pixels * groups * k * words,
            popcount_width=WORD_BITS,
            bits_per_word=min(cg, WORD_BITS),
            acc_bound=bound,
            acc_bits=signed_bits(bound),
            weight_bits=out_channels * m * kh * kw * words * WORD_BITS,
            epilogue_bits=(2 * out_channels + 1) * 32))
    keys = ('outputs', 'binary_macs', 'and_popcounts', 'act_popcounts',
            'weight_bits', 'epilogue_bits')
    totals = {key: sum(row[key] for row in rows) for key in keys}
    totals['max_acc_bits'] = max((row['acc_bits'] for row in rows),
                                 default=0)
    totals['mbb_nodes'] = len(rows)
    totals['float_macs'] = float_macs
    totals['float_param_bits'] = 32 * sum(
        math.prod(entry['shape']) for layer in export.manifest['layers']
        if layer['kind'] == 'float'
        for entry in layer['tensors'].values()
        if entry['dtype'] == 'float32')
    return dict(per='one input of the example shape (batch 1)',
                layers=rows, totals=totals)


_COLUMNS: List[Tuple[str, str]] = [
    ('node', 'node'), ('W/A', None), ('mode', 'mode'), ('shape', 'shape'),
    ('binary MACs', 'binary_macs'), ('AND+popcnt (64b)', 'and_popcounts'),
    ('act popcnt', 'act_popcounts'), ('bits/word', 'bits_per_word'),
    ('acc bits', 'acc_bits'), ('weight bits', 'weight_bits')
]


def resource_table(summary: dict) -> str:
    """The resource summary as a markdown table (with a totals row)."""
    lines = [
        f"Resources per {summary['per']}; popcounts are on 64-bit words.",
        '', '| ' + ' | '.join(title for title, _ in _COLUMNS) + ' |',
        '|' + '|'.join('---' if key in ('node', 'mode', 'shape', None) else
                       '---:' for _, key in _COLUMNS) + '|'
    ]
    for row in summary['layers']:
        cells = [f"W{row['w_bits']}A{row['a_bits']}" if key is None else
                 f'{row[key]:,}' if isinstance(row[key], int) else
                 str(row[key]) for _, key in _COLUMNS]
        lines.append('| ' + ' | '.join(cells) + ' |')
    totals = summary['totals']
    lines.append(
        f"| **total ({totals['mbb_nodes']} MBB nodes)** | | | | "
        f"{totals['binary_macs']:,} | {totals['and_popcounts']:,} | "
        f"{totals['act_popcounts']:,} | | {totals['max_acc_bits']} (max) | "
        f"{totals['weight_bits']:,} |")
    lines += [
        '', f"Float layers left: {totals['float_macs']:,} MACs, "
        f"{totals['float_param_bits']:,} bits of float32 tensors. MBB "
        f"epilogues: {totals['epilogue_bits']:,} bits. Packed weights: "
        f"{totals['weight_bits'] / 8 / 1024:.1f} KiB."
    ]
    return '\n'.join(lines)
