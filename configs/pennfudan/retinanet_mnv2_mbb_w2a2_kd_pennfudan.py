# retinanet_mnv2_mbb_w2a2_pennfudan.py distilled from its float detector
# (FPN feature imitation and classification-logit KL,
# _base_/kd_retinanet_mnv2_fpn.py). Checkpoints hold the student alone:
# test, pack and export them with retinanet_mnv2_mbb_w2a2_pennfudan.py.
#
#   python tools/train.py \
#       configs/pennfudan/retinanet_mnv2_mbb_w2a2_kd_pennfudan.py \
#       --cfg-options load_from=FLOAT.pth model.teacher_ckpt=FLOAT.pth
_base_ = [
    './retinanet_mnv2_mbb_w2a2_pennfudan.py',
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
