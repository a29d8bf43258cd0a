# mmseg's DeepLabV3 R-50-D8 encoded: dilated ResNetV1c blocks, ASPP and the
# auxiliary FCN head are binary-branch convs (the deep stem, shortcuts and
# the 1x1 classifiers, conv_seg, stay float). The precision is set here
# once; every part reads it.
_base_ = 'mmseg::_base_/models/deeplabv3_r50-d8.py'

w_bits = 2
a_bits = 2

model = dict(
    # No download of 'open-mmlab://resnet50_v1c': start from a local float
    # checkpoint with ``load_from``, or the backbone alone with
    # backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=PATH)).
    pretrained=None,
    backbone=dict(type='mmbinary.MBBResNetV1c', w_bits=w_bits, a_bits=a_bits),
    decode_head=dict(
        conv_cfg=dict(type='MBBConv', w_bits=w_bits, a_bits=a_bits)),
    auxiliary_head=dict(
        conv_cfg=dict(type='MBBConv', w_bits=w_bits, a_bits=a_bits)))
