# Faster R-CNN R-50-FPN on COCO, W2A2: ResNet blocks, FPN, the RPN conv and
# the two shared FCs of the box head are binary-branch layers. Stem,
# shortcuts and every final cls/reg predictor stay float. mmdet's
# faster-rcnn_r50_fpn_1x_coco.py with the encoded model of
# _base_/models/faster-rcnn_r50_fpn_mbb.py.
_base_ = [
    './_base_/models/faster-rcnn_r50_fpn_mbb.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmbinary'], allow_failed_imports=False)

optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))

# A local float Faster R-CNN checkpoint to start from (keys match).
load_from = None
