# retinanet_mnv2_mbb_w2a2_plbn_kd_pennfudan.py with feature imitation on
# the backbone's outputs too (the three MobileNetV2 stages the FPN reads):
# the accuracy study found the 2-bit backbone carries most of the gap to
# float, and the FPN and logit terms reach it only through the FPN. Test
# and pack its checkpoints with retinanet_mnv2_mbb_w2a2_plbn_pennfudan.py.
_base_ = ['./retinanet_mnv2_mbb_w2a2_plbn_kd_pennfudan.py']

model = dict(
    distiller=dict(
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
                preds_T=dict(from_student=False, recorder='backbone')))))
