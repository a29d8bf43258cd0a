# retinanet_mnv2_mbb_w2a2_plbn_kd_pennfudan.py with feature imitation on
# the backbone's outputs too (the three MobileNetV2 stages the FPN reads):
# the accuracy study found the 2-bit backbone carries most of the gap to
# float, and the FPN and logit terms reach it only through the FPN. Test
# and pack its checkpoints with retinanet_mnv2_mbb_w2a2_plbn_pennfudan.py.
_base_ = [
    './retinanet_mnv2_mbb_w2a2_plbn_kd_pennfudan.py',
    './_base_/kd_backbone_imitation.py'
]

model = dict(distiller={{_base_.backbone_imitation}})
