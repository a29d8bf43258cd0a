# Copyright (c) mmbinary contributors. All rights reserved.
"""Test vectors of an export: seeded random inputs run through the packed
PyTorch model (the compiled op), with every MBB node's input, activation
words, integer accumulators and output, so that a hardware simulation can
be checked layer by layer.

Keys of ``vectors.safetensors`` (``B`` vectors, the batch axis first)::

    input.{i}            graph input i, float32 (B, ...)
    output.{j}           graph output j, float32 (PyTorch)
    {node}.input         float32 input of an MBB node, (B, C, H, W)
    {node}.act_words     int64 (B, H, W, groups, K, Wg) activation words
    {node}.acc           int32 (B, O, Ho, Wo) accumulators
    {node}.output        float32 (B, O, Ho, Wo) output

An ``mbb_linear`` node's input and output have the layer's shapes,
(B, ..., C) and (B, ..., O); its words and accumulators are those of its
1x1 convolution on (B', C, 1, 1), ``B'`` the product of the leading
dimensions.
"""
from typing import Dict

import numpy as np
import torch
from torch import fx

from mmbinary.models.packing import PackedMBBConv2d
from mmbinary.ops import mbb_conv2d_accumulate, quantize_pack

from .format import PackedExport, save_tensors, tensor_entry


class _Recorder(fx.Interpreter):
    """Runs a traced part and keeps the packed layers' inputs/outputs."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.records: Dict[str, tuple] = {}

    def call_module(self, target, args, kwargs):
        out = super().call_module(target, args, kwargs)
        module = self.fetch_attr(target)
        if isinstance(module, PackedMBBConv2d):
            # (copies: later in-place ops, e.g. ReLU(inplace=True), change
            # the tensors themselves)
            self.records[self.current_node_name] = (module, args[0].clone(),
                                                    out.clone())
        return out

    def run_node(self, node):
        self.current_node_name = node.name
        return super().run_node(node)


def random_inputs(export: PackedExport, count: int,
                  seed: int) -> list:
    """``count`` float32 standard-normal inputs per graph input, from
    ``numpy.random.default_rng(seed)`` (the inputs in order)."""
    rng = np.random.default_rng(seed)
    return [
        rng.standard_normal((count, *entry['shape'][1:]), dtype=np.float32)
        for entry in export.manifest['inputs']
    ]


@torch.no_grad()
def make_vectors(gm: fx.GraphModule, export: PackedExport, count: int,
                 seed: int) -> Dict[str, np.ndarray]:
    """Run ``count`` seeded random inputs through the traced packed part.

    Returns:
        dict: key -> np.ndarray (see the module docstring).
    """
    inputs = random_inputs(export, count, seed)
    recorder = _Recorder(gm)
    outputs = recorder.run(*[torch.from_numpy(x) for x in inputs])
    flat = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
    arrays = {f'input.{i}': x for i, x in enumerate(inputs)}
    arrays.update({f'output.{j}': out.numpy() for j, out in enumerate(flat)})
    for name, (module, x, out) in recorder.records.items():
        x4 = x if x.dim() == 4 else x.reshape(-1, module.in_channels, 1, 1)
        words = quantize_pack(x4.contiguous(), module.a_bits,
                              float(module.inv_step), module.signed,
                              module.groups)
        acc = mbb_conv2d_accumulate(
            words, module.weight_words, in_channels=module.in_channels,
            out_channels=module.out_channels, w_bits=module.w_bits,
            a_bits=module.a_bits, signed=module.signed,
            kernel_size=module.kernel_size, stride=module.stride,
            padding=module.padding, dilation=module.dilation,
            groups=module.groups)
        out4 = out.reshape(acc.shape)
        epilogue = acc.float() * module.out_scale.view(1, -1, 1, 1) + \
            module.out_bias.view(1, -1, 1, 1)
        if not torch.equal(epilogue, out4):
            raise RuntimeError(f'node {name!r}: the packed layer output is '
                               'not its accumulators epilogue')
        arrays.update({
            f'{name}.input': x.numpy(),
            f'{name}.act_words': words.numpy(),
            f'{name}.acc': acc.numpy(),
            f'{name}.output': out.numpy()
        })
    return arrays


def write_vectors(gm: fx.GraphModule, export: PackedExport, path: str,
                  count: int, seed: int) -> dict:
    """Write the vectors file; return its manifest section."""
    if count < 1:
        raise ValueError(f'vectors must be >= 1, got {count}')
    arrays = make_vectors(gm, export, count, seed)
    save_tensors(path, arrays)
    return dict(
        count=count,
        seed=seed,
        inputs='numpy.random.default_rng(seed).standard_normal((count, '
        '*shape[1:]), dtype=float32), one draw per graph input in order',
        per_node=['input', 'act_words', 'acc', 'output'],
        tensors={key: tensor_entry(key, value)
                 for key, value in arrays.items()})
