# RetinaNet-MobileNetV2 W1A1 with the structure that makes binary networks
# trainable: a learned threshold before every sign (ReActNet's RSign), an
# RPReLU after the backbone's binary convs, and a real-valued shortcut
# around every binary conv whose widths allow it (Bi-Real Net).
_base_ = './retinanet_mnv2_mbb_w2a2_pennfudan.py'
custom_imports = dict(
    imports=[
        'mmbinary', 'mmbinary.models.layers.react',
        'mmbinary.models.backbones.react_mobilenet_v2',
        'mmbinary.models.necks.react_fpn'
    ],
    allow_failed_imports=False)

w_bits = 1
a_bits = 1
react_cfg = dict(rsign=True, rprelu=True, shortcut='where_allowed')
model = dict(
    backbone=dict(
        type='mmbinary.ReActMBBMobileNetV2', w_bits=w_bits, a_bits=a_bits,
        react_cfg=react_cfg),
    neck=dict(
        type='mmbinary.ReActMBBFPN', w_bits=w_bits, a_bits=a_bits,
        react_cfg=react_cfg),
    bbox_head=dict(
        conv_cfg=dict(
            type='ReActMBBConv', w_bits=w_bits, a_bits=a_bits, rsign=True,
            shortcut=True)))
