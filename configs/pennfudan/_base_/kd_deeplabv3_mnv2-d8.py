# Channel-wise distillation (Shu et al., ICCV 2021) of the segmentation
# logits from the float DeepLabV3-MobileNetV2 of
# deeplabv3_mnv2-d8_pennfudan.py. A distilled config takes this file and a
# student config as its _base_ and wraps the student's model:
#
#   model = dict(
#       _delete_=True, type='mmbinary.SingleTeacherDistill',
#       architecture={{_base_.model}}, teacher={{_base_.teacher}},
#       teacher_ckpt={{_base_.teacher_ckpt}}, distiller={{_base_.distiller}})
teacher = dict(
    cfg_path='{{ fileDirname }}/../deeplabv3_mnv2-d8_pennfudan.py')
# The float start of the accuracy study.
teacher_ckpt = 'work_dirs/accuracy_study/seg/float_start/stage0/epoch_12.pth'
distiller = dict(
    student_recorders=dict(
        logits=dict(type='ModuleOutputs', source='decode_head.conv_seg')),
    teacher_recorders=dict(
        logits=dict(type='ModuleOutputs', source='decode_head.conv_seg')),
    # mmrazor's cwd_logits_pspnet setting: tau 1, weight 3.
    distill_losses=dict(
        loss_cwd=dict(type='mmbinary.ChannelWiseDivergence', tau=1.0,
                      loss_weight=3.0)),
    loss_forward_mappings=dict(
        loss_cwd=dict(
            preds_S=dict(from_student=True, recorder='logits'),
            preds_T=dict(from_student=False, recorder='logits'))))
