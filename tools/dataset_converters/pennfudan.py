# Copyright (c) mmbinary contributors. All rights reserved.
"""Convert the original Penn-Fudan release to the accuracy study's layout.

Reads ``SRC``, the ``PennFudanPed/`` folder of the official zip of the
Penn-Fudan Database for Pedestrian Detection and Segmentation (University
of Pennsylvania)::

    PNGImages/<stem>.png        RGB images, e.g. FudanPed00001.png
    PedMasks/<stem>_mask.png    instance ids: 0 background, 1..N pedestrians
    Annotation/<stem>.txt       not read

and writes, under ``OUT`` (``configs/pennfudan/*.py`` look in
``data/pennfudan``)::

    images/<stem>.jpg                RGB, JPEG quality 90
    annotations/{train,val}.json     COCO, one category ``person``, RLE masks
    seg_masks/<stem>.png             uint8: 0 background, 1 person
    splits/{train,val}.txt           the stems of each split

Boxes are the extents of the instance masks, ``x, y, w, h`` with
``w = xmax - xmin + 1`` (pixels counted inclusively). The split is the
project's fixed one: :data:`VAL_STEMS` (50 images) is ``val``, every other
image ``train`` (120 images). Everything is converted in memory before
anything is written, so a refused source writes nothing. An existing
non-empty ``OUT`` is refused unless ``--force``, which writes over files of
the same name and removes none. Example::

    python tools/dataset_converters/pennfudan.py PennFudanPed data/pennfudan
"""
import argparse
import json
import os
import os.path as osp
import sys
import time
from typing import Callable, Dict, List, NamedTuple, Tuple

import cv2
import mmcv
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

#: The project's validation images (file stems); all others are ``train``.
VAL_STEMS = (
    'FudanPed00001', 'FudanPed00004', 'FudanPed00009', 'FudanPed00011',
    'FudanPed00016', 'FudanPed00019', 'FudanPed00024', 'FudanPed00025',
    'FudanPed00026', 'FudanPed00036', 'FudanPed00038', 'FudanPed00042',
    'FudanPed00053', 'FudanPed00056', 'FudanPed00063', 'FudanPed00065',
    'FudanPed00067', 'FudanPed00073', 'PennPed00004', 'PennPed00006',
    'PennPed00007', 'PennPed00011', 'PennPed00012', 'PennPed00017',
    'PennPed00018', 'PennPed00020', 'PennPed00025', 'PennPed00029',
    'PennPed00030', 'PennPed00034', 'PennPed00038', 'PennPed00040',
    'PennPed00044', 'PennPed00047', 'PennPed00049', 'PennPed00051',
    'PennPed00053', 'PennPed00056', 'PennPed00057', 'PennPed00060',
    'PennPed00063', 'PennPed00068', 'PennPed00069', 'PennPed00070',
    'PennPed00075', 'PennPed00076', 'PennPed00080', 'PennPed00083',
    'PennPed00088', 'PennPed00093')
SPLITS = ('train', 'val')
CATEGORY = dict(id=1, name='person')
JPEG_QUALITY = 90
IMAGE_DIR = 'PNGImages'
MASK_DIR = 'PedMasks'
MASK_SUFFIX = '_mask.png'
SOURCE_LAYOUT = (f'{IMAGE_DIR}/<stem>.png and {MASK_DIR}/<stem>{MASK_SUFFIX}'
                 ' (the PennFudanPed/ folder of the official zip)')

Log = Callable[[str], None]


class SourceError(ValueError):
    """``SRC`` is not the original Penn-Fudan release."""


class Sample(NamedTuple):
    """One converted image, in memory.

    Attributes:
        stem (str): the file stem, e.g. ``FudanPed00001``.
        jpeg (bytes): the encoded ``images/<stem>.jpg``.
        seg_png (bytes): the encoded ``seg_masks/<stem>.png``.
        height (int): image height.
        width (int): image width.
        instances (List[dict]): ``bbox``, ``area`` and ``segmentation`` per
            instance, in instance-id order.
    """
    stem: str
    jpeg: bytes
    seg_png: bytes
    height: int
    width: int
    instances: List[dict]


def split_of(stem: str) -> str:
    """The split of an image: ``val`` for :data:`VAL_STEMS`, else
    ``train``."""
    return 'val' if stem in VAL_STEMS else 'train'


def find_pairs(src: str) -> List[Tuple[str, str, str]]:
    """Pair the images and instance masks of the release.

    Args:
        src (str): the ``PennFudanPed`` folder.

    Returns:
        list: ``(stem, image_path, mask_path)``, sorted by stem.

    Raises:
        SourceError: a folder is missing, there are no images, or an image
            has no mask or a mask no image.
    """
    missing = [
        f'{d}/' for d in (IMAGE_DIR, MASK_DIR)
        if not osp.isdir(osp.join(src, d))
    ]
    if missing:
        hint = ''
        if osp.isdir(osp.join(src, 'PennFudanPed')):
            hint = f'; did you mean {osp.join(src, "PennFudanPed")}?'
        raise SourceError(f'{src} lacks {" and ".join(missing)}: expected '
                          f'{SOURCE_LAYOUT}{hint}')
    images = {
        name[:-len('.png')]: osp.join(src, IMAGE_DIR, name)
        for name in os.listdir(osp.join(src, IMAGE_DIR))
        if name.lower().endswith('.png')
    }
    masks = {}
    for name in os.listdir(osp.join(src, MASK_DIR)):
        path = osp.join(src, MASK_DIR, name)
        if not name.lower().endswith('.png'):
            continue
        if not name.endswith(MASK_SUFFIX):
            raise SourceError(f'{path} is not named <stem>{MASK_SUFFIX}')
        masks[name[:-len(MASK_SUFFIX)]] = path
    no_image = sorted(set(masks) - set(images))
    if no_image:
        raise SourceError(
            f'{masks[no_image[0]]} has no image '
            f'{osp.join(src, IMAGE_DIR, no_image[0] + ".png")}')
    no_mask = sorted(set(images) - set(masks))
    if no_mask:
        raise SourceError(
            f'{images[no_mask[0]]} has no mask '
            f'{osp.join(src, MASK_DIR, no_mask[0] + MASK_SUFFIX)}')
    if not images:
        raise SourceError(f'{osp.join(src, IMAGE_DIR)} holds no .png image: '
                          f'expected {SOURCE_LAYOUT}')
    return [(stem, images[stem], masks[stem]) for stem in sorted(images)]


def read_instance_mask(path: str) -> np.ndarray:
    """Read a ``PedMasks`` PNG as its instance ids.

    The masks are single-channel (palette or grey) PNGs whose pixel values
    are the ids; PIL keeps palette indices, which OpenCV would expand to
    colours.

    Returns:
        np.ndarray: (H, W) int64 ids, 0 background.
    """
    with Image.open(path) as image:
        if image.mode not in ('P', 'L', 'I', 'I;16'):
            raise SourceError(f'{path} is a {image.mode} image, not a '
                              'single-channel mask of instance ids')
        return np.asarray(image).astype(np.int64)


def mask_extent_box(mask: np.ndarray) -> List[float]:
    """The COCO box ``[x, y, w, h]`` of a non-empty binary mask: the extent
    of its pixels, ``w = xmax - xmin + 1`` and ``h = ymax - ymin + 1``."""
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [
        float(x0),
        float(y0),
        float(xs.max() - x0 + 1),
        float(ys.max() - y0 + 1)
    ]


def instance_annotations(ids: np.ndarray) -> List[dict]:
    """COCO fields of each instance of an instance-id mask.

    Args:
        ids (np.ndarray): (H, W) instance ids, 0 background.

    Returns:
        list: per non-zero id, in increasing order, ``bbox``
        (:func:`mask_extent_box`), ``area`` (pixel count) and
        ``segmentation`` (COCO RLE, ``counts`` as str).
    """
    instances = []
    for i in np.unique(ids):
        if i == 0:
            continue
        mask = np.asfortranarray(ids == i, dtype=np.uint8)
        rle = mask_utils.encode(mask)
        rle['counts'] = rle['counts'].decode('ascii')
        instances.append(
            dict(
                bbox=mask_extent_box(mask),
                area=float(mask.sum()),
                segmentation=rle))
    return instances


def convert_pair(stem: str, image_path: str, mask_path: str) -> Sample:
    """Convert one image and its instance mask, in memory."""
    image = mmcv.imread(image_path, 'color', backend='cv2')
    if image is None:
        raise SourceError(f'could not read the image {image_path}')
    ids = read_instance_mask(mask_path)
    if ids.shape != image.shape[:2]:
        raise SourceError(f'{mask_path} is {ids.shape[1]}x{ids.shape[0]} '
                          f'but {image_path} is {image.shape[1]}x'
                          f'{image.shape[0]}')
    ok, jpeg = cv2.imencode('.jpg', image,
                            [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    ok_seg, seg_png = cv2.imencode('.png', (ids > 0).astype(np.uint8))
    if not (ok and ok_seg):
        raise RuntimeError(f'could not encode {stem}')
    return Sample(stem, jpeg.tobytes(), seg_png.tobytes(), image.shape[0],
                  image.shape[1], instance_annotations(ids))


def coco_dict(samples: List[Sample], first_ann_id: int = 1) -> dict:
    """The COCO dict of one split.

    Image ids count from 1; annotation ids from ``first_ann_id``, so that
    they can be unique over the two splits.
    """
    coco = dict(images=[], annotations=[], categories=[dict(CATEGORY)])
    for image_id, sample in enumerate(samples, 1):
        coco['images'].append(
            dict(
                id=image_id,
                file_name=f'{sample.stem}.jpg',
                height=sample.height,
                width=sample.width))
        for instance in sample.instances:
            coco['annotations'].append(
                dict(
                    id=first_ann_id + len(coco['annotations']),
                    image_id=image_id,
                    category_id=CATEGORY['id'],
                    iscrowd=0,
                    **instance))
    return coco


def _write(path: str, data: bytes) -> None:
    with open(path, 'wb') as f:
        f.write(data)


def convert_pennfudan(src: str,
                      out: str,
                      force: bool = False,
                      log: Log = print) -> Dict[str, dict]:
    """Convert the release in ``src`` to the layout of ``out``.

    Args:
        src (str): the ``PennFudanPed`` folder.
        out (str): the output folder, e.g. ``data/pennfudan``.
        force (bool): write into a non-empty ``out``.
        log (Callable[[str], None]): progress messages.

    Returns:
        dict: ``{split: dict(images=..., instances=...)}``.

    Raises:
        FileExistsError: ``out`` is a file, or a non-empty folder and not
            ``force``.
        SourceError: ``src`` is not the original release.
    """
    if osp.exists(out) and not osp.isdir(out):
        raise FileExistsError(f'{out} exists and is not a folder')
    if osp.isdir(out) and os.listdir(out) and not force:
        raise FileExistsError(f'{out} is not empty; nothing was written '
                              '(--force writes over files of the same name)')
    pairs = find_pairs(src)
    absent = sorted(set(VAL_STEMS) - {stem for stem, _, _ in pairs})
    if absent:
        log(f'warning: {len(absent)} of the {len(VAL_STEMS)} validation '
            f'images are not in {src} (e.g. {absent[0]}); the split is not '
            "the project's")
    samples = {split: [] for split in SPLITS}
    for stem, image_path, mask_path in pairs:
        samples[split_of(stem)].append(
            convert_pair(stem, image_path, mask_path))
    for d in ('images', 'annotations', 'seg_masks', 'splits'):
        os.makedirs(osp.join(out, d), exist_ok=True)
    summary, first_ann_id = {}, 1
    for split in SPLITS:
        for sample in samples[split]:
            _write(osp.join(out, 'images', f'{sample.stem}.jpg'), sample.jpeg)
            _write(
                osp.join(out, 'seg_masks', f'{sample.stem}.png'),
                sample.seg_png)
        coco = coco_dict(samples[split], first_ann_id)
        first_ann_id += len(coco['annotations'])
        with open(osp.join(out, 'annotations', f'{split}.json'), 'w') as f:
            json.dump(coco, f)
        with open(osp.join(out, 'splits', f'{split}.txt'), 'w') as f:
            f.writelines(f'{sample.stem}\n' for sample in samples[split])
        summary[split] = dict(
            images=len(coco['images']), instances=len(coco['annotations']))
        log(f'{split}: {summary[split]["images"]} images, '
            f'{summary[split]["instances"]} instances')
    return summary


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert the original Penn-Fudan release (PennFudanPed/'
        ') to images/*.jpg, COCO annotations/{train,val}.json, '
        'seg_masks/*.png and splits/{train,val}.txt')
    parser.add_argument(
        'src', help='the PennFudanPed folder (PNGImages/, PedMasks/)')
    parser.add_argument(
        'out', help='output folder (the configs read data/pennfudan)')
    parser.add_argument(
        '--force',
        action='store_true',
        help='write into a non-empty output folder, over files of the same '
        'name')
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    start = time.perf_counter()
    try:
        convert_pennfudan(args.src, args.out, args.force)
    except (FileExistsError, SourceError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(f'wrote {args.out} in {time.perf_counter() - start:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
