# The float segmentor of deeplabv3_mnv2-d8_pennfudan.py encoded W2A2: MBB
# convs in the backbone blocks and the ASPP head (the stem, the depthwise
# convs and the final classifier stay float). Started from the float
# segmentor's checkpoint in the accuracy study:
#
#   python tools/train.py \
#       configs/pennfudan/deeplabv3_mnv2-d8_mbb_w2a2_pennfudan.py \
#       --cfg-options load_from=FLOAT.pth
#
# Other W/A pairs: set the bits of model.backbone and
# model.decode_head.conv_cfg, as the study does.
_base_ = './deeplabv3_mnv2-d8_pennfudan.py'

model = dict(
    backbone=dict(type='mmbinary.MBBDilatedMobileNetV2', w_bits=2, a_bits=2),
    decode_head=dict(conv_cfg=dict(type='MBBConv', w_bits=2, a_bits=2)))
