# retinanet_mnv2_mbb_w2a2_pennfudan.py with one batch norm per FPN level in
# the head towers (AQD): one shared W2A2 conv per tower stage, five norms,
# folded into five epilogues when packed.
_base_ = './retinanet_mnv2_mbb_w2a2_pennfudan.py'

model = dict(
    bbox_head=dict(
        type='mmbinary.MBBRetinaHead',
        conv_cfg=None,
        w_bits=2,
        a_bits=2,
        per_level_norm=True,
        num_levels=5))
