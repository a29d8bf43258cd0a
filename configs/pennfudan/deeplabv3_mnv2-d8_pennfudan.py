# The accuracy study's float segmentor: DeepLabV3 (ASPP, 64 channels) on an
# ImageNet MobileNetV2 dilated to output stride 8, on the Penn-Fudan
# semantic masks (mmseg layout: images/*.jpg, seg_masks/*.png with
# 0 background / 1 person, splits/{train,val}.txt). Its checkpoint is the
# common float start of every encoded run
# (tools/analysis_tools/accuracy_study.py):
#
#   python tools/train.py configs/pennfudan/deeplabv3_mnv2-d8_pennfudan.py
_base_ = [
    '../_base_/models/deeplabv3_mnv2-d8.py',
    '../_base_/datasets/pennfudan_segmentation.py',
    '../_base_/schedules/adamw_cosine_12e.py',
    '../_base_/seg_epoch_runtime.py'
]
custom_imports = dict(imports=['mmbinary'], allow_failed_imports=False)
