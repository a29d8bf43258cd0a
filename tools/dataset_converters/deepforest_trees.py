# Copyright (c) mmbinary contributors. All rights reserved.
"""DeepForest's aerial tree crowns as a COCO detection set: Pascal VOC
boxes parsed, images cut into tiles (boxes clipped, mostly hidden ones
dropped), COCO annotations written for mmdet's ``CocoDataset``.

A part of ``tools/dataset_converters/prepare_demo_data.py``, which passes
:func:`build_trees` the checked files of the ``deepforest`` wheel.
"""
import os
import os.path as osp
import xml.etree.ElementTree as ET
from collections import OrderedDict
from typing import List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import cv2
import mmcv
import numpy as np
from mmengine.fileio import dump

# The large image 528000_4978000 is the training region; the
# other large image (another area of the same site) and the two small images
# (other sites) are held out, so no validation pixel is in a training tile.
TREE_SPLITS = OrderedDict(
    train=('2019_YELL_2_528000_4978000_image_crop2', ),
    val=('2019_YELL_2_541000_4977000_image_crop', 'OSBS_029', 'SOAP_061'))
TREE_TILE = 400
# Least overlap of neighbouring training tiles; None: a grid of tiles that
# do not overlap (at most TREE_TILE px a side), so that each held-out tree is
# counted once.
TREE_OVERLAP = dict(train=100, val=None)
TREE_MIN_VISIBLE = 0.5
TREE_CATEGORY = 'tree'
JPEG_QUALITY = 90


class VocAnnotation(NamedTuple):
    """The parts of a Pascal VOC annotation the demo uses.

    Attributes:
        width (int): image width from ``<size>``.
        height (int): image height from ``<size>``.
        boxes (np.ndarray): (N, 4) float64 ``x1, y1, x2, y2``.
        names (List[str]): the N object names.
    """
    width: int
    height: int
    boxes: np.ndarray
    names: List[str]


def parse_voc_xml(data: Union[bytes, str]) -> VocAnnotation:
    """Parse a Pascal VOC xml annotation.

    Coordinates are taken as written, as pixel edges (DeepForest's
    convention: ``0 <= x1 < x2 <= width``), not VOC's 1-based inclusive
    pixels.

    Args:
        data (bytes | str): the xml document.

    Returns:
        VocAnnotation: image size, boxes and object names.
    """
    root = ET.fromstring(data)
    size = root.find('size')
    if size is None:
        raise ValueError('VOC xml has no <size>')
    width, height = int(size.findtext('width')), int(size.findtext('height'))
    boxes, names = [], []
    for i, obj in enumerate(root.iter('object')):
        box = obj.find('bndbox')
        if box is None:
            raise ValueError(f'VOC xml object {i} has no <bndbox>')
        x1, y1, x2, y2 = (
            float(box.findtext(k)) for k in ('xmin', 'ymin', 'xmax', 'ymax'))
        if not (x2 > x1 and y2 > y1):
            raise ValueError(f'VOC xml object {i} has an empty box '
                             f'{[x1, y1, x2, y2]}')
        boxes.append((x1, y1, x2, y2))
        names.append(obj.findtext('name', ''))
    return VocAnnotation(width, height,
                         np.asarray(boxes, np.float64).reshape(-1, 4), names)


def tile_starts(length: int, tile: int, overlap: int) -> List[int]:
    """Start offsets of tiles that cover ``[0, length)``.

    Tiles are spread evenly, the last one ending at ``length``, with at
    least ``overlap`` pixels shared by neighbours; one tile when
    ``length <= tile``.

    Args:
        length (int): the side to cover.
        tile (int): the tile side.
        overlap (int): the least overlap of neighbouring tiles,
            ``0 <= overlap < tile``.
    """
    if tile <= 0 or not 0 <= overlap < tile:
        raise ValueError(f'need tile > 0 and 0 <= overlap < tile, got '
                         f'tile={tile}, overlap={overlap}')
    if length <= tile:
        return [0]
    stride = tile - overlap
    n = -(-(length - tile) // stride) + 1
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def crop_boxes(boxes: np.ndarray,
               window: Sequence[float],
               min_visible: float = TREE_MIN_VISIBLE
               ) -> Tuple[np.ndarray, np.ndarray]:
    """Clip boxes to a window, in the window's coordinates.

    Args:
        boxes (np.ndarray): (N, 4) ``x1, y1, x2, y2``.
        window (Sequence[float]): ``x0, y0, x1, y1`` of the window.
        min_visible (float): keep a box when at least this fraction of its
            area lies in the window (and more than none).

    Returns:
        tuple: (M, 4) float64 clipped boxes shifted to the window's origin,
        and the (M,) indices of the kept boxes.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = window
    clipped = boxes.copy()
    clipped[:, 0::2] = clipped[:, 0::2].clip(x0, x1)
    clipped[:, 1::2] = clipped[:, 1::2].clip(y0, y1)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = np.flatnonzero((inside > 0) & (inside >= min_visible * area))
    return clipped[keep] - np.array([x0, y0, x0, y0], np.float64), keep


def tile_windows(width: int, height: int, tile: int,
                 overlap: Optional[int]) -> List[Tuple[int, int, int, int]]:
    """Row-major ``x0, y0, x1, y1`` windows that cover an image.

    Args:
        width (int): image width.
        height (int): image height.
        tile (int): tile side; an image side shorter than that is one tile.
        overlap (int, optional): tiles of ``tile`` px sharing at least
            ``overlap`` px (:func:`tile_starts`); None: a grid of tiles that
            do not overlap, each at most ``tile`` px a side.
    """
    if overlap is None:
        if tile <= 0:
            raise ValueError(f'need tile > 0, got {tile}')

        def edges(length: int) -> List[int]:
            n = -(-length // tile)
            return [round(i * length / n) for i in range(n + 1)]

        xs, ys = edges(width), edges(height)
        return [(x0, y0, x1, y1) for y0, y1 in zip(ys[:-1], ys[1:])
                for x0, x1 in zip(xs[:-1], xs[1:])]
    return [(x0, y0, min(x0 + tile, width), min(y0 + tile, height))
            for y0 in tile_starts(height, tile, overlap)
            for x0 in tile_starts(width, tile, overlap)]


class Tile(NamedTuple):
    """One tile of an image with its boxes.

    Attributes:
        x0 (int): left edge in the source image.
        y0 (int): top edge in the source image.
        image (np.ndarray): (h, w, ...) the pixels (a view of the source).
        boxes (np.ndarray): (M, 4) boxes in tile coordinates.
    """
    x0: int
    y0: int
    image: np.ndarray
    boxes: np.ndarray


def tile_detection_image(image: np.ndarray,
                         boxes: np.ndarray,
                         tile: int,
                         overlap: Optional[int],
                         min_visible: float = TREE_MIN_VISIBLE
                         ) -> List[Tile]:
    """Cut an image and its boxes into tiles; tiles without boxes are
    dropped.

    Args:
        image (np.ndarray): (H, W, ...) image.
        boxes (np.ndarray): (N, 4) ``x1, y1, x2, y2`` in image pixels.
        tile (int): tile side.
        overlap (int, optional): see :func:`tile_windows`.
        min_visible (float): see :func:`crop_boxes`.

    Returns:
        List[Tile]: row-major, the tiles that keep at least one box.
    """
    height, width = image.shape[:2]
    tiles = []
    for x0, y0, x1, y1 in tile_windows(width, height, tile, overlap):
        kept, _ = crop_boxes(boxes, (x0, y0, x1, y1), min_visible)
        if len(kept):
            tiles.append(Tile(x0, y0, image[y0:y1, x0:x1], kept))
    return tiles


def coco_detection_dict(images: Sequence[Tuple[str, int, int, np.ndarray]],
                        category: str) -> dict:
    """A COCO detection dict with one category.

    Args:
        images (Sequence[tuple]): ``(file_name, width, height, boxes)`` per
            image, boxes (M, 4) ``x1, y1, x2, y2``.
        category (str): the category name (id 1).

    Returns:
        dict: ``images``, ``annotations`` (``bbox`` as ``x, y, w, h``,
        ``iscrowd`` 0) and ``categories``; ids count from 1.
    """
    coco = dict(
        info=dict(description='mmbinary demo data'),
        images=[],
        annotations=[],
        categories=[dict(id=1, name=category, supercategory=category)])
    for image_id, (file_name, width, height, boxes) in enumerate(images, 1):
        coco['images'].append(
            dict(id=image_id, file_name=file_name, width=int(width),
                 height=int(height)))
        for x1, y1, x2, y2 in np.asarray(boxes, np.float64).reshape(-1, 4):
            w, h = float(x2 - x1), float(y2 - y1)
            coco['annotations'].append(
                dict(id=len(coco['annotations']) + 1, image_id=image_id,
                     category_id=1, bbox=[float(x1), float(y1), w, h],
                     area=w * h, iscrowd=0))
    return coco


def _decode(data: bytes, name: str, flag: str) -> np.ndarray:
    image = mmcv.imfrombytes(data, flag=flag, backend='cv2')
    if image is None:
        raise ValueError(f'could not decode {name}')
    return image


def build_trees(out_dir: str, files: Mapping[str, bytes]) -> dict:
    """Write ``images/*.jpg`` and ``annotations/{train,val}.json``.

    Args:
        out_dir (str): the ``trees`` folder to write.
        files (Mapping[str, bytes]): the checked files of the
            ``deepforest`` wheel (member path -> bytes); the images and
            annotations are found by file name (``<stem>.png``,
            ``<stem>.xml``).

    Returns:
        dict: ``{split: dict(images=..., boxes=...)}``.
    """
    paths = {osp.basename(member): member for member in files}
    counts = {}
    for split, stems in TREE_SPLITS.items():
        entries = []
        for stem in stems:
            xml_name = paths[f'{stem}.xml']
            ann = parse_voc_xml(files[xml_name])
            png_name = paths[f'{stem}.png']
            image = _decode(files[png_name], png_name, 'color')
            if image.shape[:2] != (ann.height, ann.width):
                raise ValueError(
                    f'{png_name} is {image.shape[1]}x{image.shape[0]} but '
                    f'{xml_name} says {ann.width}x{ann.height}')
            boxes = ann.boxes.copy()
            boxes[:, 0::2] = boxes[:, 0::2].clip(0, ann.width)
            boxes[:, 1::2] = boxes[:, 1::2].clip(0, ann.height)
            for tile in tile_detection_image(image, boxes, TREE_TILE,
                                             TREE_OVERLAP[split]):
                file_name = f'{stem}_x{tile.x0:04d}_y{tile.y0:04d}.jpg'
                mmcv.imwrite(
                    tile.image,
                    osp.join(out_dir, 'images', file_name),
                    params=[cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                height, width = tile.image.shape[:2]
                entries.append((file_name, width, height, tile.boxes))
        coco = coco_detection_dict(entries, TREE_CATEGORY)
        os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
        dump(coco, osp.join(out_dir, 'annotations', f'{split}.json'))
        counts[split] = dict(
            images=len(coco['images']), boxes=len(coco['annotations']))
    return counts
