# retinanet_mnv2_mbb_w1a1_react_kd_pennfudan.py with feature imitation on
# the backbone's outputs too (the three MobileNetV2 stages the FPN reads),
# as the 2-bit detector's retinanet_mnv2_mbb_w2a2_plbn_kd_bb_pennfudan.py.
# Test and pack its checkpoints with
# retinanet_mnv2_mbb_w1a1_react_pennfudan.py.
_base_ = [
    './retinanet_mnv2_mbb_w1a1_react_kd_pennfudan.py',
    './_base_/kd_backbone_imitation.py'
]

model = dict(distiller={{_base_.backbone_imitation}})
