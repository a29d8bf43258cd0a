# Copyright (c) mmbinary contributors. All rights reserved.
"""Convert torchvision's MobileNetV2 checkpoint to mmdet's (or mmseg's)
``MobileNetV2`` backbone keys.

The result is ``{'state_dict': ...}`` without the classifier, checked by a
``strict=True`` load into the library's backbone (``widen_factor=1.0``).
Use it as the backbone's ``init_cfg=dict(type='Pretrained',
checkpoint=...)``. ``tools/dataset_converters/prepare_demo_data.py`` uses
:func:`convert_torchvision_mobilenetv2` for the demo's pretrained weights.
Example::

    python tools/model_converters/torchvision_mobilenetv2_to_mmdet.py \\
        mobilenet_v2-b0353104.pth mobilenet_v2_mmdet.pth
"""
import argparse
import os
import os.path as osp
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional

import torch

#: Target key layouts of :func:`convert_torchvision_mobilenetv2`.
MOBILENET_LAYOUTS = ('mmdet', 'mmseg')
# Inverted-residual blocks per stage of MobileNetV2 (torchvision's
# features.1 ... features.17).
_MBV2_STAGE_BLOCKS = (1, 2, 3, 4, 3, 3, 1)


def convert_torchvision_mobilenetv2(
        state_dict: Mapping[str, torch.Tensor],
        layout: str = 'mmdet') -> Dict[str, torch.Tensor]:
    """Rename torchvision ``MobileNetV2`` keys for mmdet's or mmseg's
    ``MobileNetV2`` backbone (``widen_factor=1.0``).

    torchvision's ``features.0`` is ``conv1``, ``features.1``-``17`` are
    the blocks of ``layer1``-``layer7`` and ``features.18`` is ``conv2``
    (mmdet only: mmseg's backbone ends at ``layer7``); the classifier is
    dropped. In a block, mmdet names the convs ``expand_conv``,
    ``depthwise_conv`` and ``linear_conv``; mmseg numbers them
    ``conv.0``, ``conv.1`` (and ``conv.2``).

    Args:
        state_dict (Mapping[str, Tensor]): torchvision's state dict.
        layout (str): ``'mmdet'`` or ``'mmseg'``.

    Returns:
        OrderedDict[str, Tensor]: the renamed tensors (not copied), in
        torchvision's order.
    """
    if layout not in MOBILENET_LAYOUTS:
        raise ValueError(f'layout must be one of {MOBILENET_LAYOUTS}, got '
                         f'{layout!r}')
    blocks = [
        f'layer{stage}.{i}'
        for stage, n in enumerate(_MBV2_STAGE_BLOCKS, 1) for i in range(n)
    ]
    expands = {
        int(k.split('.')[1])
        for k in state_dict if k.startswith('features.') and '.conv.3.' in k
    }
    converted = OrderedDict()
    for key, value in state_dict.items():
        new_key = _convert_mobilenetv2_key(key, blocks, expands, layout)
        if new_key is not None:
            converted[new_key] = value
    return converted


def _convert_mobilenetv2_key(key: str, blocks: List[str], expands: set,
                             layout: str) -> Optional[str]:
    """One torchvision key in ``layout``; None for dropped keys."""
    parts = key.split('.')
    if parts[0] == 'classifier':
        return None
    if parts[0] != 'features' or len(parts) < 4:
        raise KeyError(f'not a torchvision MobileNetV2 key: {key}')
    index = int(parts[1])
    unit = {'0': 'conv', '1': 'bn'}
    if index == 0:  # Conv-BN-ReLU6 stem
        return f'conv1.{unit[parts[2]]}.' + '.'.join(parts[3:])
    if index == len(blocks) + 1:  # the last 1x1 conv to 1280 channels
        if layout == 'mmseg':
            return None
        return f'conv2.{unit[parts[2]]}.' + '.'.join(parts[3:])
    if not 1 <= index <= len(blocks) or parts[2] != 'conv':
        raise KeyError(f'not a torchvision MobileNetV2 key: {key}')
    # torchvision block: [expand Conv-BN-ReLU6 as 0.0/0.1], depthwise
    # Conv-BN-ReLU6 as k.0/k.1, then the linear conv and its BN as plain
    # indices. Name each tensor by (role, conv|bn).
    expand = index in expands
    roles = ['expand', 'depthwise', 'linear'] if expand else [
        'depthwise', 'linear'
    ]
    slot = int(parts[3])
    if slot < len(roles) - 1:  # a Conv-BN-ReLU6 sequence
        role, kind, rest = roles[slot], unit[parts[4]], parts[5:]
    else:  # the linear conv (slot n - 1) or its BN (slot n)
        role = 'linear'
        kind = 'conv' if slot == len(roles) - 1 else 'bn'
        rest = parts[4:]
    if layout == 'mmdet':
        name = f'{role}_conv'
    else:
        name = f'conv.{roles.index(role)}'
    return f'{blocks[index - 1]}.{name}.{kind}.' + '.'.join(rest)


def check_mobilenetv2_state_dict(state_dict: Mapping[str, torch.Tensor],
                                 layout: str) -> int:
    """Load ``state_dict`` into mmdet's or mmseg's ``MobileNetV2`` with
    ``strict=True``; raise when a key or a shape does not match.

    Returns:
        int: the number of tensors loaded.
    """
    if layout == 'mmdet':
        from mmdet.models.backbones import MobileNetV2
        model = MobileNetV2(widen_factor=1.0, out_indices=(7, ))
    elif layout == 'mmseg':
        from mmseg.models.backbones import MobileNetV2
        model = MobileNetV2(widen_factor=1.0)
    else:
        raise ValueError(f'layout must be one of {MOBILENET_LAYOUTS}, got '
                         f'{layout!r}')
    model.load_state_dict(state_dict, strict=True)
    return len(state_dict)


def convert_checkpoint(src: str, dst: str, layout: str) -> Dict[str, int]:
    """Read a torchvision checkpoint, convert, check and save it.

    Returns:
        dict: ``tensors`` written and ``dropped`` (the classifier).
    """
    state_dict = torch.load(src, map_location='cpu', weights_only=True)
    if 'state_dict' in state_dict:
        state_dict = state_dict['state_dict']
    converted = convert_torchvision_mobilenetv2(state_dict, layout)
    check_mobilenetv2_state_dict(converted, layout)
    if osp.dirname(dst):
        os.makedirs(osp.dirname(dst), exist_ok=True)
    torch.save({'state_dict': converted}, dst)
    return dict(tensors=len(converted),
                dropped=len(state_dict) - len(converted))


def main() -> None:
    parser = argparse.ArgumentParser(
        description='torchvision MobileNetV2 -> mmdet/mmseg MobileNetV2')
    parser.add_argument('src', help='torchvision checkpoint (a state dict)')
    parser.add_argument('dst', help='where to save the converted checkpoint')
    parser.add_argument(
        '--layout',
        choices=MOBILENET_LAYOUTS,
        default='mmdet',
        help='target backbone: mmdet.models.backbones.MobileNetV2 or '
        'mmseg.models.backbones.MobileNetV2 (default: mmdet)')
    args = parser.parse_args()
    counts = convert_checkpoint(args.src, args.dst, args.layout)
    print(f"{counts['tensors']} tensors in the {args.layout} layout (dropped "
          f"{counts['dropped']}) -> {args.dst}")


if __name__ == '__main__':
    main()
