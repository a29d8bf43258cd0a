# Copyright (c) mmbinary contributors. All rights reserved.
"""Run an exported packed model (or model part) in NumPy, without PyTorch.

The graph of the manifest is interpreted node by node, whatever part of a
model was exported. MBB layers run in integer arithmetic exactly as the
packed op does (``docs/export.md``), with the functions of the packed
format (:mod:`mmbinary.packed_format`):

1. activation levels ``q`` from the float32 input, in float32, rounding
   half to even, in the op's order of operations (``activation_levels``);
2. packing of the levels' bit planes into 64-bit words
   (``pack_activation_levels``);
3. AND + popcount accumulation (``mbb_conv2d_accumulate_numpy``);
4. the float32 epilogue ``float32(acc) * out_scale + out_bias`` (two
   roundings, ``epilogue``).

Steps 1-4 are bit-exact with the compiled op. The float layers left in the
model (conv, batch norm, linear) run in float64 and are rounded to float32,
so they agree with PyTorch to float32 rounding, not bit for bit; an MBB
layer after them may then see an input that a rounding moved across a
quantization boundary. :func:`verify_vectors` therefore checks each MBB
layer on the input PyTorch gave it, which is exact.
"""
from typing import Dict, List, Optional, Sequence

import numpy as np

from mmbinary.packed_format import (activation_levels, conv_out_size, epilogue,
                                    mbb_conv2d_accumulate_numpy,
                                    pack_activation_levels)

from .format import PackedExport, read_export


def mbb_layer_numpy(x: np.ndarray, attributes: dict,
                    arrays: Dict[str, np.ndarray],
                    record: Optional[dict] = None,
                    linear: bool = False) -> np.ndarray:
    """One packed MBB conv (or linear) layer.

    Args:
        x (np.ndarray): (N, C, H, W) float32 input ((*, C) for a linear).
        attributes (dict): the layer's manifest attributes.
        arrays (dict): its tensors by role (``weight_words``, ...).
        record (dict, optional): filled with ``act_words`` and ``acc``.
        linear (bool): an ``mbb_linear`` layer: ``x`` is (*, C) and runs
            as (-1, C, 1, 1).

    Returns:
        np.ndarray: float32 output.
    """
    lead = x.shape[:-1]
    if linear:
        x = x.reshape(-1, x.shape[-1], 1, 1)
    signed = attributes['mode'] == 'signed'
    groups = attributes['groups']
    q = activation_levels(x, attributes['a_bits'], attributes['inv_step'],
                          signed)
    act_words = pack_activation_levels(q, attributes['a_bits'], groups)
    acc = mbb_conv2d_accumulate_numpy(
        act_words, arrays['weight_words'],
        in_channels=attributes['in_channels'], w_bits=attributes['w_bits'],
        a_bits=attributes['a_bits'], signed=signed,
        stride=attributes['stride'], padding=attributes['padding'],
        dilation=attributes['dilation'], groups=groups)
    out = epilogue(acc, arrays['out_scale'], arrays['out_bias'])
    if np.isnan(x).any():  # NaN reaches the outputs that read it
        kernel = arrays['weight_words'].shape[2:4]
        out[_nan_outputs(x, attributes, kernel,
                         out.shape[1])] = np.float32('nan')
    if record is not None:
        record.update(act_words=act_words, acc=acc)
    if linear:
        out = out.reshape(*lead, -1)
    return out


def _nan_outputs(x: np.ndarray, attributes: dict, kernel,
                 out_channels: int) -> np.ndarray:
    """(N, O, Ho, Wo) mask of the outputs whose valid taps read a pixel with
    a NaN in their group's channels (as the packed op sets them)."""
    groups = attributes['groups']
    n, channels, height, width = x.shape
    pixels = np.isnan(x).reshape(n, groups, channels // groups, height,
                                 width).any(2)
    windows = _windows(pixels.astype(np.float32), kernel,
                       attributes['stride'], attributes['padding'],
                       attributes['dilation'], 0.0)  # (N, G, kh, kw, ..)
    hit = windows.reshape(*windows.shape[:2], -1, *windows.shape[-2:])
    hit = hit.any(2)  # (N, G, Ho, Wo)
    return np.repeat(hit, out_channels // groups, axis=1)


# ---- the float layers -------------------------------------------------------

def _windows(x: np.ndarray, kernel, stride, padding, dilation,
             pad_value: float) -> np.ndarray:
    """(N, C, H, W) -> (N, C, kh, kw, Ho, Wo) views of the padded input."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    x = np.pad(x, [(0, 0), (0, 0), (ph, ph), (pw, pw)],
               constant_values=pad_value)
    out_h = conv_out_size(x.shape[2], kh, sh, 0, dh)
    out_w = conv_out_size(x.shape[3], kw, sw, 0, dw)
    taps = [[
        x[:, :, i * dh:i * dh + sh * (out_h - 1) + 1:sh,
          j * dw:j * dw + sw * (out_w - 1) + 1:sw] for j in range(kw)
    ] for i in range(kh)]
    return np.stack([np.stack(row, 2) for row in taps], 2)


def conv2d_numpy(x: np.ndarray, weight: np.ndarray,
                 bias: Optional[np.ndarray], stride, padding, dilation,
                 groups: int) -> np.ndarray:
    """Float 2-D convolution (zero padding), in float64, rounded to
    float32."""
    kernel = weight.shape[2:]
    cols = _windows(x.astype(np.float64), kernel, stride, padding, dilation,
                    0.0)  # (N, C, kh, kw, Ho, Wo)
    n, channels, kh, kw, out_h, out_w = cols.shape
    out_channels = weight.shape[0]
    cols = cols.reshape(n, groups, channels // groups, kh, kw, out_h, out_w)
    w = weight.astype(np.float64).reshape(groups, out_channels // groups,
                                          channels // groups, kh, kw)
    out = np.einsum('ngcijyx,gocij->ngoyx', cols, w, optimize=True)
    out = out.reshape(n, out_channels, out_h, out_w)
    if bias is not None:
        out = out + bias.astype(np.float64).reshape(1, -1, 1, 1)
    return out.astype(np.float32)


def batch_norm_numpy(x: np.ndarray, arrays: Dict[str, np.ndarray],
                     eps: float) -> np.ndarray:
    """Batch norm with running statistics (eval), over axis 1."""
    shape = (1, -1) + (1, ) * (x.ndim - 2)
    mean = arrays['running_mean'].astype(np.float64).reshape(shape)
    var = arrays['running_var'].astype(np.float64).reshape(shape)
    out = (x.astype(np.float64) - mean) / np.sqrt(var + eps)
    if 'weight' in arrays:
        out = out * arrays['weight'].astype(np.float64).reshape(shape)
        out = out + arrays['bias'].astype(np.float64).reshape(shape)
    return out.astype(np.float32)


def max_pool2d_numpy(x: np.ndarray, kernel, stride, padding, dilation,
                     ceil_mode: bool) -> np.ndarray:
    """Max pooling as ``torch.nn.MaxPool2d`` (padding counts as -inf)."""
    extra = [0, 0]
    if ceil_mode:
        for axis in range(2):
            size = x.shape[2 + axis] + 2 * padding[axis]
            span = dilation[axis] * (kernel[axis] - 1) + 1
            out = -(-(size - span) // stride[axis]) + 1
            # the last window must start inside the input or left padding
            if (out - 1) * stride[axis] >= x.shape[2 + axis] + padding[axis]:
                out -= 1
            extra[axis] = max(0, (out - 1) * stride[axis] + span - size)
    x = np.pad(x, [(0, 0), (0, 0), (0, extra[0]), (0, extra[1])],
               constant_values=-np.inf)
    windows = _windows(x, kernel, stride, padding, dilation, -np.inf)
    return windows.max(axis=(2, 3)).astype(x.dtype)


def evaluate_node(export: PackedExport, node: dict,
                  args: Sequence[np.ndarray],
                  record: Optional[dict] = None) -> np.ndarray:
    """Compute one graph node from its input values.

    Args:
        export (PackedExport): the export the node belongs to.
        node (dict): a node of ``manifest['graph']['nodes']``.
        args (Sequence[np.ndarray]): the values of ``node['inputs']``.
        record (dict, optional): filled with an MBB node's ``act_words``
            and ``acc``.
    """
    op, attrs = node['op'], node.get('attributes', {})
    layer = export.layers.get(node.get('layer'))
    if op in ('mbb_conv2d', 'mbb_linear'):
        return mbb_layer_numpy(args[0], layer['attributes'],
                               export.layer_arrays(layer['name']), record,
                               linear=op == 'mbb_linear')
    if op == 'conv2d':
        arrays = export.layer_arrays(layer['name'])
        la = layer['attributes']
        return conv2d_numpy(args[0], arrays['weight'], arrays.get('bias'),
                            la['stride'], la['padding'], la['dilation'],
                            la['groups'])
    if op == 'batch_norm':
        return batch_norm_numpy(args[0], export.layer_arrays(layer['name']),
                                layer['attributes']['eps'])
    if op == 'linear':
        arrays = export.layer_arrays(layer['name'])
        out = args[0].astype(np.float64) @ arrays['weight'].astype(
            np.float64).T
        if 'bias' in arrays:
            out = out + arrays['bias']
        return out.astype(np.float32)
    if op == 'relu':
        return np.maximum(args[0], np.float32(0))
    if op == 'relu6':
        return np.clip(args[0], np.float32(0), np.float32(6))
    if op == 'add':
        return args[0] + args[1]
    if op == 'max_pool2d':
        return max_pool2d_numpy(args[0], attrs['kernel_size'],
                                attrs['stride'], attrs['padding'],
                                attrs['dilation'], attrs['ceil_mode'])
    if op == 'identity':
        return args[0]
    if op == 'flatten':
        return args[0].reshape(args[0].shape[0], -1)
    raise ValueError(f"node {node['name']!r}: op {op!r} is not supported")


def run_export(export, inputs: Sequence[np.ndarray],
               keep: bool = False) -> List[np.ndarray]:
    """Run an exported graph.

    Args:
        export (PackedExport | str): an export (or its directory).
        inputs (Sequence[np.ndarray]): float32 arrays, one per input node.
        keep (bool): also return every node's value.

    Returns:
        list[np.ndarray] | tuple[list, dict]: the graph outputs, and with
        ``keep`` a dict node name -> value (MBB nodes:
        dict(output, act_words, acc)).
    """
    if isinstance(export, str):
        export = read_export(export)
    values, kept = {}, {}
    input_nodes = [n for n in export.nodes if n['op'] == 'input']
    if len(inputs) != len(input_nodes):
        raise ValueError(f'the graph has {len(input_nodes)} inputs, got '
                         f'{len(inputs)} arrays')
    feed = iter(inputs)
    for node in export.nodes:
        if node['op'] == 'input':
            value = np.asarray(next(feed), dtype=np.float32)
            record = None
        else:
            record = {} if node['op'].startswith('mbb_') else None
            value = evaluate_node(export, node,
                                  [values[name] for name in node['inputs']],
                                  record)
        values[node['name']] = value
        if keep:
            kept[node['name']] = dict(output=value, **record) if record \
                is not None else value
    outputs = [values[name] for name in export.manifest['graph']['outputs']]
    return (outputs, kept) if keep else outputs


def verify_vectors(export) -> Dict[str, int]:
    """Check an export's test vectors with this reference, layer by layer:
    from each MBB node's recorded input, the activation words, the integer
    accumulators and the float32 outputs must be equal to the recorded
    ones, bit for bit.

    Returns:
        dict: ``mbb_nodes`` checked and ``vectors`` (the batch size).

    Raises:
        AssertionError: naming the node and the array that differ.
    """
    if isinstance(export, str):
        export = read_export(export)
    vectors = export.load_vectors()
    checked = 0
    for node in export.nodes:
        if not node['op'].startswith('mbb_'):
            continue
        name = node['name']
        record = {}
        out = evaluate_node(export, node, [vectors[f'{name}.input']], record)
        for what, value in (('act_words', record['act_words']),
                            ('acc', record['acc']), ('output', out)):
            expected = vectors[f'{name}.{what}']
            if value.dtype != expected.dtype or not np.array_equal(
                    value, expected):
                raise AssertionError(
                    f'node {name!r}: {what} of the NumPy reference differs '
                    'from the test vector')
        checked += 1
    return dict(mbb_nodes=checked, vectors=int(vectors['input.0'].shape[0]))
