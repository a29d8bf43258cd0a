# retinanet_mnv2_mbb_w2a2_plbn_pennfudan.py with only the expand convs'
# inputs at 4 bits: MobileNetV2's expand convs read a block's signed input
# with 4-bit levels, every other encoded conv (the projections, the FPN and
# the head towers) 2-bit ones; 2-bit weights everywhere. The accuracy study
# (docs/accuracy_study.md, fourteenth round) found these signed 2-bit inputs
# carry most of the 2-bit backbone's loss; on a popcount CPU they cost 8
# binary branches on the expand convs alone (a 4-bit backbone: on the
# projections too). Trained with distillation and backbone imitation by
# retinanet_mnv2_mbb_w2a2_ea4_plbn_kd_bb_pennfudan.py; test and pack its
# checkpoints with this config.
_base_ = './retinanet_mnv2_mbb_w2a2_plbn_pennfudan.py'

model = dict(backbone=dict(expand_a_bits=4))
