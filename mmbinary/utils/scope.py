# Copyright (c) mmbinary contributors. All rights reserved.
"""Register the modules of the library a config is written for, and load
configs as the tools do."""
import os.path as osp
from typing import Optional

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


def load_tool_config(config: str,
                     cfg_options: Optional[dict] = None,
                     work_dir: Optional[str] = None,
                     launcher: str = 'none') -> Config:
    """A config as the tools run it: ``--cfg-options`` merged, the launcher
    set, and ``work_dir`` from the command line, else the config, else
    ``work_dirs/<config name>``."""
    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config))[0])
    return cfg
