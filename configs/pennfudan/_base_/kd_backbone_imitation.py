# Feature imitation on the backbone's outputs (every output it returns),
# added to a distilled config's distiller:
#
#   _base_ = ['./SOME_kd_pennfudan.py', './_base_/kd_backbone_imitation.py']
#   model = dict(distiller={{_base_.backbone_imitation}})
#
# The accuracy study (twelfth and thirteenth rounds) found it helps the
# 2-bit detector, whose FPN reads three backbone outputs, and not the
# segmenter.
backbone_imitation = dict(
    student_recorders=dict(
        backbone=dict(type='ModuleOutputs', source='backbone')),
    teacher_recorders=dict(
        backbone=dict(type='ModuleOutputs', source='backbone')),
    distill_losses=dict(
        loss_backbone=dict(type='mmbinary.FeatureImitationLoss',
                           loss_weight=1.0)),
    loss_forward_mappings=dict(
        loss_backbone=dict(
            preds_S=dict(from_student=True, recorder='backbone'),
            preds_T=dict(from_student=False, recorder='backbone'))))
