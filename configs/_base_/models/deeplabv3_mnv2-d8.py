# DeepLabV3 (ASPP, 64 channels) on an ImageNet MobileNetV2 dilated to output
# stride 8, float. The model of the Penn-Fudan study and the own-data
# template; the encoded version is deeplabv3_mnv2-d8_mbb.py.

# torchvision's ImageNet MobileNetV2 in mmseg's key layout, built by
# tools/dataset_converters/prepare_demo_data.py. A relative path is looked up
# in the working directory, then in the repository (tools/train.py); with
# ``load_from`` set (a whole float segmentor) it is not needed.
pretrained = 'data/demo/pretrained/mobilenet_v2_mmseg.pth'
norm_cfg = dict(type='BN', requires_grad=True)

data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    # the training crop of the datasets (pads smaller images to it)
    size=(320, 320))
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='MobileNetV2',
        widen_factor=1.,
        strides=(1, 2, 2, 1, 1, 1, 1),
        dilations=(1, 1, 1, 2, 2, 4, 4),
        out_indices=(1, 2, 4, 6),
        norm_cfg=norm_cfg,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(
        type='ASPPHead',
        in_channels=320,
        in_index=3,
        channels=64,
        # Images of about 400 px: a 50x50 feature map.
        dilations=(1, 6, 12, 18),
        dropout_ratio=0.1,
        num_classes=2,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
