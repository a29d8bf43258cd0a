# deeplabv3_mnv2-d8_mbb_w2a2_pennfudan.py with only the expand convs'
# inputs at 4 bits: MobileNetV2's expand convs (and its last 1x1 conv) read
# a block's signed output with 4-bit levels, every other encoded conv (the
# projections, the ASPP head) 2-bit ones; 2-bit weights everywhere: the
# segmentation twin of retinanet_mnv2_mbb_w2a2_ea4_plbn_pennfudan.py (the
# accuracy study's eighteenth round). Trained with distillation by
# deeplabv3_mnv2-d8_mbb_w2a2_ea4_kd_pennfudan.py; test and pack its
# checkpoints with this config.
_base_ = './deeplabv3_mnv2-d8_mbb_w2a2_pennfudan.py'

model = dict(backbone=dict(expand_a_bits=4))
