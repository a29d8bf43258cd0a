# deeplabv3_mnv2-d8_mbb_w2a2_bb-a4_pennfudan.py (2-bit weights, 4-bit
# backbone activations) distilled from its float segmentor:
# deeplabv3_mnv2-d8_mbb_w2a2_kd_pennfudan.py with the student's backbone
# activations at 4 bits. Test and pack its checkpoints with
# deeplabv3_mnv2-d8_mbb_w2a2_bb-a4_pennfudan.py.
_base_ = './deeplabv3_mnv2-d8_mbb_w2a2_kd_pennfudan.py'

backbone_a_bits = 4
model = dict(architecture=dict(backbone=dict(a_bits=backbone_a_bits)))
