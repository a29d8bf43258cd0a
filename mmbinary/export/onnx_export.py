# Copyright (c) mmbinary contributors. All rights reserved.
"""ONNX graphs of an export, built from its manifest and tensors with the
``onnx`` helper API (no PyTorch).

* ``mode='custom'``: each packed MBB layer is one node ``MBBConv`` of the
  domain ``mmbinary`` (inputs: X, the weight words, out_scale, out_bias as
  initializers; attributes: the bit widths, mode, inv_step and geometry).
  A runtime needs a kernel for it; ``onnx.checker`` accepts the graph.
* ``mode='plain'``: each MBB layer is expanded into standard ONNX ops that
  compute the M*K binary branches, so any ONNX runtime runs it:

  1. levels ``q = Clip(Round(X * inv_step), 0, L)`` (unsigned) or
     ``Clip(Round((X * inv_step + L) * 0.5), 0, L)`` (signed), float32,
     ``Round`` being half to even as in the op;
  2. sign planes ``s_k = 2 * bit_k(q) - 1`` (``bit_k`` with Floor, exact);
  3. for every branch ``(m, k)``: ``Conv(s_k, sw_m)`` with the weight sign
     plane ``sw_m``, in float32 (exact: integers below 2^24), cast to int32
     and multiplied by ``2^(m + k)``; the branches are summed in int32;
  4. signed mode pads the planes with 0 (a padded pixel has ``a = 0``);
     unsigned mode pads them with -1 (``q = 0`` is all signs -1) and adds
     ``L * sum_{c,i,j} w[o]``, then halves the (even) sum:
     ``acc = (sum_branches + L * W_o) / 2``;
  5. the epilogue ``Cast(acc, float) * out_scale + out_bias``.

  The integer accumulators are those of the packed op exactly; the float
  layers left in the model are the standard ONNX ops.
"""
from typing import Dict, List

import numpy as np

from mmbinary.packed_format import (num_levels, unpack_weight_bits,
                                    unpack_weight_words)

from .format import PackedExport, read_export

DOMAIN = 'mmbinary'
OP_TYPE = 'MBBConv'
OPSET = 17


class _Builder:

    def __init__(self, export: PackedExport) -> None:
        self.export = export
        self.nodes: List = []
        self.initializers: List = []
        self.names: Dict[str, int] = {}
        self.constants: Dict[tuple, str] = {}

    def fresh(self, base: str) -> str:
        count = self.names.get(base, 0)
        self.names[base] = count + 1
        return f'{base}__{count}' if count else base

    def const(self, base: str, array: np.ndarray) -> str:
        from onnx import numpy_helper
        key = (base, array.dtype.str, array.shape, array.tobytes())
        if key not in self.constants:
            name = self.fresh(base)
            self.initializers.append(numpy_helper.from_array(array, name))
            self.constants[key] = name
        return self.constants[key]

    def node(self, op_type: str, inputs: List[str], base: str,
             **attributes) -> str:
        from onnx import helper
        out = self.fresh(base)
        domain = attributes.pop('domain', '')
        self.nodes.append(
            helper.make_node(op_type, inputs, [out], name=out,
                             domain=domain, **attributes))
        return out


def _pads(padding) -> List[int]:
    return [padding[0], padding[1], padding[0], padding[1]]


def _custom_mbb(b: _Builder, x: str, node: dict, layer: dict) -> str:
    attrs = layer['attributes']
    arrays = b.export.layer_arrays(layer['name'])
    inputs = [x] + [
        b.const(f"{layer['name']}.{role}", arrays[role])
        for role in ('weight_words', 'out_scale', 'out_bias')
    ]
    linear = node['op'] == 'mbb_linear'
    if linear:  # (N, C) -> (N, C, 1, 1)
        inputs[0] = b.node('Unsqueeze', [x, b.const('axes23', np.array(
            [2, 3], np.int64))], f"{node['name']}_in")
    out = b.node(
        OP_TYPE, inputs, node['name'] + ('_conv' if linear else ''),
        domain=DOMAIN, w_bits=attrs['w_bits'], a_bits=attrs['a_bits'],
        mode=attrs['mode'], inv_step=attrs['inv_step'],
        in_channels=attrs['in_channels'],
        out_channels=attrs['out_channels'],
        kernel_shape=attrs['kernel_size'], strides=attrs['stride'],
        pads=_pads(attrs['padding']), dilations=attrs['dilation'],
        group=attrs['groups'])
    if linear:
        out = b.node('Squeeze', [out, b.const('axes23', np.array(
            [2, 3], np.int64))], node['name'])
    return out


def _plain_mbb(b: _Builder, x: str, node: dict, layer: dict) -> str:
    attrs = layer['attributes']
    arrays = b.export.layer_arrays(layer['name'])
    name, signed = node['name'], attrs['mode'] == 'signed'
    m_bits, k_bits = attrs['w_bits'], attrs['a_bits']
    levels = num_levels(k_bits)
    cg = attrs['in_channels'] // attrs['groups']
    if cg * attrs['kernel_size'][0] * attrs['kernel_size'][1] >= 2**24:
        raise ValueError(f"layer {layer['name']!r}: Cg * kh * kw >= 2^24, a "
                         'float32 branch conv would not be exact')
    f32 = np.float32
    linear = node['op'] == 'mbb_linear'
    if linear:
        x = b.node('Unsqueeze', [x, b.const('axes23', np.array(
            [2, 3], np.int64))], f'{name}_in')
    # 1. levels
    t = b.node('Mul', [x, b.const(f'{name}.inv_step',
                                  np.array(attrs['inv_step'], f32))],
               f'{name}_t')
    if signed:
        t = b.node('Add', [t, b.const(f'L{levels}', np.array(levels, f32))],
                   f'{name}_tl')
        t = b.node('Mul', [t, b.const('half', np.array(0.5, f32))],
                   f'{name}_th')
    q = b.node('Clip', [
        b.node('Round', [t], f'{name}_round'),
        b.const('zero', np.array(0, f32)),
        b.const(f'L{levels}', np.array(levels, f32))
    ], f'{name}_q')
    # 2. sign planes of the levels
    planes = []
    for k in range(k_bits):
        shifted = b.node('Floor', [
            b.node('Mul', [q, b.const(f'pow2_-{k}', np.array(2.0**-k, f32))],
                   f'{name}_q{k}')
        ], f'{name}_fq{k}')
        upper = b.node('Floor', [
            b.node('Mul', [shifted, b.const('half', np.array(0.5, f32))],
                   f'{name}_h{k}')
        ], f'{name}_fh{k}')
        # s = 2 * (shifted - 2 * upper) - 1 = 2 * shifted - 4 * upper - 1
        bit = b.node('Sub', [
            shifted,
            b.node('Mul', [upper, b.const('two', np.array(2, f32))],
                   f'{name}_u{k}')
        ], f'{name}_bit{k}')
        planes.append(
            b.node('Sub', [
                b.node('Mul', [bit, b.const('two', np.array(2, f32))],
                       f'{name}_b2{k}'),
                b.const('one', np.array(1, f32))
            ], f'{name}_s{k}'))
    pads = _pads(attrs['padding'])
    if not signed and any(pads):
        planes = [
            b.node('Pad', [
                plane,
                b.const(f'{name}.pads',
                        np.array([0, 0, pads[0], pads[1], 0, 0, pads[2],
                                  pads[3]], np.int64)),
                b.const('minus_one', np.array(-1, f32))
            ], f'{plane}_pad', mode='constant') for plane in planes
        ]
        pads = [0, 0, 0, 0]
    # 3. the M * K branches
    bits = unpack_weight_bits(arrays['weight_words'], attrs['in_channels'],
                              attrs['groups'])  # (O, M, Cg, kh, kw)
    acc = None
    for m in range(m_bits):
        sign_plane = b.const(f"{layer['name']}.sign_plane{m}",
                             (2.0 * bits[:, m] - 1).astype(f32))
        for k in range(k_bits):
            branch = b.node('Conv', [planes[k], sign_plane],
                            f'{name}_conv_m{m}_k{k}',
                            kernel_shape=attrs['kernel_size'],
                            strides=attrs['stride'], pads=pads,
                            dilations=attrs['dilation'],
                            group=attrs['groups'])
            branch = b.node('Cast', [branch], f'{name}_int_m{m}_k{k}',
                            to=6)  # int32
            branch = b.node('Mul', [
                branch,
                b.const(f'int_pow2_{m + k}', np.array(2**(m + k), np.int32))
            ], f'{name}_branch_m{m}_k{k}')
            acc = branch if acc is None else b.node('Add', [acc, branch],
                                                    f'{name}_sum')
    # 4. unsigned: (sum + L * sum of w) / 2
    if not signed:
        codes = unpack_weight_words(arrays['weight_words'],
                                    attrs['in_channels'], m_bits,
                                    attrs['groups']).astype(np.int64)
        total = (levels * codes.sum((1, 2, 3))).astype(np.int32)
        acc = b.node('Add', [
            acc, b.const(f"{layer['name']}.l_weight_sums",
                         total.reshape(1, -1, 1, 1))
        ], f'{name}_sum_l')
        acc = b.node('Div', [acc, b.const('int_two', np.array(2, np.int32))],
                     f'{name}_acc')
    # 5. epilogue
    out = b.node('Cast', [acc], f'{name}_acc_float', to=1)
    shape = (1, -1, 1, 1)
    out = b.node('Mul', [
        out, b.const(f"{layer['name']}.out_scale",
                     arrays['out_scale'].reshape(shape))
    ], f'{name}_scaled')
    out = b.node('Add', [
        out, b.const(f"{layer['name']}.out_bias",
                     arrays['out_bias'].reshape(shape))
    ], name + ('_conv' if linear else ''))
    if linear:
        out = b.node('Squeeze', [out, b.const('axes23', np.array(
            [2, 3], np.int64))], name)
    return out


def _float_node(b: _Builder, args: List[str], node: dict) -> str:
    op, name = node['op'], node['name']
    layer = b.export.layers.get(node.get('layer'))
    if op == 'conv2d':
        attrs, arrays = layer['attributes'], b.export.layer_arrays(
            layer['name'])
        inputs = args + [b.const(f"{layer['name']}.weight", arrays['weight'])]
        if 'bias' in arrays:
            inputs.append(b.const(f"{layer['name']}.bias", arrays['bias']))
        return b.node('Conv', inputs, name,
                      kernel_shape=attrs['kernel_size'],
                      strides=attrs['stride'], pads=_pads(attrs['padding']),
                      dilations=attrs['dilation'], group=attrs['groups'])
    if op == 'batch_norm':
        arrays = b.export.layer_arrays(layer['name'])
        mean = arrays['running_mean'].astype(np.float32)
        scale = arrays.get('weight', np.ones_like(mean)).astype(np.float32)
        bias = arrays.get('bias', np.zeros_like(mean)).astype(np.float32)
        inputs = args + [
            b.const(f"{layer['name']}.{role}", value)
            for role, value in (('weight', scale), ('bias', bias),
                                ('running_mean', mean),
                                ('running_var', arrays['running_var']))
        ]
        return b.node('BatchNormalization', inputs, name,
                      epsilon=layer['attributes']['eps'])
    if op == 'linear':
        arrays = b.export.layer_arrays(layer['name'])
        out = b.node('MatMul', [
            args[0], b.const(f"{layer['name']}.weight_t",
                             np.ascontiguousarray(arrays['weight'].T))
        ], name if 'bias' not in arrays else f'{name}_mm')
        if 'bias' in arrays:
            out = b.node('Add', [
                out, b.const(f"{layer['name']}.bias", arrays['bias'])
            ], name)
        return out
    if op == 'relu':
        return b.node('Relu', args, name)
    if op == 'relu6':
        return b.node('Clip', args + [
            b.const('zero', np.array(0, np.float32)),
            b.const('six', np.array(6, np.float32))
        ], name)
    if op == 'add':
        return b.node('Add', args, name)
    if op == 'max_pool2d':
        attrs = node['attributes']
        return b.node('MaxPool', args, name,
                      kernel_shape=attrs['kernel_size'],
                      strides=attrs['stride'], pads=_pads(attrs['padding']),
                      dilations=attrs['dilation'],
                      ceil_mode=int(attrs['ceil_mode']))
    if op == 'identity':
        return b.node('Identity', args, name)
    if op == 'flatten':
        return b.node('Flatten', args, name, axis=1)
    raise ValueError(f'node {name!r}: op {op!r} has no ONNX form')


def build_onnx(export, mode: str = 'plain'):
    """The ONNX model of an export.

    Args:
        export (PackedExport | str): the export or its directory.
        mode (str): ``'custom'`` (one ``mmbinary.MBBConv`` node per MBB
            layer) or ``'plain'`` (standard ops only).

    Returns:
        onnx.ModelProto: checked with ``onnx.checker.check_model``.
    """
    import onnx
    from onnx import TensorProto, helper
    if mode not in ('custom', 'plain'):
        raise ValueError(f"mode must be 'custom' or 'plain', got {mode!r}")
    if isinstance(export, str):
        export = read_export(export)
    b = _Builder(export)
    values, graph_inputs = {}, []
    shapes = {node['name']: node.get('shape') or [] for node in export.nodes}

    def dims(name: str, value: str) -> list:
        # batch and spatial sizes are free, channels fixed
        shape = shapes[value]
        return ['N'] + list(shape[1:2]) + [
            f'{name}_d{i}' for i in range(2, len(shape))
        ]

    for node in export.nodes:
        if node['op'] == 'input':
            graph_inputs.append(
                helper.make_tensor_value_info(node['name'],
                                              TensorProto.FLOAT,
                                              dims(node['name'],
                                                   node['name'])))
            values[node['name']] = b.fresh(node['name'])
            continue
        args = [values[name] for name in node['inputs']]
        if node['op'] in ('mbb_conv2d', 'mbb_linear'):
            build = _custom_mbb if mode == 'custom' else _plain_mbb
            values[node['name']] = build(b, args[0], node,
                                         export.layers[node['layer']])
        else:
            values[node['name']] = _float_node(b, args, node)
    outputs = []
    for index, name in enumerate(export.manifest['graph']['outputs']):
        out = f'output_{index}'
        b.nodes.append(helper.make_node('Identity', [values[name]], [out],
                                        name=out))
        outputs.append(
            helper.make_tensor_value_info(out, TensorProto.FLOAT,
                                          dims(out, name)))
    graph = helper.make_graph(b.nodes, f'mmbinary_{mode}', graph_inputs,
                              outputs, b.initializers)
    opsets = [helper.make_opsetid('', OPSET)]
    if mode == 'custom':
        opsets.append(helper.make_opsetid(DOMAIN, 1))
    model = helper.make_model(graph, opset_imports=opsets,
                              producer_name='mmbinary')
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model)
    return model


def export_onnx(export, path: str, mode: str = 'plain') -> None:
    """Write :func:`build_onnx`'s model to ``path``."""
    import onnx
    onnx.save_model(build_onnx(export, mode), path)
