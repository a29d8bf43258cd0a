# Copyright (c) mmbinary contributors. All rights reserved.
"""Convert a trained MBB model to its packed inference form, and rebuild
that form from a packed checkpoint.

A packed checkpoint is an ordinary mmengine checkpoint whose
``meta['mmbinary_packed']`` holds the layout (which modules are packed
layers, with their configs, and which norms were folded), so that a model
built from the same config can take the packed form before its state dict
is loaded, without any float weight of the packed layers.
"""
import math
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Union

import torch
from torch import nn

from mmbinary.quant import (ALLOW_BIT_CHANGE_KEY, BitWidthMismatchError,
                            bit_change_allowed)
from mmbinary.utils import safe_torch_load

from ..layers import MBBConv2d, MBBLinear
from .float_convs import use_onednn_convs
from .max_pool import use_channels_last_max_pools
from .norm_folding import find_layer_norm_pairs
from .packed_layers import PackedMBBConv2d, PackedMBBLinear

#: MBB layer type -> packed type.
PACKED_TYPES = {MBBConv2d: PackedMBBConv2d, MBBLinear: PackedMBBLinear}
#: Key of the layout in a packed checkpoint's ``meta``.
LAYOUT_KEY = 'mmbinary_packed'


class FoldedNorm(nn.Identity):
    """Stands where a batch norm was folded into the packed layer before
    it (an identity, kept as its own type so the layout can be read off)."""


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition('.')
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _check_packable(name: str, module: nn.Module) -> None:
    """Refuse a layer whose quantizer state cannot make a valid packed
    layer, naming it."""
    act = module.act_quantizer
    if not bool(act.initialized) or int(act.signed) < 0:
        raise RuntimeError(
            f'{name}: its activation quantizer has not seen data yet; '
            'load a trained checkpoint or run a batch before packing')
    clip = float(act.clip.detach())
    if not (math.isfinite(clip) and clip > 0):
        raise ValueError(
            f'{name}: its activation clip is {clip!r}; packing needs a '
            'finite clip > 0 (the packed step would be 1 / clip). The '
            'training diverged or the checkpoint is damaged: retrain or '
            'load another checkpoint')
    for tensor_name in ('weight', 'bias'):
        tensor = getattr(module, tensor_name)
        if tensor is not None and not bool(torch.isfinite(tensor).all()):
            raise ValueError(
                f'{name}: its {tensor_name} holds NaN or infinite values; '
                'packing needs finite ones')


def convert_to_packed(model: nn.Module, fold_norms: bool = True) -> nn.Module:
    """Replace every MBBConv2d / MBBLinear of a trained model, in place, by
    its packed layer, folding the batch norm that directly follows it; the
    float 1x1 convs left run on oneDNN (:mod:`.float_convs`).

    Every layer is checked before any is replaced: a quantizer that has not
    seen data, a clip that is not finite and > 0, or non-finite weights
    raise an error naming the layer, and the model is left as it was.

    Args:
        model (nn.Module): a trained model whose activation quantizers have
            seen data (or were loaded from a checkpoint).
        fold_norms (bool): fold batch norms into the epilogues.

    Returns:
        nn.Module: ``model``, in eval mode.

    Raises:
        RuntimeError: a layer's activation quantizer has seen no data.
        ValueError: a layer's clip is <= 0 or not finite, or its weight or
            bias is not finite.
    """
    model.eval()
    norms: Dict[str, str] = {}
    if fold_norms:
        norms = dict(find_layer_norm_pairs(model, tuple(PACKED_TYPES)))
    layers = [(name, module) for name, module in model.named_modules()
              if type(module) in PACKED_TYPES]
    for name, module in layers:
        _check_packable(name, module)
    for name, module in layers:
        norm_name = norms.get(name)
        norm = model.get_submodule(norm_name) if norm_name else None
        packed = PACKED_TYPES[type(module)].from_mbb(module, norm)
        _replace(model, name, packed.to(module.weight.device))
        if norm_name:
            _replace(model, norm_name, FoldedNorm())
    # The float 1x1 convs left (shortcuts) on oneDNN, as every other conv,
    # and the max pools (ResNet's stem) on the compiled kernel.
    use_onednn_convs(model)
    use_channels_last_max_pools(model)
    _enable_packed_flow(model)
    return model


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of the tensors in ``model``'s state dict (what a checkpoint of
    it stores)."""
    return sum(t.numel() * t.element_size()
               for t in model.state_dict().values()
               if isinstance(t, torch.Tensor))


def packed_layout(model: nn.Module) -> dict:
    """The layout of a packed model, for a checkpoint's meta.

    Returns:
        dict: ``layers`` (name -> dict(type, config)) and ``folded_norms``
        (names).
    """
    layers, folded = {}, []
    for name, module in model.named_modules():
        if isinstance(module, PackedMBBConv2d):
            layers[name] = dict(type=type(module).__name__,
                                config=module.config())
        elif isinstance(module, FoldedNorm):
            folded.append(name)
    return dict(layers=layers, folded_norms=folded)


def _bits_mismatches(model: nn.Module, layers: dict) -> List[str]:
    """Layers whose MBB form in ``model`` (from its config) has other bit
    widths than the packed ``layers`` entries (from the checkpoint)."""
    mismatches = []
    for name, entry in layers.items():
        module = model.get_submodule(name)
        if not isinstance(module, tuple(PACKED_TYPES)):
            continue  # (e.g. already packed)
        config = entry.get('config') or {}
        ours = (module.w_bits, module.a_bits)
        saved = (config.get('w_bits'), config.get('a_bits'))
        if ours != saved:
            mismatches.append(f'{name}: config W{ours[0]}A{ours[1]}, '
                              f'checkpoint W{saved[0]}A{saved[1]}')
    return mismatches


def apply_packed_layout(model: nn.Module, layout: dict) -> nn.Module:
    """Give a freshly built model the packed form described by ``layout``
    (empty packed layers, folded norms removed), ready for
    ``load_state_dict`` of a packed checkpoint.

    Args:
        model (nn.Module): built from the config the checkpoint came from.
        layout (dict): from :func:`packed_layout`.

    Raises:
        ValueError: the layout names a layer the model does not have, or
            an unknown packed type.
        BitWidthMismatchError: the model's MBB layers have other bit widths
            than the packed ones (the packed model would run at the
            checkpoint's), unless within
            :func:`mmbinary.quant.allow_bit_change`.
    """
    types = {cls.__name__: cls for cls in PACKED_TYPES.values()}
    try:
        layers, folded = layout['layers'], layout['folded_norms']
    except (TypeError, KeyError) as error:
        raise ValueError(f'not a packed layout: {error!r} missing') from None
    for name, entry in layers.items():
        if entry.get('type') not in types:
            raise ValueError(f'{name}: unknown packed layer type '
                             f"{entry.get('type')!r}")
        try:
            model.get_submodule(name)
        except AttributeError:
            raise ValueError(
                f'the packed checkpoint has a layer {name!r} that the model '
                'does not have; was it built from the same config?') from None
    mismatches = _bits_mismatches(model, layers)
    if mismatches and not bit_change_allowed():
        shown = '; '.join(mismatches[:5]) + (
            f'; and {len(mismatches) - 5} more' if len(mismatches) > 5 else '')
        raise BitWidthMismatchError(
            f'the packed checkpoint was made at other bit widths than the '
            f'config has ({len(mismatches)} layers): {shown}. Use the config '
            'it was packed from; to run it at the checkpoint\'s bit widths '
            f'anyway, set {ALLOW_BIT_CHANGE_KEY}=True in the config')
    for name, entry in layers.items():
        _replace(model, name, types[entry['type']](**entry['config']))
    for name in folded:
        _replace(model, name, FoldedNorm())
    model.eval()  # (some backbones' train() returns None)
    use_onednn_convs(model)  # as convert_to_packed
    use_channels_last_max_pools(model)
    _enable_packed_flow(model)
    return model


def _enable_packed_flow(model: nn.Module) -> None:
    """Packed activations between the packed convs of residual blocks
    (same outputs; see :mod:`.packed_flow`)."""
    from .packed_flow import enable_packed_flow
    enable_packed_flow(model)


def checkpoint_layout(checkpoint: Union[str, dict]) -> Optional[dict]:
    """The packed layout of a checkpoint, or None for an unpacked one.

    Args:
        checkpoint (str | dict): a checkpoint file or its loaded contents.
    """
    if isinstance(checkpoint, str):
        checkpoint = safe_torch_load(checkpoint, map_location='cpu')
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    return meta.get(LAYOUT_KEY) if isinstance(meta, dict) else None


def is_packed_checkpoint(checkpoint: Union[str, dict]) -> bool:
    """Whether a checkpoint (file or contents) is a packed one (its
    ``meta`` holds the packed layout)."""
    return checkpoint_layout(checkpoint) is not None


def load_packed_checkpoint(model: nn.Module,
                           filename: str,
                           map_location: Optional[str] = 'cpu') -> dict:
    """Load a packed checkpoint into a model built from its config
    (strictly: every packed buffer must be there).

    Returns:
        dict: the checkpoint (its ``meta`` and the rest).

    Raises:
        ValueError: not a packed checkpoint.
        BitWidthMismatchError: see :func:`apply_packed_layout`.
    """
    checkpoint = safe_torch_load(filename, map_location=map_location)
    layout = checkpoint_layout(checkpoint)
    if layout is None:
        raise ValueError(
            f'{filename} is not a packed checkpoint (no '
            f"meta['{LAYOUT_KEY}']); make one with tools/pack_model.py")
    apply_packed_layout(model, layout)
    model.load_state_dict(checkpoint['state_dict'], strict=True)
    return checkpoint


def load_trained_checkpoint(model: nn.Module,
                            filename: str,
                            allow_bits: bool = False) -> dict:
    """Load a trained (unpacked) checkpoint into a model built from its
    config, strictly; a ``module.`` prefix (DataParallel) is dropped, as
    mmengine's ``load_checkpoint`` does.

    Args:
        model (nn.Module): the model, built from the training config.
        filename (str): the checkpoint file.
        allow_bits (bool): accept MBB layers saved at other bit widths.

    Returns:
        dict: the checkpoint (``state_dict``, ``meta`` and the rest; a bare
        state dict comes back as ``dict(state_dict=...)``).

    Raises:
        CheckpointError: a damaged or unsafe file.
        ValueError: a packed checkpoint (its batch norms are folded).
        BitWidthMismatchError: layers of other bit widths.
    """
    from mmengine.runner.checkpoint import load_state_dict

    from mmbinary.quant import allow_bit_change
    checkpoint = safe_torch_load(filename, map_location='cpu')
    if is_packed_checkpoint(checkpoint):
        raise ValueError(
            f'{filename} is already packed (its meta holds {LAYOUT_KEY!r}); '
            'evaluate it with tools/test.py CONFIG CHECKPOINT --packed, or '
            'use the trained checkpoint it came from')
    if not isinstance(checkpoint, dict) or 'state_dict' not in checkpoint:
        checkpoint = dict(state_dict=checkpoint)
    state_dict = checkpoint['state_dict']
    metadata = getattr(state_dict, '_metadata', OrderedDict())
    state_dict = OrderedDict((re.sub(r'^module\.', '', key), value)
                             for key, value in state_dict.items())
    state_dict._metadata = metadata
    with allow_bit_change(allow_bits):
        load_state_dict(model, state_dict, strict=True)
    return checkpoint
