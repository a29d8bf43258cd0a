# Penn-Fudan semantic masks in mmseg layout (images/*.jpg,
# seg_masks/*.png with 0 background / 1 person, splits/{train,val}.txt), as
# tools/dataset_converters/pennfudan.py writes them.
dataset_type = 'BaseSegDataset'
# Penn-Fudan in data/pennfudan/ (a symbolic link will do).
data_root = 'data/pennfudan/'
crop_size = (320, 320)
metainfo = dict(
    classes=('background', 'person'), palette=[[0, 0, 0], [220, 20, 60]])

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomResize',
        scale=(384, 384),
        ratio_range=(0.75, 1.5),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(384, 384), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        img_suffix='.jpg',
        seg_map_suffix='.png',
        ann_file='splits/train.txt',
        data_prefix=dict(img_path='images', seg_map_path='seg_masks'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        img_suffix='.jpg',
        seg_map_suffix='.png',
        ann_file='splits/val.txt',
        data_prefix=dict(img_path='images', seg_map_path='seg_masks'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
