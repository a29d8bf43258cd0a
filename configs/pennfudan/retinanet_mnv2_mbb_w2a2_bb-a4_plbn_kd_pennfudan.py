# retinanet_mnv2_mbb_w2a2_bb-a4_plbn_pennfudan.py (2-bit weights, 4-bit
# backbone activations, per-level head norms) distilled from its float
# detector: FPN feature imitation and the head's classification logits
# (_base_/kd_retinanet_mnv2_fpn.py). Test and pack its checkpoints with
# retinanet_mnv2_mbb_w2a2_bb-a4_plbn_pennfudan.py.
_base_ = [
    './retinanet_mnv2_mbb_w2a2_bb-a4_plbn_pennfudan.py',
    './_base_/kd_retinanet_mnv2_fpn.py'
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
