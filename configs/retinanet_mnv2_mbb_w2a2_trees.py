# The demo: RetinaNet with an ImageNet MobileNetV2 backbone, encoded W2A2
# (2-bit weights, 2-bit activations: 4 binary branches per conv) in the
# backbone blocks, the FPN and the head towers, trained on the embedded
# aerial tree-crown tiles (``tools/dataset_converters/prepare_demo_data.py``
# builds them in data/demo). Runs on 2 CPU cores in minutes.
#
#   python tools/train.py configs/retinanet_mnv2_mbb_w2a2_trees.py
#
# Any other W/A pair sets every encoded part at once, e.g. W4A4:
#   --cfg-options w_bits=4 a_bits=4      (tools/demo.py --bits 4 does that)
# The model and the schedule are shared with configs/pennfudan/.
_base_ = [
    './_base_/models/retinanet_mnv2_fpn_mbb.py',
    './_base_/schedules/adamw_cosine_12e.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmbinary'], allow_failed_imports=False)

data_root = 'data/demo/trees/'
metainfo = dict(classes=('tree', ), palette=[(0, 200, 0)])

model = dict(test_cfg=dict(max_per_img=150))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    # The validation images come from other flights and sites: vary scale
    # and colour.
    dict(
        type='RandomResize',
        scale=[(320, 320), (480, 480)],
        keep_ratio=True),
    dict(type='RandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(400, 400), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/train.json',
        data_prefix=dict(img='images/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/val.json',
        data_prefix=dict(img='images/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/val.json')
test_evaluator = val_evaluator

# 36 epochs (tools/train.py --epochs N scales all of it).
max_epochs = 36
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=100),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs,
         eta_min_ratio=0.01)
]
default_hooks = dict(
    logger=dict(interval=8),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
