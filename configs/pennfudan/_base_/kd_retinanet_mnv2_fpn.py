# Distillation from the float RetinaNet-MobileNetV2 of
# retinanet_mnv2_fpn_pennfudan.py: feature imitation on the five FPN
# levels and the KL divergence of the classification logits (sigmoid
# probabilities) of every level. A distilled config takes this file and a
# student config as its _base_ and wraps the student's model:
#
#   model = dict(
#       _delete_=True, type='mmbinary.SingleTeacherDistill',
#       architecture={{_base_.model}}, teacher={{_base_.teacher}},
#       teacher_ckpt={{_base_.teacher_ckpt}}, distiller={{_base_.distiller}})
teacher = dict(
    cfg_path='{{ fileDirname }}/../retinanet_mnv2_fpn_pennfudan.py')
# The float start of the accuracy study (train it with the config
# above, or give another trained float checkpoint).
teacher_ckpt = 'work_dirs/accuracy_study/det/float_start/stage0/epoch_12.pth'
distiller = dict(
    student_recorders=dict(
        fpn=dict(type='ModuleOutputs', source='neck'),
        cls=dict(type='ModuleOutputs', source='bbox_head.retina_cls')),
    teacher_recorders=dict(
        fpn=dict(type='ModuleOutputs', source='neck'),
        cls=dict(type='ModuleOutputs', source='bbox_head.retina_cls')),
    distill_losses=dict(
        loss_fpn=dict(type='mmbinary.FeatureImitationLoss',
                      loss_weight=1.0),
        # 0.25: at the start of W2A2 training from the float start the KL
        # is about 4, the student's focal loss 0.8 and the FPN term 1.1.
        loss_cls=dict(type='mmbinary.SigmoidKLDivergence', tau=1.0,
                      loss_weight=0.25)),
    loss_forward_mappings=dict(
        loss_fpn=dict(
            preds_S=dict(from_student=True, recorder='fpn'),
            preds_T=dict(from_student=False, recorder='fpn')),
        loss_cls=dict(
            preds_S=dict(from_student=True, recorder='cls'),
            preds_T=dict(from_student=False, recorder='cls'))))
