# retinanet_mnv2_mbb_w2a2_pennfudan.py with the stem and the two prediction
# convs encoded at W8A8 instead of float: what a fully integer detector
# costs (AQD and most quantized detectors keep these two ends at 8 bits).
# The depthwise convs stay float, as in the W2A2 config.
_base_ = './retinanet_mnv2_mbb_w2a2_pennfudan.py'

model = dict(
    backbone=dict(encode_stem=True, stem_bits=8),
    bbox_head=dict(
        type='mmbinary.MBBRetinaHead',
        w_bits=2,
        a_bits=2,
        encode_cls_reg=True,
        cls_reg_bits=8))
