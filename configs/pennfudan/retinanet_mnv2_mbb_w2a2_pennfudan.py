# The float detector of retinanet_mnv2_fpn_pennfudan.py encoded W2A2: MBB
# convs in the backbone blocks, the FPN and the head towers (the stem, the
# depthwise convs and the two prediction convs stay float). Started from the
# float detector's checkpoint in the accuracy study:
#
#   python tools/train.py \
#       configs/pennfudan/retinanet_mnv2_mbb_w2a2_pennfudan.py \
#       --cfg-options load_from=FLOAT.pth
#
# Other W/A pairs: set the bits of each encoded part (model.backbone,
# model.neck, model.bbox_head.conv_cfg), as the study does.
_base_ = './retinanet_mnv2_fpn_pennfudan.py'

model = dict(
    backbone=dict(type='mmbinary.MBBMobileNetV2', w_bits=2, a_bits=2),
    neck=dict(
        type='mmbinary.MBBFPN',
        w_bits=2,
        a_bits=2,
        # MobileNetV2's outputs are linear projections: signed.
        in_act_mode='signed'),
    bbox_head=dict(conv_cfg=dict(type='MBBConv', w_bits=2, a_bits=2)))
