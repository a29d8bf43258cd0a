# mmdet's RetinaNet R-50-FPN encoded: MBB convs in the ResNet blocks, the FPN
# and the head's conv towers (stem, shortcuts and the final cls/reg convs
# stay float). The precision is set here once; every part reads it.
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'

w_bits = 2
a_bits = 2

model = dict(
    backbone=dict(
        type='mmbinary.MBBResNet',
        w_bits=w_bits,
        a_bits=a_bits,
        # No download: start from a local float checkpoint instead, either
        # the whole detector (``load_from``) or the ResNet-50 alone:
        # init_cfg=dict(type='Pretrained', checkpoint='checkpoints/r50.pth')
        init_cfg=None),
    neck=dict(type='mmbinary.MBBFPN', w_bits=w_bits, a_bits=a_bits),
    bbox_head=dict(
        conv_cfg=dict(type='MBBConv', w_bits=w_bits, a_bits=a_bits)))
