# RetinaNet R-50-FPN on COCO, encoded with 2-bit weights and 2-bit
# activations (W2A2): 4 binary branches per conv in the ResNet blocks, the
# FPN and the head's conv towers. Stem, shortcuts and the final cls/reg
# convs stay float. mmdet's retinanet_r50_fpn_1x_coco.py with the encoded
# model of _base_/models/retinanet_r50_fpn_mbb.py.
_base_ = [
    './_base_/models/retinanet_r50_fpn_mbb.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
    'mmdet::retinanet/retinanet_tta.py'
]
custom_imports = dict(imports=['mmbinary'], allow_failed_imports=False)

# Quantized training is more stable with clipped gradients.
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001),
    clip_grad=dict(max_norm=35, norm_type=2))

# Quantized models train from a float model: set a local float RetinaNet
# checkpoint here (keys match), e.g. 'checkpoints/retinanet_r50_fpn.pth'.
load_from = None
