# Your own detection data, COCO format: an encoded RetinaNet-MobileNetV2.
# Edit the lines of "Your data and your model" below; everything after them
# is derived from them. The walk-through is docs/own_data.md; with CONFIG
# this file (a copy of it):
#
#   python tools/train.py CONFIG --float      # the float start
#   python tools/train.py CONFIG              # the encoded model
#   python tools/test.py CONFIG CHECKPOINT
#   python tools/pack_model.py CONFIG CHECKPOINT PACKED
#   python tools/test.py CONFIG PACKED --packed
_base_ = [
    '../_base_/models/retinanet_mnv2_fpn_mbb.py',
    '../_base_/schedules/adamw_cosine_12e.py',
    'mmdet::_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmbinary'], allow_failed_imports=False)

# ---- Your data and your model ---------------------------------------------
# The folder of the set, relative to where the tools run (or absolute).
data_root = 'data/my_coco/'
# The class names, as the "name" of the json's "categories"; only these are
# read (a subset of the categories works).
classes = ('person', )
# COCO json files and image folders, relative to data_root. The test split
# is the val split.
train_ann_file = 'annotations/train.json'
train_img_dir = 'images/'
val_ann_file = 'annotations/val.json'
val_img_dir = 'images/'
# Weight and activation bits of every encoded layer, 1..8 each.
w_bits = 2
a_bits = 2
# A float model of this architecture trained on your data (tools/train.py
# this config --float writes it), or None to start from the ImageNet
# backbone alone.
float_checkpoint = None
# ----------------------------------------------------------------------------

model = dict(
    backbone=dict(w_bits=w_bits, a_bits=a_bits),
    neck=dict(w_bits=w_bits, a_bits=a_bits),
    bbox_head=dict(
        num_classes=len(classes),
        conv_cfg=dict(type='MBBConv', w_bits=w_bits, a_bits=a_bits)))
load_from = float_checkpoint

metainfo = dict(classes=classes)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomResize', scale=[(320, 320), (448, 448)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(384, 384), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type='CocoDataset',
        data_root=data_root,
        metainfo=metainfo,
        ann_file=train_ann_file,
        data_prefix=dict(img=train_img_dir),
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=False,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='CocoDataset',
        data_root=data_root,
        metainfo=metainfo,
        ann_file=val_ann_file,
        data_prefix=dict(img=val_img_dir),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + val_ann_file,
    metric='bbox',
    classwise=len(classes) > 1)
test_evaluator = val_evaluator

default_hooks = dict(
    logger=dict(interval=10), checkpoint=dict(interval=12, max_keep_ckpts=1))
