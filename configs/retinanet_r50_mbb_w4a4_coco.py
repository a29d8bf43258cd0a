# RetinaNet R-50-FPN, W4A4: 16 binary branches per encoded conv.
# Any other W/A pair works the same way, or without a file through
# --cfg-options w_bits=N a_bits=N (see docs/models.md).
_base_ = './retinanet_r50_mbb_w2a2_coco.py'

w_bits = 4
a_bits = 4
model = dict(
    backbone=dict(w_bits=w_bits, a_bits=a_bits),
    neck=dict(w_bits=w_bits, a_bits=a_bits),
    bbox_head=dict(conv_cfg=dict(w_bits=w_bits, a_bits=a_bits)))
