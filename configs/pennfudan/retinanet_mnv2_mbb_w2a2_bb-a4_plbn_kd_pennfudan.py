# retinanet_mnv2_mbb_w2a2_bb-a4_plbn_pennfudan.py (2-bit weights, 4-bit
# backbone activations, per-level head norms) distilled from its float
# detector: retinanet_mnv2_mbb_w2a2_plbn_kd_pennfudan.py with the student's
# backbone activations at 4 bits. Test and pack its checkpoints with
# retinanet_mnv2_mbb_w2a2_bb-a4_plbn_pennfudan.py.
_base_ = './retinanet_mnv2_mbb_w2a2_plbn_kd_pennfudan.py'

backbone_a_bits = 4
model = dict(architecture=dict(backbone=dict(a_bits=backbone_a_bits)))
