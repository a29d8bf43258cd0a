# Copyright (c) mmbinary contributors. All rights reserved.
"""Register the modules of the library a config is written for, and load
configs as the tools do."""
import os.path as osp
from typing import Optional

from mmengine.config import Config

from mmbinary.models.precision import set_model_precision
from mmbinary.utils.data_check import resolve_checkpoint_paths

#: Libraries whose configs mmbinary's tools run.
SCOPES = ('mmdet', 'mmseg')
#: How the top-level keys of a mixed-precision config end that name a
#: part's bits where they differ from ``w_bits``/``a_bits``
#: (``backbone_a_bits = 4``).
PART_BITS_SUFFIXES = ('_w_bits', '_a_bits')


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


def apply_precision_options(cfg: Config, cfg_options: dict) -> None:
    """Set every encoded part's bits from top-level ``w_bits``/``a_bits``
    in ``--cfg-options`` (one given: the other keeps the config's value);
    a mixed-precision config's per-part bits (``backbone_a_bits``) are
    dropped, since every part now has the same."""
    given = {key: cfg_options[key] for key in ('w_bits', 'a_bits')
             if key in cfg_options}
    if not given:
        return
    missing = [key for key in ('w_bits', 'a_bits') if key not in cfg]
    if missing:
        raise SystemExit(
            f'--cfg-options {" ".join(f"{k}={v}" for k, v in given.items())}'
            f': the config sets no top-level {" and ".join(missing)}; give '
            'both w_bits and a_bits')
    try:
        set_model_precision(cfg.model, cfg.w_bits, cfg.a_bits)
    except ValueError as error:
        raise SystemExit(f'--cfg-options w_bits/a_bits: {error}')
    # A mixed-precision config's per-part bits (``backbone_a_bits = 4``)
    # no longer hold: every part now has the bits given.
    for key in [key for key in cfg.keys() if key.endswith(PART_BITS_SUFFIXES)
                and key not in given]:
        cfg.pop(key)


def load_tool_config(config: str,
                     cfg_options: Optional[dict] = None,
                     work_dir: Optional[str] = None,
                     launcher: str = 'none') -> Config:
    """A config as the tools run it.

    ``--cfg-options`` are merged; top-level ``w_bits``/``a_bits`` among them
    set the precision of every encoded part of the model
    (:func:`mmbinary.models.precision.set_model_precision`), so
    ``--cfg-options w_bits=4 a_bits=4`` works for any config. Relative
    checkpoint paths not found from the working directory are looked up
    next to the config, then in the repository. The launcher is set, and
    ``work_dir`` from the command line, else the config, else
    ``work_dirs/<config name>``.

    Raises:
        SystemExit: the config file or one of its ``_base_`` files is
            missing, or ``w_bits``/``a_bits`` are given for a model without
            encoded parts.
    """
    if not osp.isfile(config):
        raise SystemExit(f'config file not found: {config}')
    try:
        cfg = Config.fromfile(config)
    except FileNotFoundError as error:
        # a _base_ file that is not there
        raise SystemExit(f'{config}: {error}')
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
        apply_precision_options(cfg, cfg_options)
    resolve_checkpoint_paths(cfg, config)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config))[0])
    return cfg
