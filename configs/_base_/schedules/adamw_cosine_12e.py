# AdamW with a linear warm-up and a cosine decay over 12 epochs, gradients
# clipped; norms, the MBB activation clips and learned weight gains are not
# decayed. Change the length with ``tools/train.py --epochs N``: the cosine
# end, the warm-up and the checkpoint and validation intervals follow.
max_epochs = 12

train_cfg = dict(
    type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs,
         eta_min_ratio=0.01)
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        custom_keys={
            '.clip': dict(decay_mult=0.0),
            'weight_quantizer.gain': dict(decay_mult=0.0)
        }),
    clip_grad=dict(max_norm=10, norm_type=2))
auto_scale_lr = dict(enable=False)
