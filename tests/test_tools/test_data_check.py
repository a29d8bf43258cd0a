# Copyright (c) mmbinary contributors. All rights reserved.
"""mmbinary.utils.data_check: every kind of path a run opens is checked,
and reported with the config key that sets it."""
import os.path as osp

import pytest
from mmengine.config import Config

from mmbinary.utils.data_check import (ClassesNotFoundError,
                                       DatasetNotFoundError, ExpectedPath,
                                       check_datasets,
                                       drop_unneeded_pretrained,
                                       expected_paths,
                                       resolve_checkpoint_paths)

CONFIG_DIR = osp.join(osp.dirname(__file__), '..', '..', 'configs')


def coco_loader(data_root: str, split: str, ann: str = None) -> dict:
    return dict(
        dataset=dict(
            type='CocoDataset',
            data_root=data_root,
            ann_file=ann or f'annotations/instances_{split}2017.json',
            data_prefix=dict(img=f'{split}2017/')))


def make_coco(root, ann: str = None) -> None:
    for split in ('train', 'val'):
        (root / f'{split}2017').mkdir(parents=True)
        (root / 'annotations').mkdir(exist_ok=True)
        (root / 'annotations' /
         (ann or f'instances_{split}2017.json')).write_text('{}')


def det_config(root, ann: str = None, **extra) -> Config:
    root = str(root) + '/'
    return Config(
        dict(
            train_dataloader=coco_loader(root, 'train', ann),
            val_dataloader=coco_loader(root, 'val', ann),
            test_dataloader=coco_loader(root, 'val', ann),
            val_evaluator=dict(
                type='CocoMetric',
                ann_file=root + 'annotations/' +
                (ann or 'instances_val2017.json')),
            model=dict(
                backbone=dict(type='ResNet', init_cfg=None)),
            **extra))


def missing_message(cfg, loaders=('train_dataloader', 'val_dataloader'),
                    **kwargs) -> str:
    with pytest.raises(DatasetNotFoundError) as info:
        check_datasets(cfg, loaders, **kwargs)
    assert isinstance(info.value, FileNotFoundError)
    return str(info.value)


def test_expected_paths_join_like_mmengine(tmp_path):
    dataset = coco_loader(str(tmp_path), 'train')['dataset']
    assert expected_paths(dataset, 'train_dataloader.dataset') == [
        ExpectedPath(
            osp.join(str(tmp_path), 'annotations/instances_train2017.json'),
            'file', 'annotation file', 'train_dataloader.dataset.ann_file'),
        ExpectedPath(
            osp.join(str(tmp_path), 'train2017/'), 'folder', 'image folder',
            'train_dataloader.dataset.data_prefix.img'),
    ]
    absolute = dict(dataset, ann_file='/abs/ann.json')
    assert expected_paths(absolute)[0].path == '/abs/ann.json'


def test_present_files_pass(tmp_path):
    make_coco(tmp_path)
    (tmp_path / 'float.pth').write_bytes(b'')
    cfg = det_config(tmp_path, load_from=str(tmp_path / 'float.pth'))
    check_datasets(cfg, ['train_dataloader', 'val_dataloader',
                         'test_dataloader'])


def test_missing_data_root_names_its_keys_layout_and_source(tmp_path):
    root = tmp_path / 'coco'
    message = missing_message(det_config(root))
    assert f'data root {root}/' in message
    assert 'train_dataloader.dataset.data_root' in message
    assert 'val_dataloader.dataset.data_root' in message
    for entry in ('annotations/instances_train2017.json', 'train2017/',
                  'annotations/instances_val2017.json', 'val2017/'):
        assert entry in message
    # the evaluator's file is under the same missing root, but is its own key
    assert 'val_evaluator.ann_file' in message
    assert 'cocodataset.org' in message


def test_each_missing_dataset_path_has_its_key(tmp_path):
    make_coco(tmp_path)
    (tmp_path / 'val2017').rmdir()
    (tmp_path / 'annotations' / 'instances_train2017.json').unlink()
    message = missing_message(det_config(tmp_path),
                              ['train_dataloader', 'test_dataloader'])
    assert 'set: train_dataloader.dataset.ann_file' in message
    assert 'set: test_dataloader.dataset.data_prefix.img' in message
    assert 'image folder' in message and 'annotation file' in message
    assert message.count('set: ') == 2
    assert '2 other paths are there' in message


def test_evaluator_ann_file_is_checked_with_its_loader(tmp_path):
    make_coco(tmp_path)
    cfg = det_config(tmp_path)
    cfg.test_evaluator = dict(type='CocoMetric',
                              ann_file=str(tmp_path / 'nowhere.json'))
    message = missing_message(cfg, ['test_dataloader'])
    assert 'set: test_evaluator.ann_file' in message
    assert 'nowhere.json' in message
    # the val evaluator is not read by a test run
    check_datasets(cfg, ['val_dataloader'])


def test_checkpoints_are_checked(tmp_path):
    make_coco(tmp_path)
    cfg = det_config(tmp_path, load_from='float.pth')
    message = missing_message(cfg)
    assert 'checkpoint to start from float.pth' in message
    assert 'set: load_from' in message

    cfg = det_config(tmp_path, load_from='last.pth', resume=True)
    assert 'checkpoint to resume last.pth' in missing_message(cfg)

    # a training run without load_from loads the pretrained backbone
    cfg = det_config(tmp_path)
    cfg.model.backbone.init_cfg = dict(
        type='Pretrained', checkpoint='data/demo/pretrained/mnv2.pth')
    cfg.model.pretrained = 'r50.pth'
    message = missing_message(cfg)
    assert 'set: model.backbone.init_cfg.checkpoint' in message
    assert 'set: model.pretrained' in message
    # the demo data says how it is built, not the COCO one
    assert 'prepare_demo_data.py' in message
    # a test run does not initialize weights
    check_datasets(cfg, ['val_dataloader'])


def test_command_line_files_are_named_as_given(tmp_path):
    make_coco(tmp_path)
    cfg = det_config(tmp_path, load_from='model.pth')
    message = missing_message(cfg, ['test_dataloader'],
                              files={'CHECKPOINT (command line)':
                                     'model.pth'})
    assert 'set: CHECKPOINT (command line)' in message
    assert 'load_from' not in message


def test_download_hints_only_for_the_named_dataset(tmp_path):
    message = missing_message(
        det_config(tmp_path / 'my_set', ann='train.json'))
    assert 'cocodataset.org' not in message
    assert 'Get ' not in message
    # the data root at the top of the config is the line to edit
    cfg = det_config(tmp_path / 'my_set', ann='train.json')
    cfg.data_root = str(tmp_path / 'my_set') + '/'
    assert 'set: data_root (top of the config)' in missing_message(cfg)


def test_wrapped_datasets_and_storage_backends(tmp_path):
    inner = coco_loader(str(tmp_path / 'nowhere'), 'train')['dataset']
    concat = dict(
        dataset=dict(
            type='ConcatDataset',
            datasets=[dict(type='RepeatDataset', times=2, dataset=inner)]))
    message = missing_message(dict(train_dataloader=concat),
                              ['train_dataloader'])
    assert 'nowhere' in message
    assert ('train_dataloader.dataset.datasets.0.dataset.data_root'
            in message)
    remote = dict(dataset=dict(inner, backend_args=dict(backend='petrel')))
    check_datasets(dict(train_dataloader=remote), ['train_dataloader'])


def test_resolve_checkpoint_paths_relative_to_config_then_repo(
        tmp_path, monkeypatch):
    (tmp_path / 'configs').mkdir()
    (tmp_path / 'configs' / 'float.pth').write_bytes(b'')
    config = tmp_path / 'configs' / 'run.py'
    config.write_text('')
    run_dir = tmp_path / 'elsewhere'
    run_dir.mkdir()
    monkeypatch.chdir(run_dir)
    cfg = Config(
        dict(
            load_from='float.pth',
            model=dict(
                backbone=dict(
                    init_cfg=dict(
                        type='Pretrained',
                        checkpoint='configs/_base_/models/'
                        'retinanet_mnv2_fpn.py')))))
    resolve_checkpoint_paths(cfg, str(config))
    assert cfg.load_from == str(tmp_path / 'configs' / 'float.pth')
    # found in the repository (any file of it stands for a checkpoint here)
    repo = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
    assert cfg.model.backbone.init_cfg.checkpoint == osp.join(
        repo, 'configs/_base_/models/retinanet_mnv2_fpn.py')
    # found nowhere: left for the check to report
    cfg = Config(dict(load_from='nowhere.pth'))
    resolve_checkpoint_paths(cfg, str(config))
    assert cfg.load_from == 'nowhere.pth'


def test_load_from_makes_a_missing_pretrained_backbone_unneeded(tmp_path):
    make_coco(tmp_path)
    (tmp_path / 'float.pth').write_bytes(b'')
    (tmp_path / 'neck.pth').write_bytes(b'')
    cfg = det_config(tmp_path, load_from=str(tmp_path / 'float.pth'))
    cfg.model.backbone.init_cfg = dict(type='Pretrained',
                                       checkpoint='absent.pth')
    cfg.model.neck = dict(init_cfg=[
        dict(type='Pretrained', checkpoint=str(tmp_path / 'neck.pth'))
    ])
    assert drop_unneeded_pretrained(cfg) == [
        'model.backbone.init_cfg.checkpoint'
    ]
    assert cfg.model.backbone.init_cfg is None
    assert cfg.model.neck.init_cfg[0].checkpoint == str(tmp_path /
                                                        'neck.pth')
    check_datasets(cfg)
    # without load_from nothing is dropped
    cfg = det_config(tmp_path)
    cfg.model.backbone.init_cfg = dict(type='Pretrained',
                                       checkpoint='absent.pth')
    assert drop_unneeded_pretrained(cfg) == []


@pytest.mark.parametrize('name, words', [
    ('retinanet_r50_mbb_w2a2_coco.py',
     ['data/coco/', 'train2017/', 'val_evaluator.ann_file',
      'cocodataset.org']),
    ('deeplabv3_r50_mbb_w2a2_cityscapes.py',
     ['data/cityscapes/', 'leftImg8bit/train/', 'gtFine/train/',
      'cityscapes-dataset.com']),
    ('deeplabv3_r50_mbb_w2a2_voc12aug.py',
     ['data/VOCdevkit/VOC2012', 'SegmentationClassAug/', 'aug.txt']),
    ('pennfudan/retinanet_mnv2_fpn_pennfudan.py',
     ['data/pennfudan/', 'pennfudan.py', 'model.backbone.init_cfg',
      'prepare_demo_data.py']),
    ('own_data/deeplabv3_mnv2-d8_mbb_folder-format.py',
     ['data/my_masks/', 'img_dir/train/', 'ann_dir/val/',
      'data_root (top of the config)']),
    ('pennfudan/deeplabv3_mnv2-d8_pennfudan.py',
     ['data/pennfudan/', 'seg_masks/', 'splits/train.txt']),
])
def test_shipped_configs_describe_their_layout(name, words, tmp_path,
                                               monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative data roots resolve here
    cfg = Config.fromfile(osp.join(CONFIG_DIR, name))
    message = missing_message(cfg)
    for word in words:
        assert word in message
    if 'own_data' in name:
        # a set of the user's: no dataset's download hint, only how to
        # build the ImageNet backbone file
        assert [line for line in message.splitlines()
                if line.startswith('Get ')] == [
                    line for line in message.splitlines()
                    if line.startswith('Get the embedded demo data')
                ]


def test_distiller_teacher_files_are_checked_and_resolved(
        tmp_path, monkeypatch):
    make_coco(tmp_path)
    cfg = det_config(tmp_path)
    cfg.model = dict(
        type='mmbinary.SingleTeacherDistill',
        architecture=dict(backbone=dict(type='ResNet')),
        teacher=dict(cfg_path='configs/teacher.py'),
        teacher_ckpt='work_dirs/float/epoch_12.pth')
    message = missing_message(cfg, ['val_dataloader'])
    assert 'set: model.teacher_ckpt' in message
    assert 'set: model.teacher.cfg_path' in message
    # relative to the config: found
    (tmp_path / 'cfgs' / 'configs').mkdir(parents=True)
    (tmp_path / 'cfgs' / 'configs' / 'teacher.py').write_text('')
    monkeypatch.chdir(tmp_path)
    resolve_checkpoint_paths(cfg, str(tmp_path / 'cfgs' / 'run.py'))
    assert cfg.model.teacher.cfg_path == str(tmp_path / 'cfgs' / 'configs' /
                                             'teacher.py')
    message = missing_message(cfg, ['val_dataloader'])
    assert 'cfg_path' not in message and 'teacher_ckpt' in message


def test_class_names_must_be_among_the_json_categories(tmp_path):
    import json
    make_coco(tmp_path, ann='data.json')
    for split in ('train', 'val'):
        (tmp_path / f'{split}2017').mkdir(exist_ok=True)
    (tmp_path / 'data.json').write_text(
        json.dumps(dict(images=[], annotations=[], categories=[
            dict(id=3, name='person'), dict(id=7, name='dog')])))
    cfg = det_config(tmp_path, ann='data.json')
    cfg.classes = ('persn', 'dog')
    for loader in ('train_dataloader', 'val_dataloader'):
        cfg[loader].dataset.metainfo = dict(classes=cfg.classes)
    with pytest.raises(ClassesNotFoundError) as info:
        check_datasets(cfg)
    message = str(info.value)
    assert "train_dataloader.dataset.metainfo.classes: ['persn']" in message
    assert "['person', 'dog']" in message
    assert 'classes, top of the config' in message
    # a subset is fine
    for loader in ('train_dataloader', 'val_dataloader'):
        cfg[loader].dataset.metainfo = dict(classes=('dog', ))
    check_datasets(cfg)
    # not a COCO json
    (tmp_path / 'data.json').write_text('[1, 2')
    with pytest.raises(ClassesNotFoundError, match='is not a COCO json'):
        check_datasets(cfg)


def test_mask_folders_are_named_as_such(tmp_path):
    (tmp_path / 'img_dir' / 'train').mkdir(parents=True)
    loader = dict(dataset=dict(
        type='BaseSegDataset', data_root=str(tmp_path),
        data_prefix=dict(img_path='img_dir/train',
                         seg_map_path='ann_dir/train')))
    message = missing_message(dict(train_dataloader=loader),
                              ['train_dataloader'])
    assert 'mask folder' in message
    assert 'set: train_dataloader.dataset.data_prefix.seg_map_path' in message
    assert '1 other path is there' in message
