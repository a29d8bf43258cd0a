# Copyright (c) mmbinary contributors. All rights reserved.
from mmengine.registry import MODELS as MMENGINE_MODELS

from mmbinary import registry


def test_registries_are_scoped_children_of_mmengine_root():
    for name in ('MODELS', 'DATASETS', 'TRANSFORMS', 'HOOKS', 'METRICS'):
        child = getattr(registry, name)
        assert child.scope == 'mmbinary'
        assert child.parent is not None and child.parent.scope == 'mmengine'
        assert child._locations, name
    assert registry.MODELS.parent is MMENGINE_MODELS
    assert MMENGINE_MODELS.children['mmbinary'] is registry.MODELS
