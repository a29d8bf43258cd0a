# Copyright (c) mmbinary contributors. All rights reserved.
"""mmbinary's registries, children of mmengine's root registries.

Modules registered here are built from configs as ``type='mmbinary.Name'``
(or plain ``'Name'`` inside the ``mmbinary`` default scope). Layers meant to
be found from *any* scope, such as ``conv_cfg=dict(type='MBBConv')`` inside
mmdet's or mmseg's ``ConvModule``, register in mmengine's root ``MODELS``
instead (as mmcv's ``ConvWS`` does). A registry is kept only while something
registers into it.
"""
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

#: Backbones, necks, heads and model-level wrappers.
MODELS = Registry(
    'model',
    parent=MMENGINE_MODELS,
    scope='mmbinary',
    locations=['mmbinary.models'])
#: Runner hooks (the progressive-precision schedule).
HOOKS = Registry(
    'hook',
    parent=MMENGINE_HOOKS,
    scope='mmbinary',
    locations=['mmbinary.engine'])
