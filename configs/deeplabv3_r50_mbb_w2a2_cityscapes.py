# DeepLabV3 R-50-D8 on Cityscapes (512x1024 crops, 80k iterations), W2A2:
# dilated ResNetV1c blocks, ASPP and the auxiliary FCN head are
# binary-branch convs. The deep stem, shortcuts and the 1x1 classifiers
# (conv_seg) stay float.
_base_ = 'mmseg::deeplabv3/deeplabv3_r50-d8_4xb2-80k_cityscapes-512x1024.py'
custom_imports = dict(imports=['mmbinary'], allow_failed_imports=False)

model = dict(
    # No download of 'open-mmlab://resnet50_v1c': start from a local float
    # checkpoint with ``load_from`` below, or the backbone alone with
    # backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=PATH)).
    pretrained=None,
    backbone=dict(type='mmbinary.MBBResNetV1c', w_bits=2, a_bits=2),
    decode_head=dict(conv_cfg=dict(type='MBBConv', w_bits=2, a_bits=2)),
    auxiliary_head=dict(conv_cfg=dict(type='MBBConv', w_bits=2, a_bits=2)))

# A local float DeepLabV3 checkpoint to start from (keys match).
load_from = None
