# Copyright (c) mmbinary contributors. All rights reserved.
"""Change the length of a training schedule with everything tied to it.

Overriding ``train_cfg.max_epochs`` alone leaves the LR schedule where it
was: a cosine decay still ends at the old length, step decays (mmdet's 1x:
epochs 8 and 11) are skipped or come too early, and checkpoints or
validation may never happen. :func:`scale_schedule` moves them all: every
``param_scheduler`` entry's ``begin``/``end`` (warm-up included),
``milestones``, ``step_size`` and ``T_max``, ``train_cfg.val_interval`` and
``val_begin``, and ``default_hooks.checkpoint.interval``, in proportion to
the new length; whatever ended at the old length ends at the new one.
"""
from typing import List

#: mmengine's "no end" for a parameter scheduler.
_OPEN_END = 10**9


def _scaled(value: int, ratio: float, minimum: int = 0) -> int:
    return max(minimum, int(round(value * ratio)))


def scale_schedule(cfg, length: int, unit: str = 'epochs') -> List[str]:
    """Set the training length to ``length`` epochs (or iterations) and move
    the LR schedule, the warm-up and the checkpoint and validation intervals
    with it.

    Args:
        cfg (Config): a full config, changed in place.
        length (int): the new number of epochs (``unit='epochs'``, an
            epoch-based loop) or iterations (``unit='iters'``, an
            iteration-based loop); >= 1.
        unit (str): ``'epochs'`` or ``'iters'``.

    Returns:
        list[str]: one line per changed setting (``key: old -> new``).

    Raises:
        ValueError: ``length`` < 1, an unknown unit, or a loop counted in the
            other unit (the message names the loop and the option to use).
    """
    if unit not in ('epochs', 'iters'):
        raise ValueError(f"unit must be 'epochs' or 'iters', got {unit!r}")
    if not isinstance(length, int) or length < 1:
        raise ValueError(f'the new length must be an integer >= 1, got '
                         f'{length!r}')
    train_cfg = cfg.get('train_cfg') or {}
    length_key = f'max_{unit}'
    if length_key not in train_cfg:
        other = 'iters' if unit == 'epochs' else 'epochs'
        loop = train_cfg.get('type', 'the train loop')
        raise ValueError(
            f'train_cfg ({loop}) has no {length_key}'
            + (f'; it counts {other}: use --{other} instead'
               if f'max_{other}' in train_cfg else ''))
    old = int(train_cfg[length_key])
    ratio = length / old
    by_unit = unit == 'epochs'
    changes = [f'train_cfg.{length_key}: {old} -> {length}']
    train_cfg[length_key] = length
    if cfg.get(length_key) == old:
        # the config's own variable (``max_epochs = 12``), kept in step so
        # the dumped config reads right
        cfg[length_key] = length

    def move(holder: dict, key: str, name: str, minimum: int = 0,
             limit: int = length) -> None:
        value = holder.get(key)
        if not isinstance(value, int) or value >= _OPEN_END:
            return
        new = length if value == old else min(
            limit, _scaled(value, ratio, minimum))
        if new != value:
            holder[key] = new
            changes.append(f'{name}: {value} -> {new}')

    for key in ('val_interval', 'val_begin'):
        move(train_cfg, key, f'train_cfg.{key}',
             minimum=1 if key == 'val_interval' else 0)
    checkpoint = (cfg.get('default_hooks') or {}).get('checkpoint') or {}
    if checkpoint.get('by_epoch', True) == by_unit:
        move(checkpoint, 'interval', 'default_hooks.checkpoint.interval',
             minimum=1)

    schedulers = cfg.get('param_scheduler') or []
    if isinstance(schedulers, dict):
        schedulers = [schedulers]
    for index, scheduler in enumerate(schedulers):
        name = f'param_scheduler.{index}'
        # A scheduler counted in the loop's own unit ends at the length; one
        # counted in iterations in an epoch loop (a warm-up) is scaled.
        same_unit = scheduler.get('by_epoch', True) == by_unit
        limit = length if same_unit else _OPEN_END
        begin = scheduler.get('begin', 0)
        move(scheduler, 'begin', f'{name}.begin', limit=limit)
        if same_unit:
            move(scheduler, 'end', f'{name}.end', limit=limit)
        else:
            move(scheduler, 'end', f'{name}.end',
                 minimum=scheduler.get('begin', 0) + 1, limit=limit)
        if isinstance(scheduler.get('end'), int) and scheduler.get(
                'end') <= scheduler.get('begin', 0):
            scheduler['end'] = scheduler.get('begin', 0) + 1
        for key in ('T_max', 'step_size'):
            move(scheduler, key, f'{name}.{key}', minimum=1, limit=limit)
        milestones = scheduler.get('milestones')
        if isinstance(milestones, (list, tuple)):
            moved = sorted({
                min(_scaled(m, ratio, minimum=begin + 1), limit)
                for m in milestones
            })
            if list(moved) != list(milestones):
                scheduler['milestones'] = moved
                changes.append(f'{name}.milestones: {list(milestones)} -> '
                               f'{moved}')
    return changes
