# retinanet_mnv2_mbb_w2a2_rsign_plbn_pennfudan.py (learned per-channel
# thresholds before the backbone's 2-bit quantizers, per-level head norms)
# distilled from its float detector. Test and pack its checkpoints with
# retinanet_mnv2_mbb_w2a2_rsign_plbn_pennfudan.py.
_base_ = [
    './retinanet_mnv2_mbb_w2a2_rsign_plbn_pennfudan.py',
    './_base_/kd_retinanet_mnv2_fpn.py'
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
