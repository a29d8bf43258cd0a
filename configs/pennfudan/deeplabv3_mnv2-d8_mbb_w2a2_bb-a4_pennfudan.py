# deeplabv3_mnv2-d8_mbb_w2a2_pennfudan.py with the backbone's activations at
# 4 bits: 2-bit weights everywhere, MobileNetV2's expand and projection
# convs read 4-bit activations, the ASPP head 2-bit ones (the detector's
# mixed precision of the accuracy study's twelfth round). Trained with
# distillation (deeplabv3_mnv2-d8_mbb_w2a2_bb-a4_kd_pennfudan.py); test and
# pack its checkpoints with this config.
#
# `<part>_a_bits` at the top: the parts whose bits differ from the
# top-level w_bits / a_bits (the config tests read it). --cfg-options
# w_bits=N a_bits=N still sets every encoded part to W{N}A{N}.
_base_ = './deeplabv3_mnv2-d8_mbb_w2a2_pennfudan.py'

backbone_a_bits = 4
model = dict(backbone=dict(a_bits=backbone_a_bits))
