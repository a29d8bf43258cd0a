# deeplabv3_mnv2-d8_mbb_w2a2_bb-a4_pennfudan.py (2-bit weights, 4-bit
# backbone activations) distilled from its float segmentor (channel-wise
# distillation of the logits, _base_/kd_deeplabv3_mnv2-d8.py). Test and
# pack its checkpoints with deeplabv3_mnv2-d8_mbb_w2a2_bb-a4_pennfudan.py.
_base_ = [
    './deeplabv3_mnv2-d8_mbb_w2a2_bb-a4_pennfudan.py',
    './_base_/kd_deeplabv3_mnv2-d8.py'
]
custom_imports = dict(
    imports=['mmbinary', 'mmbinary.models.distillers'],
    allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='mmbinary.SingleTeacherDistill',
    architecture={{_base_.model}},
    teacher={{_base_.teacher}},
    teacher_ckpt={{_base_.teacher_ckpt}},
    distiller={{_base_.distiller}})
