# RetinaNet with an ImageNet MobileNetV2 backbone and a 64-channel FPN,
# float. The model of the demo, the Penn-Fudan study and the own-data
# template; the encoded version is retinanet_mnv2_fpn_mbb.py.
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'

# torchvision's ImageNet MobileNetV2 in mmdet's key layout, built by
# tools/dataset_converters/prepare_demo_data.py. A relative path is looked up
# in the working directory, then in the repository (tools/train.py); with
# ``load_from`` set (a whole float detector) it is not needed.
pretrained = 'data/demo/pretrained/mobilenet_v2_mmdet.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmdet.MobileNetV2',
        out_indices=(2, 4, 6),
        act_cfg=dict(type='ReLU6'),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(
        in_channels=[32, 96, 320],
        out_channels=64,
        start_level=0,
        add_extra_convs='on_input',
        num_outs=5),
    bbox_head=dict(
        num_classes=1, in_channels=64, feat_channels=64, stacked_convs=2),
    test_cfg=dict(score_thr=0.05, max_per_img=100))
