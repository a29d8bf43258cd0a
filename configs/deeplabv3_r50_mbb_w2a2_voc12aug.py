# DeepLabV3 R-50-D8 on Pascal VOC 2012 + SBD augmented masks (512x512
# crops, 20k iterations), W2A2, encoded as the Cityscapes config. mmseg's
# deeplabv3_r50-d8_4xb4-20k_voc12aug-512x512.py with the encoded model of
# _base_/models/deeplabv3_r50-d8_mbb.py.
_base_ = [
    './_base_/models/deeplabv3_r50-d8_mbb.py',
    'mmseg::_base_/datasets/pascal_voc12_aug.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_20k.py'
]
custom_imports = dict(imports=['mmbinary'], allow_failed_imports=False)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(num_classes=21),
    auxiliary_head=dict(num_classes=21))

load_from = None
