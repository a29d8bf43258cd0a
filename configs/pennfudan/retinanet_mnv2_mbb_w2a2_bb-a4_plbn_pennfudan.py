# retinanet_mnv2_mbb_w2a2_plbn_pennfudan.py with the backbone's activations
# at 4 bits: 2-bit weights everywhere, MobileNetV2's expand and projection
# convs read 4-bit activations, the FPN and head towers 2-bit ones. The
# accuracy study (docs/accuracy_study.md, twelfth round) found the 2-bit
# activations of the backbone carry most of the gap to float; trained with
# distillation (retinanet_mnv2_mbb_w2a2_bb-a4_plbn_kd_pennfudan.py) this
# detector is 1.9 bbox mAP below float on Penn-Fudan (every layer W2A2:
# 4.3 below). Test and pack its checkpoints with this config.
#
# `<part>_a_bits` at the top: the parts whose bits differ from the
# top-level w_bits / a_bits (the config tests read it). --cfg-options
# w_bits=N a_bits=N still sets every encoded part to W{N}A{N}.
_base_ = './retinanet_mnv2_mbb_w2a2_plbn_pennfudan.py'

backbone_a_bits = 4
model = dict(backbone=dict(a_bits=backbone_a_bits))
