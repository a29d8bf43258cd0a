# Copyright (c) mmbinary contributors. All rights reserved.
"""mmbinary's registries, children of mmengine's root registries.

Modules registered here are built from configs as ``type='mmbinary.Name'``
(or plain ``'Name'`` inside the ``mmbinary`` default scope). Layers meant to
be found from *any* scope, such as ``conv_cfg=dict(type='MBBConv')`` inside
mmdet's or mmseg's ``ConvModule``, register in mmengine's root ``MODELS``
instead (as mmcv's ``ConvWS`` does).
"""
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import Registry

#: Backbones, necks, heads and model-level wrappers.
MODELS = Registry(
    'model',
    parent=MMENGINE_MODELS,
    scope='mmbinary',
    locations=['mmbinary.models'])
#: Datasets (the embedded demo data).
DATASETS = Registry(
    'dataset',
    parent=MMENGINE_DATASETS,
    scope='mmbinary',
    locations=['mmbinary.datasets'])
#: Data transforms.
TRANSFORMS = Registry(
    'transform',
    parent=MMENGINE_TRANSFORMS,
    scope='mmbinary',
    locations=['mmbinary.datasets'])
#: Runner hooks (for example the progressive-precision schedule).
HOOKS = Registry(
    'hook', parent=MMENGINE_HOOKS, scope='mmbinary', locations=['mmbinary.engine'])
#: Evaluation metrics.
METRICS = Registry(
    'metric',
    parent=MMENGINE_METRICS,
    scope='mmbinary',
    locations=['mmbinary.evaluation'])
