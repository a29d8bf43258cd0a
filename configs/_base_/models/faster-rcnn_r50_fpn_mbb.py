# mmdet's Faster R-CNN R-50-FPN encoded: ResNet blocks, FPN, the RPN conv and
# the two shared FCs of the box head are binary-branch layers (stem,
# shortcuts and every final cls/reg predictor stay float). The precision is
# set here once; every part reads it.
_base_ = 'mmdet::_base_/models/faster-rcnn_r50_fpn.py'

w_bits = 2
a_bits = 2

model = dict(
    backbone=dict(
        type='mmbinary.MBBResNet', w_bits=w_bits, a_bits=a_bits,
        init_cfg=None),
    neck=dict(type='mmbinary.MBBFPN', w_bits=w_bits, a_bits=a_bits),
    rpn_head=dict(type='mmbinary.MBBRPNHead', w_bits=w_bits, a_bits=a_bits),
    roi_head=dict(
        bbox_head=dict(
            type='mmbinary.MBBShared2FCBBoxHead',
            w_bits=w_bits,
            a_bits=a_bits)))
