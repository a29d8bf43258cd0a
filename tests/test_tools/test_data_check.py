# Copyright (c) mmbinary contributors. All rights reserved.
import os.path as osp

import pytest
from mmengine.config import Config

from mmbinary.utils.data_check import (DatasetNotFoundError, check_datasets,
                                       expected_paths)

CONFIG_DIR = osp.join(osp.dirname(__file__), '..', '..', 'configs')


def coco_loader(data_root: str, split: str) -> dict:
    return dict(
        dataset=dict(
            type='CocoDataset',
            data_root=data_root,
            ann_file=f'annotations/instances_{split}2017.json',
            data_prefix=dict(img=f'{split}2017/')))


def make_coco(root) -> None:
    for split in ('train', 'val'):
        (root / f'{split}2017').mkdir(parents=True)
        (root / 'annotations').mkdir(exist_ok=True)
        (root / 'annotations' / f'instances_{split}2017.json').write_text(
            '{}')


def test_expected_paths_join_like_mmengine(tmp_path):
    dataset = coco_loader(str(tmp_path), 'train')['dataset']
    assert expected_paths(dataset) == [
        (osp.join(str(tmp_path), 'annotations/instances_train2017.json'),
         'file'),
        (osp.join(str(tmp_path), 'train2017/'), 'folder'),
    ]
    absolute = dict(dataset, ann_file='/abs/ann.json')
    assert expected_paths(absolute)[0] == ('/abs/ann.json', 'file')


def test_present_dataset_passes(tmp_path):
    make_coco(tmp_path)
    cfg = dict(
        train_dataloader=coco_loader(str(tmp_path), 'train'),
        val_dataloader=coco_loader(str(tmp_path), 'val'))
    check_datasets(cfg)


def test_missing_dataset_names_root_layout_and_source(tmp_path):
    root = str(tmp_path / 'coco') + '/'
    cfg = dict(
        train_dataloader=coco_loader(root, 'train'),
        val_dataloader=coco_loader(root, 'val'),
        test_dataloader=None)
    with pytest.raises(DatasetNotFoundError) as info:
        check_datasets(cfg, ['train_dataloader', 'val_dataloader',
                             'test_dataloader'])
    message = str(info.value)
    assert root in message
    for entry in ('annotations/instances_train2017.json', 'train2017/',
                  'annotations/instances_val2017.json', 'val2017/'):
        assert entry in message
    assert message.count('MISSING') == 4
    assert 'cocodataset.org' in message
    assert isinstance(info.value, FileNotFoundError)


def test_partly_missing_marks_each_entry(tmp_path):
    make_coco(tmp_path)
    (tmp_path / 'val2017').rmdir()
    cfg = dict(
        train_dataloader=coco_loader(str(tmp_path), 'train'),
        val_dataloader=coco_loader(str(tmp_path), 'val'))
    with pytest.raises(DatasetNotFoundError) as info:
        check_datasets(cfg)
    message = str(info.value)
    assert message.count('MISSING') == 1
    assert message.count(' ok ') == 3


def test_wrapped_datasets_and_storage_backends(tmp_path):
    inner = coco_loader(str(tmp_path / 'nowhere'), 'train')['dataset']
    concat = dict(
        dataset=dict(
            type='ConcatDataset',
            datasets=[dict(type='RepeatDataset', times=2, dataset=inner)]))
    with pytest.raises(DatasetNotFoundError, match='nowhere'):
        check_datasets(dict(train_dataloader=concat), ['train_dataloader'])
    remote = dict(dataset=dict(inner, backend_args=dict(backend='petrel')))
    check_datasets(dict(train_dataloader=remote), ['train_dataloader'])


@pytest.mark.parametrize('name, words', [
    ('retinanet_r50_mbb_w2a2_coco.py', ['data/coco/', 'train2017/']),
    ('deeplabv3_r50_mbb_w2a2_cityscapes.py',
     ['data/cityscapes/', 'leftImg8bit/train/', 'gtFine/train/']),
    ('deeplabv3_r50_mbb_w2a2_voc12aug.py',
     ['data/VOCdevkit/VOC2012', 'SegmentationClassAug/', 'aug.txt']),
])
def test_shipped_configs_describe_their_layout(name, words, tmp_path,
                                               monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative data roots resolve here
    cfg = Config.fromfile(osp.join(CONFIG_DIR, name))
    with pytest.raises(DatasetNotFoundError) as info:
        check_datasets(cfg)
    for word in words:
        assert word in str(info.value)
