# deeplabv3_mnv2-d8_mbb_w2a2_kd_pennfudan.py with feature imitation on the
# backbone's outputs too (the four MobileNetV2 stages it returns; the
# decode head reads the last): in the detector, the 2-bit backbone carried
# most of the gap to float and imitating its outputs closed part of it.
# Test and pack its checkpoints with deeplabv3_mnv2-d8_mbb_w2a2_pennfudan.py.
_base_ = ['./deeplabv3_mnv2-d8_mbb_w2a2_kd_pennfudan.py']

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
