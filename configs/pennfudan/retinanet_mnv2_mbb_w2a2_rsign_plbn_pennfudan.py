# retinanet_mnv2_mbb_w2a2_plbn_pennfudan.py with a learned threshold per
# input channel before every backbone conv's 2-bit quantizer (ReActNet's
# RSign, used here at 2 bits: the quantizer reads `x - shift`, so each
# channel of the signed block inputs can centre itself on the 2-bit
# levels). No RPReLU, no real-valued shortcuts: the network is the W2A2
# detector's. Test and pack its checkpoints with this config; trained with
# distillation by retinanet_mnv2_mbb_w2a2_rsign_plbn_kd_pennfudan.py.
_base_ = './retinanet_mnv2_mbb_w2a2_plbn_pennfudan.py'
custom_imports = dict(
    imports=[
        'mmbinary', 'mmbinary.models.layers.react',
        'mmbinary.models.backbones.react_mobilenet_v2'
    ],
    allow_failed_imports=False)

model = dict(
    backbone=dict(
        type='mmbinary.ReActMBBMobileNetV2',
        react_cfg=dict(rsign=True, rprelu=False, shortcut=False)))
