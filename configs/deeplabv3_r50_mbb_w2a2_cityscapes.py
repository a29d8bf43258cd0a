# DeepLabV3 R-50-D8 on Cityscapes (512x1024 crops, 80k iterations), W2A2:
# dilated ResNetV1c blocks, ASPP and the auxiliary FCN head are
# binary-branch convs. The deep stem, shortcuts and the 1x1 classifiers
# (conv_seg) stay float. mmseg's
# deeplabv3_r50-d8_4xb2-80k_cityscapes-512x1024.py with the encoded model of
# _base_/models/deeplabv3_r50-d8_mbb.py.
_base_ = [
    './_base_/models/deeplabv3_r50-d8_mbb.py',
    'mmseg::_base_/datasets/cityscapes.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py'
]
custom_imports = dict(imports=['mmbinary'], allow_failed_imports=False)

crop_size = (512, 1024)
data_preprocessor = dict(size=crop_size)
model = dict(data_preprocessor=data_preprocessor)

# A local float DeepLabV3 checkpoint to start from (keys match).
load_from = None
