# Copyright (c) mmbinary contributors. All rights reserved.
"""Where a model config holds its precision, and one function that sets it.

A model config holds bit widths (``w_bits``, ``a_bits``) in each encoded
part: the registered MBB backbones, necks and heads (``type='mmbinary.MBB*'``)
and every ``conv_cfg``/layer config of ``type='MBBConv'`` or ``'MBBLinear'``.
:func:`precision_parts` finds them by walking the config, so tools and tests
need no list of keys per architecture; :func:`set_model_precision` rewrites
them all; :func:`precision_cfg_options` writes the same change as
``--cfg-options`` for a tool run in a subprocess. :func:`float_model_config`
turns an encoded model config into its float twin (the same architecture
with float layers), e.g. to train the float start of an encoded run.

Example::

    >>> cfg = Config.fromfile('configs/retinanet_r50_mbb_w2a2_coco.py')
    >>> set_model_precision(cfg.model, w_bits=4, a_bits=4)
    ['backbone', 'neck', 'bbox_head.conv_cfg']
"""
import copy
import inspect
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

#: Config keys that hold a bit width.
BITS_KEYS = ('w_bits', 'a_bits')
#: A part's activation bits for one kind of its convs (MobileNetV2's
#: ``expand_a_bits``): set with ``a_bits``, so that one call makes every
#: layer of the part the same.
PART_A_BITS_KEYS = ('expand_a_bits', )
#: How the registered names of single MBB layers end (``MBBConv``,
#: ``ReActMBBConv``, ``MBBLinear``): their options are given directly, not
#: under ``mbb_cfg``.
LAYER_TYPES = ('MBBConv', 'MBBLinear')

Bits = Union[int, Sequence[int]]


def _type_name(part: dict) -> str:
    """A part's registered type without its scope ('mmbinary.MBBFPN' ->
    'MBBFPN'); '' when the type is not a string."""
    part_type = part.get('type')
    return part_type.split('.')[-1] if isinstance(part_type, str) else ''


def _is_layer(part: dict) -> bool:
    return _type_name(part).endswith(LAYER_TYPES)


def _is_encoded_part(part: dict) -> bool:
    return ('MBB' in _type_name(part)
            or any(key in part for key in BITS_KEYS))


def _walk(node: Any, prefix: str) -> Iterator[Tuple[str, dict]]:
    """(dotted key, dict) of every dict inside ``node``; list items are
    keyed by their index, as ``--cfg-options`` does (``a.0.b``)."""
    if isinstance(node, dict):
        yield prefix, node
        for key, value in node.items():
            yield from _walk(value, f'{prefix}.{key}' if prefix else key)
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from _walk(value, f'{prefix}.{index}' if prefix else
                             str(index))


def precision_parts(model_cfg: dict) -> List[str]:
    """Dotted keys (relative to the model config) of the encoded parts.

    Args:
        model_cfg (dict | ConfigDict): a model config (``cfg.model``).

    Returns:
        list[str]: e.g. ``['backbone', 'neck', 'bbox_head.conv_cfg']``; the
        model itself is ``''``. Parts inside an encoded part (a backbone's
        ``mbb_cfg``) are not listed again.
    """
    parts = []
    for key, part in _walk(model_cfg, ''):
        if key.split('.')[-1] == 'mbb_cfg':
            continue
        if _is_encoded_part(part):
            parts.append(key)
    return parts


def _get(model_cfg: dict, key: str) -> dict:
    node = model_cfg
    for name in key.split('.') if key else []:
        node = node[int(name)] if isinstance(node, (list, tuple)) else node[
            name]
    return node


def _changes(model_cfg: dict, w_bits: Bits, a_bits: Bits,
             layer_options: Optional[dict]) -> Dict[str, dict]:
    """Part key -> the options to set there (``layer_options`` of a module
    part go under its ``mbb_cfg``)."""
    parts = precision_parts(model_cfg)
    if not parts:
        raise ValueError(
            'the model config has no encoded part: no MBB backbone, neck or '
            "head and no conv_cfg=dict(type='MBBConv'); nothing to set the "
            'precision of')
    changes = {}
    for key in parts:
        options: Dict[str, Any] = dict(w_bits=w_bits, a_bits=a_bits)
        part = _get(model_cfg, key)
        options.update({name: a_bits for name in PART_A_BITS_KEYS
                        if part.get(name) is not None})
        if layer_options:
            if _is_layer(part):
                options.update(layer_options)
            else:
                options['mbb_cfg'] = dict(layer_options)
        changes[key] = options
    return changes


def set_model_precision(model_cfg: dict,
                        w_bits: Bits,
                        a_bits: Bits,
                        layer_options: Optional[dict] = None) -> List[str]:
    """Set the bit widths of every encoded part of a model config, in place.

    Args:
        model_cfg (dict | ConfigDict): a model config (``cfg.model``).
        w_bits (int | Sequence[int]): weight bits, 1..8 (a sequence gives
            one per backbone stage; the layers check the values when built).
        a_bits (int | Sequence[int]): activation bits, 1..8.
        layer_options (dict, optional): other MBB layer options for every
            part, e.g. ``dict(w_mode='paper', a_clip=1.0)``: merged into
            each module part's ``mbb_cfg`` and into each layer config.

    Returns:
        list[str]: the keys of the parts that were set.

    Raises:
        ValueError: the model config has no encoded part.
    """
    changes = _changes(model_cfg, w_bits, a_bits, layer_options)
    for key, options in changes.items():
        part = _get(model_cfg, key)
        mbb_cfg = options.pop('mbb_cfg', None)
        part.update(options)
        if mbb_cfg is not None:
            part['mbb_cfg'] = dict(part.get('mbb_cfg') or {}, **mbb_cfg)
    return list(changes)


def _option_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return '[' + ','.join(str(item) for item in value) + ']'
    return str(value)


def precision_cfg_options(model_cfg: dict,
                          w_bits: Bits,
                          a_bits: Bits,
                          layer_options: Optional[dict] = None,
                          prefix: str = 'model') -> List[str]:
    """:func:`set_model_precision` as ``--cfg-options`` ``key=value`` items,
    for a tool run in a subprocess.

    Args:
        model_cfg (dict | ConfigDict): the model config of the config the
            tool will load (``cfg.model``).
        w_bits, a_bits, layer_options: as :func:`set_model_precision`.
        prefix (str): the model's key in the full config.

    Returns:
        list[str]: e.g. ``['model.backbone.w_bits=4', ...]``.
    """
    options = []
    for key, values in _changes(model_cfg, w_bits, a_bits,
                                layer_options).items():
        base = '.'.join(name for name in (prefix, key) if name)
        for name, value in values.items():
            if isinstance(value, dict):
                options += [
                    f'{base}.{name}.{inner}={_option_value(item)}'
                    for inner, item in value.items()
                ]
            else:
                options.append(f'{base}.{name}={_option_value(value)}')
    return options


def _float_part(part: dict) -> dict:
    """The float twin of one registered MBB module part: its parent class's
    type, without the options the parent does not take."""
    from mmengine.registry import MODELS

    import mmbinary.models  # noqa: F401  (registers the MBB parts)
    name = _type_name(part)
    cls = MODELS.get(f'mmbinary.{name}')
    if cls is None:
        raise ValueError(f'{part["type"]!r} is not a registered mmbinary '
                         'part; cannot make its float twin')
    # The first class of the MRO that is not mmbinary's (MBBResNet has a
    # mixin before mmdet's ResNet).
    parent = next(base for base in cls.__mro__[1:]
                  if not base.__module__.startswith('mmbinary'))
    own = set(inspect.signature(cls.__init__).parameters) - set(
        inspect.signature(parent.__init__).parameters)
    float_part = {key: value for key, value in part.items() if key not in own}
    library = parent.__module__.split('.')[0]
    float_part['type'] = f'{library}.{parent.__name__}'
    return float_part


def float_model_config(model_cfg: dict) -> dict:
    """The float twin of an encoded model config: every registered MBB part
    replaced by the stock part it extends (``mmbinary.MBBMobileNetV2`` ->
    ``mmdet.MobileNetV2``, options such as ``w_bits`` and
    ``in_act_mode`` dropped) and every ``type='MBBConv'`` layer config by
    ``None`` (the stock conv). Parameter names are the same, so a checkpoint
    of the twin loads into the encoded model.

    Args:
        model_cfg (dict | ConfigDict): a model config (``cfg.model``).

    Returns:
        dict: a new model config; ``model_cfg`` is not changed.
    """
    model = copy.deepcopy(
        model_cfg.to_dict() if hasattr(model_cfg, 'to_dict') else model_cfg)
    # Deepest first, so replacing a part keeps the keys of the others.
    for key in sorted(precision_parts(model), key=len, reverse=True):
        names = key.split('.')
        parent = _get(model, '.'.join(names[:-1]))
        index = int(names[-1]) if isinstance(parent, list) else names[-1]
        part = parent[index]
        if _is_layer(part):
            parent[index] = None
        elif 'MBB' in _type_name(part):
            parent[index] = _float_part(part)
        else:
            raise ValueError(
                f'model.{key} holds bit widths but is no MBB part '
                f"(type={part.get('type')!r}); cannot make its float twin")
    return model
