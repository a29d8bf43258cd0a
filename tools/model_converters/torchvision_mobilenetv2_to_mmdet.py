# Copyright (c) mmbinary contributors. All rights reserved.
"""Convert torchvision's MobileNetV2 checkpoint to mmdet's (or mmseg's)
``MobileNetV2`` backbone keys.

The result is ``{'state_dict': ...}`` without the classifier, checked by a
``strict=True`` load into the library's backbone (``widen_factor=1.0``).
Use it as the backbone's ``init_cfg=dict(type='Pretrained',
checkpoint=...)``. Example::

    python tools/model_converters/torchvision_mobilenetv2_to_mmdet.py \\
        mobilenet_v2-b0353104.pth mobilenet_v2_mmdet.pth
"""
import argparse
import os
import os.path as osp

import torch

from mmbinary.datasets.demo_data import (MOBILENET_LAYOUTS,
                                         check_mobilenetv2_state_dict,
                                         convert_torchvision_mobilenetv2)


def parse_args() -> argparse.Namespace:
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
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    state_dict = torch.load(args.src, map_location='cpu', weights_only=True)
    if 'state_dict' in state_dict:
        state_dict = state_dict['state_dict']
    converted = convert_torchvision_mobilenetv2(state_dict, args.layout)
    check_mobilenetv2_state_dict(converted, args.layout)
    if osp.dirname(args.dst):
        os.makedirs(osp.dirname(args.dst), exist_ok=True)
    torch.save({'state_dict': converted}, args.dst)
    print(f'{len(converted)} tensors in the {args.layout} layout (dropped '
          f'{len(state_dict) - len(converted)}) -> {args.dst}')


if __name__ == '__main__':
    main()
