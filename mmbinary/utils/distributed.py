# Copyright (c) mmbinary contributors. All rights reserved.
"""Distributed runs on CPUs (gloo), which mmengine's launcher does not set
up with a CPU build of torch."""
import datetime

import torch
from mmengine.config import Config


def setup_cpu_distributed(cfg: Config) -> bool:
    """Make ``--launcher pytorch`` work without GPUs: gloo, CPU DDP.

    mmengine's launcher selects a CUDA device first, which a CPU build of
    torch cannot do, so the process group is set up here and the model is
    wrapped without device ids.

    Returns:
        bool: whether the process group was set up here.
    """
    if cfg.launcher != 'pytorch' or torch.cuda.is_available():
        return False
    dist_cfg = cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
    dist_cfg['backend'] = 'gloo'
    if not torch.distributed.is_initialized():
        timeout = datetime.timedelta(seconds=dist_cfg.get('timeout', 1800))
        torch.distributed.init_process_group('gloo', timeout=timeout)
    wrapper_cfg = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper_cfg['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper_cfg
    return True
