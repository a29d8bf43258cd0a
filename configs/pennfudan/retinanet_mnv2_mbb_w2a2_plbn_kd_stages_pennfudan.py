# retinanet_mnv2_mbb_w2a2_plbn_kd_bb_pennfudan.py with feature imitation on
# the output of every MobileNetV2 stage (layer1 .. layer7), not only the
# three the FPN reads: each 2-bit stage gets its own target. Test and pack
# its checkpoints with retinanet_mnv2_mbb_w2a2_plbn_pennfudan.py.
_base_ = ['./retinanet_mnv2_mbb_w2a2_plbn_kd_pennfudan.py']

model = dict(
    distiller=dict(
        student_recorders={
            f'layer{i}': dict(type='ModuleOutputs',
                              source=f'backbone.layer{i}')
            for i in range(1, 8)
        },
        teacher_recorders={
            f'layer{i}': dict(type='ModuleOutputs',
                              source=f'backbone.layer{i}')
            for i in range(1, 8)
        },
        distill_losses={
            f'loss_layer{i}': dict(type='mmbinary.FeatureImitationLoss',
                                   loss_weight=0.5)
            for i in range(1, 8)
        },
        loss_forward_mappings={
            f'loss_layer{i}': dict(
                preds_S=dict(from_student=True, recorder=f'layer{i}'),
                preds_T=dict(from_student=False, recorder=f'layer{i}'))
            for i in range(1, 8)
        }))
