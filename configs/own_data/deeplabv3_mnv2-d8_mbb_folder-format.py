# Your own segmentation data, mmseg folder format (an image folder and a
# mask folder per split, masks as single-channel PNGs of class indices): an
# encoded DeepLabV3-MobileNetV2. Edit the lines of "Your data and your
# model" below; everything after them is derived from them. The
# walk-through is docs/own_data.md; with CONFIG this file (a copy of it):
#
#   python tools/train.py CONFIG --float      # the float start
#   python tools/train.py CONFIG              # the encoded model
#   python tools/test.py CONFIG CHECKPOINT
#   python tools/pack_model.py CONFIG CHECKPOINT PACKED
#   python tools/test.py CONFIG PACKED --packed
_base_ = [
    '../_base_/models/deeplabv3_mnv2-d8_mbb.py',
    '../_base_/schedules/adamw_cosine_12e.py',
    '../_base_/seg_epoch_runtime.py'
]
custom_imports = dict(imports=['mmbinary'], allow_failed_imports=False)

# ---- Your data and your model ---------------------------------------------
# The folder of the set, relative to where the tools run (or absolute).
data_root = 'data/my_masks/'
# The class names, in the order of the mask values (value 0 is the first).
classes = ('background', 'road', 'car')
# The mask value of pixels that count for no class (void, borders).
ignore_index = 255
# True when the masks use 0 for void and 1.. for the classes (as ADE20K):
# 0 becomes ignore_index and every other value drops by one.
reduce_zero_label = False
# Image and mask folders per split, relative to data_root; an image and its
# mask share a name up to these suffixes (a.jpg, a.png). The test split is
# the val split.
img_suffix = '.jpg'
seg_map_suffix = '.png'
train_img_dir = 'img_dir/train'
train_mask_dir = 'ann_dir/train'
val_img_dir = 'img_dir/val'
val_mask_dir = 'ann_dir/val'
# Weight and activation bits of every encoded layer, 1..8 each.
w_bits = 2
a_bits = 2
# A float model of this architecture trained on your data (tools/train.py
# this config --float writes it), or None to start from the ImageNet
# backbone alone.
float_checkpoint = None
# ----------------------------------------------------------------------------

# Training crops; smaller images are padded with ignore_index.
crop_size = (320, 320)
data_preprocessor = dict(seg_pad_val=ignore_index, size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(w_bits=w_bits, a_bits=a_bits),
    decode_head=dict(
        num_classes=len(classes),
        ignore_index=ignore_index,
        conv_cfg=dict(type='MBBConv', w_bits=w_bits, a_bits=a_bits)))
load_from = float_checkpoint

metainfo = dict(classes=classes)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomResize',
        scale=(384, 384),
        ratio_range=(0.75, 1.5),
        keep_ratio=True),
    dict(
        type='RandomCrop',
        crop_size=crop_size,
        cat_max_ratio=0.75,
        ignore_index=ignore_index),
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
    num_workers=2,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='BaseSegDataset',
        data_root=data_root,
        metainfo=metainfo,
        img_suffix=img_suffix,
        seg_map_suffix=seg_map_suffix,
        ignore_index=ignore_index,
        reduce_zero_label=reduce_zero_label,
        data_prefix=dict(img_path=train_img_dir, seg_map_path=train_mask_dir),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='BaseSegDataset',
        data_root=data_root,
        metainfo=metainfo,
        img_suffix=img_suffix,
        seg_map_suffix=seg_map_suffix,
        ignore_index=ignore_index,
        reduce_zero_label=reduce_zero_label,
        data_prefix=dict(img_path=val_img_dir, seg_map_path=val_mask_dir),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='IoUMetric', iou_metrics=['mIoU'], ignore_index=ignore_index)
test_evaluator = val_evaluator
