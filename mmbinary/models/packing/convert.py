# Copyright (c) mmbinary contributors. All rights reserved.
"""Convert a trained MBB model to its packed inference form, and rebuild
that form from a packed checkpoint.

A packed checkpoint is an ordinary mmengine checkpoint whose
``meta['mmbinary_packed']`` holds the layout (which modules are packed
layers, with their configs, and which norms were folded), so that a model
built from the same config can take the packed form before its state dict
is loaded, without any float weight of the packed layers.
"""
from typing import Dict, Optional

import torch
from torch import nn

from mmbinary.utils import safe_torch_load

from ..layers import MBBConv2d, MBBLinear
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


def convert_to_packed(model: nn.Module, fold_norms: bool = True) -> nn.Module:
    """Replace every MBBConv2d / MBBLinear of a trained model, in place, by
    its packed layer, folding the batch norm that directly follows it.

    Args:
        model (nn.Module): a trained model whose activation quantizers have
            seen data (or were loaded from a checkpoint).
        fold_norms (bool): fold batch norms into the epilogues.

    Returns:
        nn.Module: ``model``, in eval mode.
    """
    model.eval()
    norms: Dict[str, str] = {}
    if fold_norms:
        norms = dict(find_layer_norm_pairs(model, tuple(PACKED_TYPES)))
    layers = [(name, module) for name, module in model.named_modules()
              if type(module) in PACKED_TYPES]
    for name, module in layers:
        if not bool(module.act_quantizer.initialized) or int(
                module.act_quantizer.signed) < 0:
            raise RuntimeError(
                f'{name}: its activation quantizer has not seen data yet; '
                'load a trained checkpoint or run a batch before packing')
    for name, module in layers:
        norm_name = norms.get(name)
        norm = model.get_submodule(norm_name) if norm_name else None
        packed = PACKED_TYPES[type(module)].from_mbb(module, norm)
        _replace(model, name, packed.to(module.weight.device))
        if norm_name:
            _replace(model, norm_name, FoldedNorm())
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


def apply_packed_layout(model: nn.Module, layout: dict) -> nn.Module:
    """Give a freshly built model the packed form described by ``layout``
    (empty packed layers, folded norms removed), ready for
    ``load_state_dict`` of a packed checkpoint.

    Args:
        model (nn.Module): built from the config the checkpoint came from.
        layout (dict): from :func:`packed_layout`.
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
        _replace(model, name, types[entry['type']](**entry['config']))
    for name in folded:
        _replace(model, name, FoldedNorm())
    model.eval()  # (some backbones' train() returns None)
    return model


def load_packed_checkpoint(model: nn.Module,
                           filename: str,
                           map_location: Optional[str] = 'cpu') -> dict:
    """Load a packed checkpoint into a model built from its config
    (strictly: every packed buffer must be there).

    Returns:
        dict: the checkpoint (its ``meta`` and the rest).
    """
    checkpoint = safe_torch_load(filename, map_location=map_location)
    layout = (checkpoint.get('meta') or {}).get(LAYOUT_KEY)
    if layout is None:
        raise ValueError(
            f'{filename} is not a packed checkpoint (no '
            f"meta['{LAYOUT_KEY}']); make one with tools/pack_model.py")
    apply_packed_layout(model, layout)
    model.load_state_dict(checkpoint['state_dict'], strict=True)
    return checkpoint
