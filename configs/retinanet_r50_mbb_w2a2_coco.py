# RetinaNet R-50-FPN on COCO, encoded with 2-bit weights and 2-bit
# activations (W2A2): 4 binary branches per conv in the ResNet blocks, the
# FPN and the head's conv towers. Stem, shortcuts and the final cls/reg
# convs stay float.
_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmbinary'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        type='mmbinary.MBBResNet',
        w_bits=2,
        a_bits=2,
        # No download: start from a local float checkpoint instead, either
        # the whole detector (``load_from`` below) or the ResNet-50 alone:
        # init_cfg=dict(type='Pretrained', checkpoint='checkpoints/r50.pth')
        init_cfg=None),
    neck=dict(type='mmbinary.MBBFPN', w_bits=2, a_bits=2),
    bbox_head=dict(conv_cfg=dict(type='MBBConv', w_bits=2, a_bits=2)))

# Quantized training is more stable with clipped gradients.
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))

# Quantized models train from a float model: set a local float RetinaNet
# checkpoint here (keys match), e.g. 'checkpoints/retinanet_r50_fpn.pth'.
load_from = None
