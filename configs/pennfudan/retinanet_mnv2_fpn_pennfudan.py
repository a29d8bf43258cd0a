# The accuracy study's float detector: RetinaNet with an ImageNet
# MobileNetV2 backbone and a 64-channel FPN, on Penn-Fudan pedestrians
# (COCO layout: annotations/{train,val}.json, images/). Its checkpoint is the
# common float start of every encoded run
# (tools/analysis_tools/accuracy_study.py):
#
#   python tools/train.py configs/pennfudan/retinanet_mnv2_fpn_pennfudan.py
_base_ = [
    '../_base_/models/retinanet_mnv2_fpn.py',
    '../_base_/datasets/pennfudan_detection.py',
    '../_base_/schedules/adamw_cosine_12e.py',
    'mmdet::_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmbinary'], allow_failed_imports=False)

default_hooks = dict(
    logger=dict(interval=10), checkpoint=dict(interval=12, max_keep_ckpts=1))
