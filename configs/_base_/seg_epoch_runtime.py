# mmseg's default runtime for epoch-based training: logs and checkpoints by
# epoch, gloo for distributed CPU runs.
_base_ = 'mmseg::_base_/default_runtime.py'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=True),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CheckpointHook', by_epoch=True, interval=12, max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
log_processor = dict(by_epoch=True)
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
