# Copyright (c) mmbinary contributors. All rights reserved.
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS

from mmbinary import registry


def test_registries_are_scoped_children_of_mmengine_root():
    for name, root in (('MODELS', MMENGINE_MODELS), ('HOOKS',
                                                     MMENGINE_HOOKS)):
        child = getattr(registry, name)
        assert child.scope == 'mmbinary'
        assert child.parent is root
        assert root.children['mmbinary'] is child
        assert child._locations, name


def test_only_registries_with_entries_are_kept():
    """A registry nothing registers into is not defined (the dataset,
    transform and metric registries were removed for that)."""
    for name in ('DATASETS', 'TRANSFORMS', 'METRICS'):
        assert not hasattr(registry, name)
    registry.MODELS.import_from_location()
    assert 'MBBResNet' in registry.MODELS.module_dict
