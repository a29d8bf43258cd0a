# deeplabv3_mnv2-d8.py encoded: MBB convs in the backbone blocks and the
# ASPP head (the stem, the depthwise convs and the final classifier stay
# float). The precision is set here once; every part reads it.
_base_ = './deeplabv3_mnv2-d8.py'

w_bits = 2
a_bits = 2

model = dict(
    backbone=dict(
        type='mmbinary.MBBDilatedMobileNetV2', w_bits=w_bits, a_bits=a_bits),
    decode_head=dict(
        conv_cfg=dict(type='MBBConv', w_bits=w_bits, a_bits=a_bits)))
