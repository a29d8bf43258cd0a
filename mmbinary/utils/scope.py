# Copyright (c) mmbinary contributors. All rights reserved.
"""Register the modules of the library a config is written for."""
from mmengine.config import Config

#: Libraries whose configs mmbinary's tools run.
SCOPES = ('mmdet', 'mmseg')


def register_modules_for(cfg: Config) -> str:
    """Register mmdet's or mmseg's modules, as ``cfg.default_scope`` says,
    and make that scope the default.

    Returns:
        str: the scope.
    """
    scope = cfg.get('default_scope', 'mmdet')
    if scope == 'mmdet':
        from mmdet.utils import register_all_modules
    elif scope == 'mmseg':
        from mmseg.utils import register_all_modules
    else:
        raise ValueError(f'default_scope must be one of {SCOPES}, got '
                         f'{scope!r} in {cfg.filename}')
    register_all_modules(init_default_scope=True)
    return scope
