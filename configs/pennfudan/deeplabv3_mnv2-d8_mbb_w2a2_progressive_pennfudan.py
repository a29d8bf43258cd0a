# deeplabv3_mnv2-d8_mbb_w2a2_pennfudan.py trained progressively in one run:
# W8A8, then W4A4, then W2A2, a third of the epochs each, with one optimizer
# and one cosine schedule; the learned clips are fitted again at each step.
# The model is built at the final W2A2, so its checkpoint tests and packs
# with deeplabv3_mnv2-d8_mbb_w2a2_pennfudan.py.
_base_ = './deeplabv3_mnv2-d8_mbb_w2a2_pennfudan.py'
custom_imports = dict(
    imports=['mmbinary', 'mmbinary.engine'], allow_failed_imports=False)

train_cfg = dict(max_epochs=18, val_interval=18)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=18,
         eta_min_ratio=0.01)
]
default_hooks = dict(checkpoint=dict(interval=6, max_keep_ckpts=3))
custom_hooks = [
    dict(
        type='mmbinary.ProgressivePrecisionHook',
        schedule={0: (8, 8), 6: (4, 4), 12: (2, 2)},
        clip='refit')
]
