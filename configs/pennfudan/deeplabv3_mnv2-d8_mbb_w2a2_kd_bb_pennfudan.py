# deeplabv3_mnv2-d8_mbb_w2a2_kd_pennfudan.py with feature imitation on the
# backbone's outputs too (the four MobileNetV2 stages it returns; the
# decode head reads the last): in the detector, the 2-bit backbone carried
# most of the gap to float and imitating its outputs closed part of it.
# Test and pack its checkpoints with deeplabv3_mnv2-d8_mbb_w2a2_pennfudan.py.
_base_ = [
    './deeplabv3_mnv2-d8_mbb_w2a2_kd_pennfudan.py',
    './_base_/kd_backbone_imitation.py'
]

model = dict(distiller={{_base_.backbone_imitation}})
