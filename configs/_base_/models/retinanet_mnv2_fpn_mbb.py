# retinanet_mnv2_fpn.py encoded: MBB convs in the backbone blocks, the FPN
# and the head towers (the stem, the depthwise convs and the two prediction
# convs stay float). The precision is set here once; every part reads it.
_base_ = './retinanet_mnv2_fpn.py'

w_bits = 2
a_bits = 2

model = dict(
    backbone=dict(type='mmbinary.MBBMobileNetV2', w_bits=w_bits,
                  a_bits=a_bits),
    neck=dict(
        type='mmbinary.MBBFPN',
        w_bits=w_bits,
        a_bits=a_bits,
        # MobileNetV2's outputs are linear projections: signed.
        in_act_mode='signed'),
    bbox_head=dict(
        conv_cfg=dict(type='MBBConv', w_bits=w_bits, a_bits=a_bits)))
