# The float segmentor of deeplabv3_mnv2-d8_pennfudan.py encoded W2A2: MBB
# convs in the backbone blocks and the ASPP head (the stem, the depthwise
# convs and the final classifier stay float). Started from the float
# segmentor's checkpoint in the accuracy study:
#
#   python tools/train.py \
#       configs/pennfudan/deeplabv3_mnv2-d8_mbb_w2a2_pennfudan.py \
#       --cfg-options load_from=FLOAT.pth
#
# Other W/A pairs: --cfg-options w_bits=4 a_bits=4 (sets every encoded part).
_base_ = [
    '../_base_/models/deeplabv3_mnv2-d8_mbb.py',
    '../_base_/datasets/pennfudan_segmentation.py',
    '../_base_/schedules/adamw_cosine_12e.py',
    '../_base_/seg_epoch_runtime.py'
]
custom_imports = dict(imports=['mmbinary'], allow_failed_imports=False)
