# retinanet_mnv2_mbb_w2a2_plbn_kd_bb_pennfudan.py (distillation, per-level
# head norms, backbone imitation) with the student's expand convs reading
# 4-bit inputs (retinanet_mnv2_mbb_w2a2_ea4_plbn_pennfudan.py). Test and
# pack its checkpoints with retinanet_mnv2_mbb_w2a2_ea4_plbn_pennfudan.py.
_base_ = './retinanet_mnv2_mbb_w2a2_plbn_kd_bb_pennfudan.py'

model = dict(architecture=dict(backbone=dict(expand_a_bits=4)))
