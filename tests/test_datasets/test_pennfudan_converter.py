# Copyright (c) mmbinary contributors. All rights reserved.
"""The Penn-Fudan converter on a tiny fake release (three images, palette
and grey instance masks): output layout, boxes, RLE masks, semantic masks,
the fixed split, loading by mmdet's ``CocoDataset`` and mmseg's
``BaseSegDataset``, and the refusals. Where the converted data set is
available (the ``pennfudan`` fixture), its split and box convention are
checked against the tool's.
"""
import importlib.util
import json
import os
import os.path as osp
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(REPO, 'tools', 'dataset_converters', 'pennfudan.py')

# pycocotools' decode under NumPy 2.
pytestmark = pytest.mark.filterwarnings(
    'ignore:__array__ implementation:DeprecationWarning')


def _load_tool():
    spec = importlib.util.spec_from_file_location('pennfudan_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pf = _load_tool()

# Two validation images and one training image, of different sizes.
VAL_A, VAL_B, TRAIN = 'FudanPed00001', 'PennPed00004', 'FudanPed00002'
RED = (slice(0, 6), slice(0, 6))


def _instance_masks():
    """stem -> (H, W) uint8 instance ids (1-2 rectangles or a blob)."""
    a = np.zeros((24, 32), np.uint8)
    a[3:20, 2:9] = 1
    a[5:24, 20:32] = 2  # touches the bottom and right edges
    b = np.zeros((20, 28), np.uint8)
    yy, xx = np.mgrid[:20, :28]
    b[(yy - 9)**2 + (xx - 13)**2 <= 30] = 1  # a disc
    c = np.zeros((26, 18), np.uint8)
    c[0:10, 4:6] = 1  # an L shape: its box is larger than its area
    c[8:10, 4:15] = 1
    c[14:25, 0:1] = 2  # one pixel wide
    return {VAL_A: a, VAL_B: b, TRAIN: c}


MASKS = _instance_masks()


def _write_release(root, masks=MASKS):
    """A fake ``PennFudanPed`` folder: random RGB PNG images with a red
    corner, palette masks (as in the release) and one grey mask."""
    rng = np.random.default_rng(0)
    for d in ('PNGImages', 'PedMasks', 'Annotation'):
        os.makedirs(osp.join(root, d), exist_ok=True)
    for i, (stem, ids) in enumerate(masks.items()):
        image = rng.integers(0, 256, ids.shape + (3, ), dtype=np.uint8)
        image[RED] = (255, 0, 0)
        Image.fromarray(image, 'RGB').save(
            osp.join(root, 'PNGImages', f'{stem}.png'))
        mask = Image.fromarray(ids, 'L')
        if i != 1:
            mask = mask.convert('P')
            mask.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
        mask.save(osp.join(root, 'PedMasks', f'{stem}_mask.png'))
        with open(osp.join(root, 'Annotation', f'{stem}.txt'), 'w') as f:
            f.write('# not read\n')
    return str(root)


def _run(*args):
    return subprocess.run([sys.executable, TOOL, *map(str, args)],
                          capture_output=True,
                          text=True,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))


def _extent_box(mask):
    ys, xs = np.nonzero(mask)
    return [
        xs.min(),
        ys.min(),
        xs.max() - xs.min() + 1,
        ys.max() - ys.min() + 1
    ]


def _decode(rle):
    return mask_utils.decode(
        dict(size=rle['size'], counts=rle['counts'].encode('ascii')))


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp('pennfudan')
    src = _write_release(root / 'PennFudanPed')
    out = root / 'out'
    result = _run(src, out)
    assert result.returncode == 0, result.stderr
    return str(out), result.stdout


def _coco(out, split):
    with open(osp.join(out, 'annotations', f'{split}.json')) as f:
        return json.load(f)


def test_val_stems():
    assert len(pf.VAL_STEMS) == len(set(pf.VAL_STEMS)) == 50
    assert list(pf.VAL_STEMS) == sorted(pf.VAL_STEMS)
    assert all(
        re.fullmatch(r'(FudanPed000\d\d|PennPed000\d\d)', s)
        for s in pf.VAL_STEMS)
    assert VAL_A in pf.VAL_STEMS and VAL_B in pf.VAL_STEMS
    assert TRAIN not in pf.VAL_STEMS
    assert pf.split_of(VAL_A) == 'val' and pf.split_of(TRAIN) == 'train'


def test_mask_extent_box():
    mask = np.zeros((5, 7), np.uint8)
    mask[2, 3] = 1
    assert pf.mask_extent_box(mask) == [3., 2., 1., 1.]
    mask[4, 6] = 1
    assert pf.mask_extent_box(mask) == [3., 2., 4., 3.]


def test_layout_and_split(converted):
    out, stdout = converted
    assert sorted(os.listdir(out)) == [
        'annotations', 'images', 'seg_masks', 'splits'
    ]
    assert sorted(os.listdir(osp.join(out, 'images'))) == sorted(
        f'{s}.jpg' for s in MASKS)
    assert sorted(os.listdir(osp.join(out, 'seg_masks'))) == sorted(
        f'{s}.png' for s in MASKS)
    for split, stems in (('train', [TRAIN]), ('val', sorted([VAL_A,
                                                             VAL_B]))):
        with open(osp.join(out, 'splits', f'{split}.txt')) as f:
            assert f.read().split() == stems
        coco = _coco(out, split)
        assert coco['categories'] == [dict(id=1, name='person')]
        assert [i['file_name'] for i in coco['images']
                ] == [f'{s}.jpg' for s in stems]
        for image, stem in zip(coco['images'], stems):
            assert (image['height'], image['width']) == MASKS[stem].shape
    assert 'train: 1 images, 2 instances' in stdout
    assert 'val: 2 images, 3 instances' in stdout
    # The fake release lacks 48 of the validation images: said, not failed.
    assert 'warning: 48 of the 50' in stdout
    ids = [a['id'] for s in pf.SPLITS for a in _coco(out, s)['annotations']]
    assert len(ids) == len(set(ids)) == 5


def test_images_are_rgb_jpeg(converted):
    out, _ = converted
    for stem, ids in MASKS.items():
        with Image.open(osp.join(out, 'images', f'{stem}.jpg')) as image:
            assert image.format == 'JPEG' and image.mode == 'RGB'
            pixels = np.asarray(image).astype(int)
        assert pixels.shape == ids.shape + (3, )
        # Channel order: the red corner stays red.
        red = pixels[2:4, 2:4].reshape(-1, 3).mean(0)
        assert red[0] > 200 and red[1] < 60 and red[2] < 60


def test_boxes_and_rle_match_instance_masks(converted):
    out, _ = converted
    for split in pf.SPLITS:
        coco = _coco(out, split)
        stems = {i['id']: i['file_name'][:-4] for i in coco['images']}
        seen = {image_id: 0 for image_id in stems}
        for ann in coco['annotations']:
            ids = MASKS[stems[ann['image_id']]]
            # Instances are written in increasing id order, 1..N.
            seen[ann['image_id']] += 1
            instance = seen[ann['image_id']]
            expected = (ids == instance).astype(np.uint8)
            decoded = _decode(ann['segmentation'])
            assert decoded.dtype == np.uint8
            np.testing.assert_array_equal(decoded, expected)
            assert ann['bbox'] == _extent_box(expected)
            assert ann['area'] == expected.sum()
            assert ann['iscrowd'] == 0 and ann['category_id'] == 1
        assert seen == {i: MASKS[s].max() for i, s in stems.items()}


def test_semantic_masks_are_the_union(converted):
    out, _ = converted
    for stem, ids in MASKS.items():
        with Image.open(osp.join(out, 'seg_masks', f'{stem}.png')) as image:
            assert image.mode == 'L'
            seg = np.asarray(image)
        assert seg.dtype == np.uint8
        np.testing.assert_array_equal(seg, (ids > 0).astype(np.uint8))


def test_coco_dataset_loads(converted):
    from mmdet.datasets import CocoDataset
    out, _ = converted
    for split, stems in (('train', [TRAIN]), ('val', sorted([VAL_A,
                                                             VAL_B]))):
        dataset = CocoDataset(
            data_root=out,
            ann_file=f'annotations/{split}.json',
            metainfo=dict(classes=('person', )),
            data_prefix=dict(img='images/'),
            test_mode=False,
            filter_cfg=None,
            pipeline=[])
        assert len(dataset) == len(stems)
        for i, stem in enumerate(stems):
            info = dataset.get_data_info(i)
            assert info['img_path'] == osp.join(out, 'images', f'{stem}.jpg')
            ids = MASKS[stem]
            expected = []
            for instance in range(1, ids.max() + 1):
                x, y, w, h = _extent_box(ids == instance)
                expected.append([x, y, x + w, y + h])
            assert [inst['bbox'] for inst in info['instances']] == expected
            assert all(inst['bbox_label'] == 0 for inst in info['instances'])
            assert all(inst['ignore_flag'] == 0
                       for inst in info['instances'])


def test_seg_dataset_loads(converted):
    from mmseg.datasets import BaseSegDataset
    out, _ = converted
    dataset = BaseSegDataset(
        data_root=out,
        metainfo=dict(classes=('background', 'person')),
        img_suffix='.jpg',
        seg_map_suffix='.png',
        ann_file='splits/train.txt',
        data_prefix=dict(img_path='images', seg_map_path='seg_masks'),
        pipeline=[])
    assert len(dataset) == 1
    info = dataset.get_data_info(0)
    assert info['img_path'] == osp.join(out, 'images', f'{TRAIN}.jpg')
    assert info['seg_map_path'] == osp.join(out, 'seg_masks', f'{TRAIN}.png')
    assert osp.isfile(info['img_path']) and osp.isfile(info['seg_map_path'])


def test_refuses_non_empty_out(tmp_path):
    src = _write_release(tmp_path / 'PennFudanPed')
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'notes.txt').write_text('mine')
    result = _run(src, out)
    assert result.returncode != 0
    assert f'{out} is not empty' in result.stderr
    assert os.listdir(out) == ['notes.txt']
    result = _run(src, out, '--force')
    assert result.returncode == 0, result.stderr
    assert (out / 'notes.txt').read_text() == 'mine'
    assert osp.isfile(osp.join(out, 'annotations', 'val.json'))


@pytest.mark.parametrize('missing', ['PNGImages', 'PedMasks'])
def test_refuses_bad_src(tmp_path, missing):
    src = _write_release(tmp_path / 'PennFudanPed')
    os.rename(osp.join(src, missing), osp.join(src, 'moved'))
    out = tmp_path / 'out'
    result = _run(src, out)
    assert result.returncode != 0
    assert f'{src} lacks {missing}/' in result.stderr
    assert 'PNGImages/<stem>.png and PedMasks/<stem>_mask.png' in (
        result.stderr)
    assert not out.exists()


@pytest.mark.parametrize('orphan', ['mask', 'image'])
def test_refuses_orphans(tmp_path, orphan):
    src = _write_release(tmp_path / 'PennFudanPed')
    if orphan == 'mask':
        os.remove(osp.join(src, 'PNGImages', f'{VAL_B}.png'))
        name = osp.join(src, 'PedMasks', f'{VAL_B}_mask.png')
        message = f'{name} has no image'
    else:
        os.remove(osp.join(src, 'PedMasks', f'{VAL_B}_mask.png'))
        name = osp.join(src, 'PNGImages', f'{VAL_B}.png')
        message = f'{name} has no mask'
    out = tmp_path / 'out'
    result = _run(src, out)
    assert result.returncode != 0
    assert message in result.stderr
    assert not out.exists()


def test_refuses_mismatched_sizes(tmp_path):
    src = _write_release(tmp_path / 'PennFudanPed')
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(
        osp.join(src, 'PedMasks', f'{TRAIN}_mask.png'))
    result = _run(src, tmp_path / 'out')
    assert result.returncode != 0
    assert f'{TRAIN}_mask.png is 5x5' in result.stderr
    assert not (tmp_path / 'out').exists()


def test_existing_data_matches_the_tool(pennfudan):
    """The data set the study reads has the tool's split and boxes."""
    for split in pf.SPLITS:
        with open(osp.join(pennfudan, 'splits', f'{split}.txt')) as f:
            stems = f.read().split()
        assert stems
        assert all(pf.split_of(stem) == split for stem in stems)
        if split == 'val':
            assert sorted(stems) == sorted(pf.VAL_STEMS)
        coco = _coco(pennfudan, split)
        assert sorted(i['file_name'] for i in coco['images']) == sorted(
            f'{s}.jpg' for s in stems)
        assert coco['categories'] == [dict(id=1, name='person')]
        for ann in coco['annotations']:
            decoded = _decode(ann['segmentation'])
            assert ann['bbox'] == pf.mask_extent_box(decoded)
            assert ann['area'] == decoded.sum()
