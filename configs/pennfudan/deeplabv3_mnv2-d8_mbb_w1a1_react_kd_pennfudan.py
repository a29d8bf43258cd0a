# deeplabv3_mnv2-d8_mbb_w1a1_react_pennfudan.py distilled from its float
# segmentor. Test and pack its checkpoints with
# deeplabv3_mnv2-d8_mbb_w1a1_react_pennfudan.py.
_base_ = [
    './deeplabv3_mnv2-d8_mbb_w1a1_react_pennfudan.py',
    './_base_/kd_deeplabv3_mnv2-d8.py'
]
custom_imports = dict(
    imports=[
        'mmbinary', 'mmbinary.models.distillers',
        'mmbinary.models.layers.react',
        'mmbinary.models.backbones.react_mobilenet_v2'
    ],
    allow_failed_imports=False)

model = dict(
    _delete_=True,
    type='mmbinary.SingleTeacherDistill',
    architecture={{_base_.model}},
    teacher={{_base_.teacher}},
    teacher_ckpt={{_base_.teacher_ckpt}},
    distiller={{_base_.distiller}})
