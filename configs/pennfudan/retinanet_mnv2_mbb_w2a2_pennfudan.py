# The float detector of retinanet_mnv2_fpn_pennfudan.py encoded W2A2: MBB
# convs in the backbone blocks, the FPN and the head towers (the stem, the
# depthwise convs and the two prediction convs stay float). Started from the
# float detector's checkpoint in the accuracy study:
#
#   python tools/train.py \
#       configs/pennfudan/retinanet_mnv2_mbb_w2a2_pennfudan.py \
#       --cfg-options load_from=FLOAT.pth
#
# Other W/A pairs: --cfg-options w_bits=4 a_bits=4 (sets every encoded part).
_base_ = [
    '../_base_/models/retinanet_mnv2_fpn_mbb.py',
    '../_base_/datasets/pennfudan_detection.py',
    '../_base_/schedules/adamw_cosine_12e.py',
    'mmdet::_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmbinary'], allow_failed_imports=False)

default_hooks = dict(
    logger=dict(interval=10), checkpoint=dict(interval=12, max_keep_ckpts=1))
