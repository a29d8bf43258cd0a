# Faster R-CNN R-50-FPN on COCO, W2A2: ResNet blocks, FPN, the RPN conv and
# the two shared FCs of the box head are binary-branch layers. Stem,
# shortcuts and every final cls/reg predictor stay float.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmbinary'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        type='mmbinary.MBBResNet', w_bits=2, a_bits=2, init_cfg=None),
    neck=dict(type='mmbinary.MBBFPN', w_bits=2, a_bits=2),
    rpn_head=dict(type='mmbinary.MBBRPNHead', w_bits=2, a_bits=2),
    roi_head=dict(
        bbox_head=dict(
            type='mmbinary.MBBShared2FCBBoxHead', w_bits=2, a_bits=2)))

optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))

# A local float Faster R-CNN checkpoint to start from (keys match).
load_from = None
