# DeepLabV3 R-50-D8 on Pascal VOC 2012 + SBD augmented masks (512x512
# crops, 20k iterations), W2A2, encoded as the Cityscapes config.
_base_ = 'mmseg::deeplabv3/deeplabv3_r50-d8_4xb4-20k_voc12aug-512x512.py'
custom_imports = dict(imports=['mmbinary'], allow_failed_imports=False)

model = dict(
    pretrained=None,
    backbone=dict(type='mmbinary.MBBResNetV1c', w_bits=2, a_bits=2),
    decode_head=dict(conv_cfg=dict(type='MBBConv', w_bits=2, a_bits=2)),
    auxiliary_head=dict(conv_cfg=dict(type='MBBConv', w_bits=2, a_bits=2)))

load_from = None
