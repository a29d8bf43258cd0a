# The demo: RetinaNet with an ImageNet MobileNetV2 backbone, encoded W2A2
# (2-bit weights, 2-bit activations: 4 binary branches per conv) in the
# backbone blocks, the FPN and the head towers, trained on the embedded
# aerial tree-crown tiles (``tools/dataset_converters/prepare_demo_data.py``
# builds them in data/demo). Runs on 2 CPU cores in minutes.
#
#   python tools/train.py configs/retinanet_mnv2_mbb_w2a2_trees.py
#
# Any other W/A pair: set the bits of each encoded part, e.g. W4A4:
#   --cfg-options model.backbone.w_bits=4 model.backbone.a_bits=4 \
#       model.neck.w_bits=4 model.neck.a_bits=4 \
#       model.bbox_head.conv_cfg.w_bits=4 model.bbox_head.conv_cfg.a_bits=4
# (tools/demo.py --bits 4 does that).
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmbinary'], allow_failed_imports=False)

data_root = 'data/demo/trees/'
pretrained = 'data/demo/pretrained/mobilenet_v2_mmdet.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmbinary.MBBMobileNetV2',
        w_bits=2,
        a_bits=2,
        out_indices=(2, 4, 6),
        act_cfg=dict(type='ReLU6'),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(
        type='mmbinary.MBBFPN',
        w_bits=2,
        a_bits=2,
        # MobileNetV2's outputs are linear projections: signed.
        in_act_mode='signed',
        in_channels=[32, 96, 320],
        out_channels=64,
        start_level=0,
        add_extra_convs='on_input',
        num_outs=5),
    bbox_head=dict(
        num_classes=1,
        in_channels=64,
        feat_channels=64,
        stacked_convs=2,
        conv_cfg=dict(type='MBBConv', w_bits=2, a_bits=2)),
    test_cfg=dict(score_thr=0.05, max_per_img=150))

metainfo = dict(classes=('tree', ), palette=[(0, 200, 0)])
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

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=100),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs,
         eta_min_ratio=0.01)
]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
    # Clips and norms are not decayed.
    paramwise_cfg=dict(
        norm_decay_mult=0.0, custom_keys={'.clip': dict(decay_mult=0.0)}),
    clip_grad=dict(max_norm=10, norm_type=2))
default_hooks = dict(
    logger=dict(interval=8),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
auto_scale_lr = dict(enable=False)
