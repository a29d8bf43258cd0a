# Copyright (c) mmbinary contributors. All rights reserved.
"""Whole-model speed measurement, shared by
``tools/analysis_tools/benchmark_model.py`` and ``tools/demo.py``.

* :func:`float_twin`: the model with every MBB layer back to its float
  layer (same weights), and :func:`fold_batch_norms`, which folds each batch
  norm into the conv before it: the float model at its best;
* :func:`time_side_by_side`: median milliseconds of several forwards,
  measured interleaved (one run of each in turn), so that a load change on
  the machine hits all of them alike;
* :func:`module_breakdown`: where one forward spends its time, per leaf
  module (forward pre/post hooks), by kind of layer, with the packed ops'
  phases when :mod:`mmbinary.ops.profiling` is there;
* :func:`packed_agreement`: each packed layer against its MBB layer on the
  same input, each packed flow block against its layer-by-layer forward,
  and the whole model's outputs;
* :func:`describe_encoding`: what a packed model runs encoded and what in
  float.
"""
import copy
import platform
import re
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm, _NormBase

from mmbinary.models.heads.per_level_norm import PerLevelNormMBBConv2d
from mmbinary.models.layers import MBBConv2d, MBBLinear
from mmbinary.models.packing import (FoldedNorm, PackedMBBConv2d,
                                     find_layer_norm_pairs, fold_norm,
                                     set_memory_format,
                                     use_channels_last_max_pools,
                                     use_onednn_convs)
from mmbinary.models.packing.packed_flow import fused_after, passes_on

try:  # the packed ops' phase timers and the core clock, where built
    from mmbinary.ops import profiling
except ImportError:  # pragma: no cover - depends on the ops version
    profiling = None

#: A forward of a model on one image: ``run(model, image)``.
ForwardFn = Callable[[nn.Module, Tensor], Any]
#: Phases of a packed op that :mod:`mmbinary.ops.profiling` times (its
#: own list where it has one).
PHASES = tuple(
    getattr(profiling, 'PHASES',
            ('quantize_pack', 'prepass', 'accumulate', 'epilogue')))
#: Kinds of leaf modules in a breakdown, in print order.
KINDS = ('packed MBB', 'packed flow blocks', 'MBB (training form)',
         'float depthwise conv', 'float conv', 'float linear', 'norm',
         'activation', 'layout conversion', 'other modules')
#: Module type names that convert between layouts (packed, channels-last,
#: float).
_LAYOUT_NAME = re.compile(
    r'Layout|Unpack|ToFloat|ToPacked|Materiali[sz]e|ChannelsLast|Permute|'
    r'Contiguous|Dequant|QuantStub')
_ACTIVATION_NAME = re.compile(
    r'ReLU|Sigmoid|Swish|SiLU|GELU|Hardswish|HSwish|HSigmoid|Tanh|Clamp|'
    r'Mish|ELU')


def cpu_model_name() -> str:
    """The CPU's model name, as ``/proc/cpuinfo`` (``lscpu``) gives it."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_flag(flag: str) -> Optional[bool]:
    """Whether ``/proc/cpuinfo`` lists ``flag`` (None where unreadable)."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            for line in f:
                if line.startswith('flags'):
                    return flag in line.split(':', 1)[1].split()
    except OSError:
        pass
    return None


def core_ghz() -> Optional[float]:
    """The clock the core really runs (measured by
    ``mmbinary.ops.profiling.measure_core_ghz``), or None where that
    measurement is not available."""
    if profiling is None or not hasattr(profiling, 'measure_core_ghz'):
        return None
    return float(profiling.measure_core_ghz())


def peak_bmacs() -> Optional[float]:
    """Peak binary MACs per cycle of the packed kernel's instruction mix on
    this core (``mmbinary.ops.profiling.measure_peak_bmacs``), or None
    where it cannot be measured."""
    if profiling is None or not hasattr(profiling, 'measure_peak_bmacs'):
        return None
    return float(profiling.measure_peak_bmacs()) or None


# ---- the float model at its best --------------------------------------------

class FloatPerLevelConv2d(nn.Module):
    """The float twin of a per-level head conv
    (:class:`~mmbinary.models.heads.PerLevelNormMBBConv2d`):
    ``forward(x, level) = norms[level](conv(x))``, ``conv`` an
    ``nn.Conv2d``."""

    def __init__(self, conv: nn.Conv2d, norms: nn.ModuleList) -> None:
        super().__init__()
        self.conv = conv
        self.norms = norms

    def forward(self, input: Tensor, level: int) -> Tensor:
        return self.norms[level](self.conv(input))


def float_twin(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every MBBConv2d / MBBLinear replaced by an
    ``nn.Conv2d`` / ``nn.Linear`` of the same geometry holding a copy of its
    float weight and bias (the model it was encoded from); a per-level head
    conv by a :class:`FloatPerLevelConv2d` with its norms.

    Args:
        model (nn.Module): an MBB model (unpacked).

    Returns:
        nn.Module: the float copy, in eval mode.
    """
    twin = copy.deepcopy(model)
    swaps = []
    for name, module in twin.named_modules():
        if isinstance(module, MBBConv2d):
            layer = nn.Conv2d(module.in_channels, module.out_channels,
                              module.kernel_size, module.stride,
                              module.padding, module.dilation, module.groups,
                              module.bias is not None, module.padding_mode,
                              device='meta')
        elif isinstance(module, MBBLinear):
            layer = nn.Linear(module.in_features, module.out_features,
                              module.bias is not None, device='meta')
        else:
            continue
        layer.weight = module.weight
        layer.bias = module.bias
        if isinstance(module, PerLevelNormMBBConv2d):
            layer = FloatPerLevelConv2d(layer, module.norms)
        swaps.append((name, layer))
    for name, layer in swaps:
        _replace(twin, name, layer)
    twin.eval()  # (some backbones' train() returns None)
    return twin


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition('.')
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


@torch.no_grad()
def fold_batch_norms(model: nn.Module) -> int:
    """Fold, in place, every batch norm that directly follows a float conv
    (mmcv ``ConvModule``, ``nn.Sequential``, ResNet blocks: see
    :func:`~mmbinary.models.packing.find_layer_norm_pairs`) into the conv's
    weight and bias, leaving an identity in its place.

    Args:
        model (nn.Module): a float model (not MBB: those fold when packed).

    Returns:
        int: the number of norms folded.
    """
    model.eval()
    pairs = [(conv_name, norm_name)
             for conv_name, norm_name in find_layer_norm_pairs(
                 model, (nn.Conv2d, ))
             if not isinstance(model.get_submodule(conv_name), MBBConv2d)]
    for conv_name, norm_name in pairs:
        conv = model.get_submodule(conv_name)
        norm = model.get_submodule(norm_name)
        ones = torch.ones(conv.out_channels, dtype=torch.float64)
        bias = (conv.bias.double() if conv.bias is not None else
                torch.zeros_like(ones))
        factor, new_bias = fold_norm(ones, bias, norm)
        conv.weight.mul_(
            factor.to(conv.weight).view(-1, *([1] * (conv.weight.dim() - 1))))
        conv.bias = nn.Parameter(new_bias.to(conv.weight))
        _replace(model, norm_name, nn.Identity())
    return len(pairs)


def to_channels_last(model: nn.Module) -> nn.Module:
    """``model``, in place, with its conv weights channels-last
    (:func:`~mmbinary.models.packing.set_memory_format`)."""
    return set_memory_format(model, 'channels_last')


# ---- timing -----------------------------------------------------------------

def time_side_by_side(forwards: Dict[str, Callable[[], Any]],
                      repeat: int = 3,
                      warmup: int = 1) -> Dict[str, float]:
    """Median milliseconds of each forward, runs interleaved.

    Args:
        forwards (dict[str, callable]): name -> a call without arguments.
        repeat (int): timed runs of each (>= 1).
        warmup (int): untimed runs of each first (>= 0).

    Returns:
        dict[str, float]: name -> median milliseconds per call.
    """
    if repeat < 1 or warmup < 0:
        raise ValueError(f'repeat must be >= 1 and warmup >= 0, got '
                         f'repeat={repeat}, warmup={warmup}')
    times: Dict[str, List[float]] = {name: [] for name in forwards}
    with torch.no_grad():
        for _ in range(warmup):
            for forward in forwards.values():
                forward()
        for _ in range(repeat):
            for name, forward in forwards.items():
                start = time.perf_counter()
                forward()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


@dataclass
class FloatBest:
    """The fastest float32 form of a model.

    Attributes:
        ms (dict[str, float]): median ms of ``'unfolded NCHW'``,
            ``'folded NCHW'`` and ``'folded channels-last'``.
        best (str): the faster folded form's key.
        model (nn.Module): that form.
        folded_norms (int): norms folded.
    """
    ms: Dict[str, float]
    best: str
    model: nn.Module
    folded_norms: int

    @property
    def best_ms(self) -> float:
        return self.ms[self.best]


def fastest_float(float_model: nn.Module,
                  image: Tensor,
                  run: ForwardFn,
                  repeat: int = 3,
                  warmup: int = 1,
                  extra: Optional[Dict[str, Callable[[], Any]]] = None
                  ) -> Tuple[FloatBest, Dict[str, float]]:
    """Time ``float_model`` as it is, with its batch norms folded, folded
    and channels-last, and that with its 1x1 convs on oneDNN and its max
    pools compiled (:func:`~mmbinary.models.packing.use_onednn_convs`,
    :func:`~mmbinary.models.packing.use_channels_last_max_pools`), side by
    side with
    ``extra`` forwards.

    Args:
        float_model (nn.Module): the float model (left unchanged).
        image (Tensor): (1, 3, H, W) input.
        run (callable): ``run(model, image)``, one forward.
        repeat, warmup: see :func:`time_side_by_side`.
        extra (dict, optional): more forwards to time in the same runs.

    Returns:
        tuple[FloatBest, dict]: the float forms and the ``extra`` times.
    """
    folded = copy.deepcopy(float_model)
    folded_norms = fold_batch_norms(folded)
    folded_cl = to_channels_last(copy.deepcopy(folded))
    # The 1x1 convs on oneDNN too (torch's own choice at batch 1 on one
    # thread is its slower im2col path) and the max pools on the compiled
    # kernel (the same values, faster), as in the packed models.
    folded_cl_onednn = copy.deepcopy(folded_cl)
    use_onednn_convs(folded_cl_onednn)
    use_channels_last_max_pools(folded_cl_onednn)
    image_cl = image.contiguous(memory_format=torch.channels_last)
    forms = {
        'unfolded NCHW': lambda: run(float_model, image),
        'folded NCHW': lambda: run(folded, image),
        'folded channels-last': lambda: run(folded_cl, image_cl),
        'folded channels-last, 1x1 on oneDNN':
        lambda: run(folded_cl_onednn, image_cl),
    }
    extra = extra or {}
    clash = set(forms) & set(extra)
    if clash:
        raise ValueError(f'extra forwards may not be named {sorted(clash)}')
    times = time_side_by_side({**forms, **extra}, repeat, warmup)
    models = {'folded NCHW': folded, 'folded channels-last': folded_cl,
              'folded channels-last, 1x1 on oneDNN': folded_cl_onednn}
    best = min(models, key=times.get)
    result = FloatBest({name: times[name] for name in forms}, best,
                       models[best], folded_norms)
    return result, {name: times[name] for name in extra}


# ---- where the time goes ----------------------------------------------------

def module_kind(module: nn.Module) -> str:
    """The kind of a timed module, one of :data:`KINDS`."""
    name = type(module).__name__
    if isinstance(module, PackedMBBConv2d) or name.startswith('Packed'):
        return 'packed MBB'
    if isinstance(module, (MBBConv2d, MBBLinear)):
        return 'MBB (training form)'
    if _own_forward(module):
        if any(isinstance(m, PackedMBBConv2d) for m in module.modules()):
            return 'packed flow blocks'
        # a fused float module: the kind of the conv it holds
        inner = [module_kind(m) for m in module.modules() if m is not module
                 and isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
        return inner[0] if inner else 'other modules'
    if _LAYOUT_NAME.search(name):
        return 'layout conversion'
    if isinstance(module, nn.modules.conv._ConvNd):
        if module.groups > 1 and module.groups == module.in_channels:
            return 'float depthwise conv'
        return 'float conv'
    if isinstance(module, nn.Linear):
        return 'float linear'
    if isinstance(module, (_BatchNorm, _NormBase, nn.GroupNorm,
                           nn.LayerNorm)) and not isinstance(
                               module, FoldedNorm):
        return 'norm'
    if (type(module).__module__ == 'torch.nn.modules.activation'
            or _ACTIVATION_NAME.search(name)):
        return 'activation'
    return 'other modules'


def _own_forward(module: nn.Module) -> bool:
    """Whether ``module`` runs with a forward set on the instance (a block
    of a packed model passing packed activations between its convs, see
    :func:`mmbinary.models.packing.packed_flow.enable_packed_flow`): its
    children are not called as modules, so it is timed as one."""
    return 'forward' in module.__dict__


def binary_macs(layer: PackedMBBConv2d, output: Any) -> Optional[int]:
    """Binary MACs of one call of a packed layer,
    ``M * K * C_in/groups * kh * kw * C_out * N * H_out * W_out``, from its
    (N, C_out, H_out, W_out) output (None for any other output)."""
    shape = getattr(output, 'shape', None)
    if not isinstance(output, Tensor) or shape is None:
        return None
    kernel = getattr(layer, 'kernel_size', (1, 1))
    if len(shape) == 4 and shape[1] == layer.out_channels:
        outputs = shape[0] * shape[1] * shape[2] * shape[3]
    elif len(shape) >= 1 and shape[-1] == layer.out_channels:  # linear
        outputs = output.numel()
    else:
        return None
    return (int(layer.w_bits) * int(layer.a_bits) * outputs *
            layer.in_channels // layer.groups * kernel[0] * kernel[1])


def float_macs(layer: nn.Module, output: Any) -> Optional[int]:
    """MACs of one call of a float conv or linear layer,
    ``out_elements * C_in/groups * kh * kw`` (None for other outputs)."""
    weight = getattr(layer, 'weight', None)
    if not isinstance(output, Tensor) or not isinstance(weight, Tensor):
        return None
    taps = 1
    for size in weight.shape[2:]:
        taps *= int(size)
    return output.numel() * int(weight.shape[1]) * taps


#: Kinds whose float MACs a breakdown counts.
_FLOAT_MAC_KINDS = ('float depthwise conv', 'float conv', 'float linear')


@torch.no_grad()
def count_macs(model: nn.Module, image: Tensor,
               run: ForwardFn) -> Dict[str, Tuple[str, int, int]]:
    """MACs of one forward, layer by layer: packed layers' binary MACs and
    float convs' and linears' MACs, with any block forward set on an
    instance (packed flow) lifted for the count, so that every layer runs
    as a module.

    Returns:
        dict: layer name -> (kind, calls, MACs) where kind is
        ``'packed MBB'`` (binary MACs) or a float kind.
    """
    counts: Dict[str, list] = {}

    def hook_for(name: str, kind: str):

        def hook(module, args, output):
            macs = (binary_macs(module, output) if kind == 'packed MBB' else
                    float_macs(module, output))
            entry = counts.setdefault(name, [kind, 0, 0])
            entry[1] += 1
            entry[2] += macs or 0

        return hook

    lifted = [(module, module.__dict__.pop('forward'))
              for module in model.modules() if _own_forward(module)]
    handles = []
    for name, module in model.named_modules():
        kind = module_kind(module)
        if kind == 'packed MBB' or (kind in _FLOAT_MAC_KINDS
                                    and next(module.children(), None) is None):
            handles.append(module.register_forward_hook(hook_for(name, kind)))
    try:
        run(model, image)
    finally:
        for handle in handles:
            handle.remove()
        for module, forward in lifted:
            module.forward = forward
    return {name: tuple(entry) for name, entry in counts.items()}


@dataclass
class LayerTime:
    """One timed module of a breakdown (in the run of median total).

    Attributes:
        name (str): module name.
        kind (str): see :func:`module_kind`.
        module (nn.Module): the module.
        ms (float): milliseconds per forward of the model (all its calls).
        calls (int): calls per forward.
        binary_macs (int | None): per forward, packed layers and packed flow
            blocks (their packed convs) only.
        macs (int | None): float MACs per forward, float conv and linear
            layers only.
        packed_layers (list[str]): the packed layers it runs (itself, or a
            flow block's convs).
        phases (dict[str, float]): ms per forward per packed-op phase
            (empty without :mod:`mmbinary.ops.profiling`).
    """
    name: str
    kind: str
    module: nn.Module
    ms: float = 0.0
    calls: int = 0
    binary_macs: Optional[int] = None
    macs: Optional[int] = None
    packed_layers: List[str] = field(default_factory=list)
    phases: Dict[str, float] = field(default_factory=dict)


@dataclass
class Breakdown:
    """Where a forward spends its time.

    Attributes:
        total_ms (float): ms of the hooked forward, the median of the runs
            (the modules' times are from that run).
        layers (list[LayerTime]): the timed modules that ran, in call order.
        phases_available (bool): whether packed-op phases were timed.
        macs (dict): every conv and linear layer that ran, nested ones
            included: name -> (kind, calls, MACs), see :func:`count_macs`.
    """
    total_ms: float
    layers: List[LayerTime]
    phases_available: bool
    macs: Dict[str, Tuple[str, int, int]] = field(default_factory=dict)

    def by_kind(self) -> Dict[str, float]:
        """ms per kind of module, plus ``'Python/glue'``: the total minus
        the modules' sum (functional ops such as residual adds, upsampling
        and concatenation, Python control flow, hook overhead)."""
        kinds = {kind: 0.0 for kind in KINDS}
        for layer in self.layers:
            kinds[layer.kind] += layer.ms
        kinds['Python/glue'] = self.total_ms - sum(kinds.values())
        return kinds

    def phase_totals(self) -> Dict[str, float]:
        """ms per packed-op phase, summed over the packed layers."""
        return {
            phase: sum(layer.phases.get(phase, 0.0) for layer in self.layers)
            for phase in PHASES
        }

    def packed_layer_count(self) -> int:
        return sum(kind == 'packed MBB' for kind, _, _ in self.macs.values())


def _is_timed(module: nn.Module) -> bool:
    return (module_kind(module) in ('packed MBB', 'MBB (training form)',
                                    'packed flow blocks')
            or _own_forward(module) or next(module.children(), None) is None)


def module_breakdown(model: nn.Module,
                     image: Tensor,
                     run: ForwardFn,
                     repeat: int = 3,
                     warmup: int = 1) -> Breakdown:
    """Time each leaf module of a forward with pre/post forward hooks
    (``time.perf_counter``), and each packed layer's op phases through
    :mod:`mmbinary.ops.profiling` where it is available.

    Packed and MBB layers count as leaves with whatever they hold, and so
    does a block whose forward is set on the instance (a packed flow block:
    its convs, residual add, ReLU and shortcut); modules inside a timed one
    are not timed again. MACs come from :func:`count_macs`.

    Args:
        model (nn.Module): the model (eval mode).
        image (Tensor): its (1, 3, H, W) input.
        run (callable): ``run(model, image)``.
        repeat (int): timed forwards (the one of median total is
            reported).
        warmup (int): untimed forwards first.

    Returns:
        Breakdown: per-module times of the median run.
    """
    if repeat < 1 or warmup < 0:
        raise ValueError(f'repeat must be >= 1 and warmup >= 0, got '
                         f'repeat={repeat}, warmup={warmup}')
    timed: Dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if any(name.startswith(prefix + '.') for prefix in timed):
            continue
        if name and _is_timed(module):
            timed[name] = module
    kinds = {name: module_kind(module) for name, module in timed.items()}
    phases_on = profiling is not None and hasattr(profiling,
                                                  'enable_phase_timing')
    runs: List[Dict[str, dict]] = []
    current: Dict[str, dict] = {}
    starts: Dict[str, float] = {}

    def measures_phases(name: str) -> bool:
        return phases_on and kinds[name] in ('packed MBB',
                                             'packed flow blocks')

    def pre_hook(name: str):

        def hook(module, args):
            if measures_phases(name):
                profiling.read_phase_times(reset=True)
            starts[name] = time.perf_counter()

        return hook

    def post_hook(name: str):

        def hook(module, args, output):
            elapsed = time.perf_counter() - starts.pop(name)
            entry = current.setdefault(name,
                                       dict(seconds=0.0, calls=0, phases={}))
            entry['seconds'] += elapsed
            entry['calls'] += 1
            if measures_phases(name):
                for phase, seconds in profiling.read_phase_times(
                        reset=True).items():
                    if phase in PHASES:  # not the call count
                        entry['phases'][phase] = entry['phases'].get(
                            phase, 0.0) + seconds

        return hook

    handles = []
    for name, module in timed.items():
        handles.append(module.register_forward_pre_hook(pre_hook(name)))
        handles.append(module.register_forward_hook(post_hook(name)))
    totals = []
    if phases_on:
        profiling.enable_phase_timing(True)
    try:
        with torch.no_grad():
            for index in range(warmup + repeat):
                current = {}
                start = time.perf_counter()
                run(model, image)
                elapsed = time.perf_counter() - start
                if index >= warmup:
                    totals.append(elapsed)
                    runs.append(current)
    finally:
        for handle in handles:
            handle.remove()
        if phases_on:
            profiling.enable_phase_timing(False)
            profiling.read_phase_times(reset=True)

    macs = count_macs(model, image, run)
    # One run, the one with the median total, so that the modules and the
    # glue add up to its total.
    middle = sorted(range(len(totals)), key=totals.__getitem__)[
        (len(totals) - 1) // 2]
    layers = []
    for name, entry in runs[middle].items():
        layer = LayerTime(name, kinds[name], timed[name],
                          entry['seconds'] * 1e3, entry['calls'])
        inside = [(key, value) for key, value in macs.items()
                  if key == name or key.startswith(name + '.')]
        if layer.kind in _FLOAT_MAC_KINDS:
            layer.macs = sum(value[2] for _, value in inside)
        if layer.kind in ('packed MBB', 'packed flow blocks'):
            packed = [(key, value) for key, value in inside
                      if value[0] == 'packed MBB']
            layer.packed_layers = [key for key, _ in packed]
            layer.binary_macs = sum(value[2] for _, value in packed)
            layer.phases = {
                phase: seconds * 1e3
                for phase, seconds in entry['phases'].items()
            }
        layers.append(layer)
    return Breakdown(totals[middle] * 1e3, layers, phases_on, macs)


# ---- packed against unpacked ------------------------------------------------

@dataclass
class Agreement:
    """Packed outputs against the MBB training form's, on the same input.

    Attributes:
        layers_checked (int): packed layers run on their MBB layer's input.
        layers_failing (list[str]): those beyond float32 rounding.
        worst_layer_error (float): largest ``max|packed - mbb| / max|mbb|``
            over the checked layers.
        layer_error (str | None): why the per-layer check could not run.
        output_error (float): ``||packed - mbb|| / ||mbb||`` (L2, over
            all the model's outputs): quantization-boundary flips of earlier
            layers spread, so this may exceed rounding while every layer
            agrees.
        output_mismatch_fraction (float): share of output elements beyond
            float32 rounding.
        blocks_checked (int): blocks of the packed model that pass packed
            activations between their convs, run again layer by layer.
        blocks_failing (list[str]): those whose two forwards differ beyond
            float32 rounding.
    """
    layers_checked: int
    layers_failing: List[str]
    worst_layer_error: float
    layer_error: Optional[str]
    output_error: float
    output_mismatch_fraction: float
    blocks_checked: int = 0
    blocks_failing: List[str] = field(default_factory=list)

    @property
    def layers_agree(self) -> bool:
        """Every packed layer and every flow block agree."""
        return (self.layer_error is None and self.layers_checked > 0
                and not self.layers_failing and not self.blocks_failing)


def _beyond_rounding(out: Tensor, ref: Tensor) -> Tensor:
    """Elements of ``out`` beyond float32 rounding of ``ref`` (the
    tolerance of the packed layers' tests: 1e-4 relative plus 1e-5 of the
    largest magnitude)."""
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    return (out - ref).abs() > 1e-4 * ref.abs() + 1e-5 * scale + 1e-6


def _relative_error(out: Tensor, ref: Tensor) -> float:
    if ref.numel() == 0:
        return 0.0
    return float((out - ref).abs().max()) / max(float(ref.abs().max()),
                                                1e-12)


def relative_l2(outputs: Any, reference: Any) -> float:
    """``||outputs - reference|| / ||reference||`` over all the tensors of
    two model outputs (tensors, or lists, tuples, dicts of them)."""
    outputs, reference = _flat_tensors(outputs), _flat_tensors(reference)
    if len(outputs) != len(reference):
        raise ValueError(f'{len(outputs)} output tensors against '
                         f'{len(reference)}')
    diff = sum(float((o.double() - r.double()).pow(2).sum())
               for o, r in zip(outputs, reference))
    norm = sum(float(r.double().pow(2).sum()) for r in reference)
    return (diff / norm)**0.5 if norm > 0 else float(diff > 0)


def _flat_tensors(value: Any) -> List[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _flat_tensors(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _flat_tensors(item)]
    return []


@torch.no_grad()
def packed_agreement(unpacked: nn.Module, packed: nn.Module, image: Tensor,
                     run: ForwardFn) -> Agreement:
    """Run ``unpacked`` once; on the way, give each packed layer of
    ``packed`` (same module names) the input its MBB layer got and compare
    with that layer's output (after the batch norm the packed layer folded,
    if any). Check each packed flow block against its layer-by-layer
    forward, then compare the two models' outputs.

    Args:
        unpacked (nn.Module): the MBB model (training form, eval mode).
        packed (nn.Module): its packed conversion.
        image (Tensor): (1, 3, H, W) input.
        run (callable): ``run(model, image)``.
    """
    folded = {
        norm: layer
        for layer, norm in find_layer_norm_pairs(unpacked, (MBBConv2d,
                                                            MBBLinear))
    }
    packed_modules = dict(packed.named_modules())
    pending: Dict[str, Tensor] = {}
    errors: Dict[str, float] = {}
    failing: List[str] = []
    problem: List[str] = []

    def compare(name: str, out: Tensor, ref: Tensor) -> None:
        errors[name] = max(errors.get(name, 0.0), _relative_error(out, ref))
        if bool(_beyond_rounding(out, ref).any()) and name not in failing:
            failing.append(name)

    def layer_hook(name: str):

        def hook(module, args, output):
            if problem:
                return
            target = packed_modules.get(name)
            if target is None or module_kind(target) != 'packed MBB':
                return
            try:
                # the layer's own forward (not a flow's: a ResNet stem
                # conv's applies the ReLU after it too)
                out = type(target).forward(target, *args)
            except Exception as error:  # a layer that needs packed input
                problem.append(f'{name}: {type(error).__name__}: {error}')
                return
            norm = next((n for n, layer in folded.items() if layer == name),
                        None)
            if norm is not None and isinstance(packed_modules.get(norm),
                                               FoldedNorm):
                pending[norm] = out
            else:
                compare(name, out, output)

        return hook

    def norm_hook(norm_name: str):

        def hook(module, args, output):
            if norm_name in pending:
                compare(folded[norm_name], pending.pop(norm_name), output)

        return hook

    handles = []
    for name, module in unpacked.named_modules():
        if isinstance(module, (MBBConv2d, MBBLinear)):
            handles.append(module.register_forward_hook(layer_hook(name)))
        elif name in folded:
            handles.append(module.register_forward_hook(norm_hook(name)))
    try:
        reference = _flat_tensors(run(unpacked, image))
    finally:
        for handle in handles:
            handle.remove()
    blocks, blocks_failing = _check_flow_blocks(packed, image, run)
    outputs = _flat_tensors(run(packed, image))
    if len(outputs) != len(reference):
        raise RuntimeError(f'the packed model gave {len(outputs)} outputs, '
                           f'the unpacked one {len(reference)}')
    mismatched = sum(
        int(_beyond_rounding(out, ref).sum())
        for out, ref in zip(outputs, reference))
    elements = max(sum(ref.numel() for ref in reference), 1)
    return Agreement(
        layers_checked=len(errors),
        layers_failing=failing,
        worst_layer_error=max(errors.values(), default=0.0),
        layer_error=problem[0] if problem else None,
        output_error=relative_l2(outputs, reference),
        output_mismatch_fraction=mismatched / elements,
        blocks_checked=blocks,
        blocks_failing=blocks_failing)


def _check_flow_blocks(packed: nn.Module, image: Tensor,
                       run: ForwardFn) -> Tuple[int, List[str]]:
    """Run ``packed`` once and give each block with a forward of its own
    (packed activations between its convs) its input again through its
    class's forward (packed layer by packed layer); the two must agree to
    float32 rounding.

    Returns:
        tuple: blocks checked, names of those that differ.
    """
    checked: List[str] = []
    failing: List[str] = []

    def hook_for(name: str):

        def hook(block, args, output):
            expected = type(block).forward(block, *args)
            # a ResNet stem conv's ReLU (and max pool) in its epilogue
            for step in fused_after(block, output):
                expected = step(expected)
            checked.append(name)
            if bool(_beyond_rounding(output, expected).any()):
                failing.append(name)

        return hook

    # (a module that passes on what the conv before it did is checked
    # with that conv)
    handles = [
        module.register_forward_hook(hook_for(name))
        for name, module in packed.named_modules()
        if _own_forward(module) and not passes_on(module)
    ]
    try:
        run(packed, image)
    finally:
        for handle in handles:
            handle.remove()
    return len(set(checked)), sorted(set(failing))


def describe_encoding(breakdown: Breakdown) -> str:
    """What a packed model's forward ran encoded and what it ran in float:
    packed layers with their binary MACs, the float convs and linears left
    by kind with their MACs, and the time of each (float layers inside a
    packed flow block are timed with their block).

    Args:
        breakdown (Breakdown): of the packed model.
    """
    timed = {layer.name: layer for layer in breakdown.layers}
    packed = [layer for layer in breakdown.layers
              if layer.kind in ('packed MBB', 'packed flow blocks')]
    binary = sum(layer.binary_macs or 0 for layer in packed)
    packed_ms = sum(layer.ms for layer in packed)
    blocks = [layer for layer in packed if layer.kind == 'packed flow blocks']
    flow = (f', {sum(len(b.packed_layers) for b in blocks)} of them in '
            f'{len(blocks)} modules that pass packed activations on (timed '
            'as one each)' if blocks else '')
    parts = []
    for kind in _FLOAT_MAC_KINDS:
        names = [name for name, (k, _, _) in breakdown.macs.items()
                 if k == kind]
        if not names:
            continue
        macs = sum(breakdown.macs[name][2] for name in names)
        ms = sum(timed[name].ms for name in names if name in timed)
        inside = sum(name not in timed for name in names)
        text = (f'{len(names)} {kind}{"s" if len(names) > 1 else ""} '
                f'({macs / 1e9:.3f} GMAC, {ms:.1f} ms')
        if inside:
            text += f'; {inside} inside flow blocks, timed with them'
        parts.append(text + ')')
    norms = [layer for layer in breakdown.layers if layer.kind == 'norm']
    if norms:
        parts.append(f'{len(norms)} norm{"s" if len(norms) > 1 else ""} '
                     f'({sum(layer.ms for layer in norms):.1f} ms)')
    return (f'{breakdown.packed_layer_count()} packed MBB layers '
            f'({binary / 1e9:.2f} binary GMAC, {packed_ms:.1f} ms{flow}); '
            f'float layers left: {", ".join(parts) or "none"}; of '
            f'{breakdown.total_ms:.1f} ms in all (hooked)')


def packed_layer_rows(breakdown: Breakdown,
                      ghz: Optional[float],
                      threads: int = 1) -> List[Dict[str, Any]]:
    """One dict per packed layer of a breakdown: name, geometry, ms,
    binary MACs, binary MACs per cycle per thread (None without ``ghz``)
    and phase ms."""
    rows = []
    for layer in breakdown.layers:
        if layer.kind not in ('packed MBB', 'packed flow blocks'):
            continue
        per_cycle = None
        if ghz and layer.binary_macs and layer.ms > 0:
            per_cycle = layer.binary_macs / (layer.ms * 1e-3 * ghz * 1e9 *
                                             threads)
        if layer.kind == 'packed MBB':
            geometry = _geometry(layer.module)
        else:  # a flow block: its packed convs, shortcut included
            convs = [layer.module.get_submodule(name[len(layer.name) + 1:])
                     for name in layer.packed_layers]
            geometry = 'flow: ' + ' + '.join(_geometry(c) for c in convs)
            floats = sum(breakdown.macs[name][0] in _FLOAT_MAC_KINDS
                         for name in breakdown.macs
                         if name.startswith(layer.name + '.'))
            if floats:
                geometry += f' (+ {floats} float conv)'
        rows.append(
            dict(name=layer.name,
                 geometry=geometry,
                 ms=layer.ms,
                 calls=layer.calls,
                 binary_macs=layer.binary_macs,
                 per_cycle=per_cycle,
                 phases=dict(layer.phases)))
    return rows


def _geometry(module: nn.Module) -> str:
    kernel = getattr(module, 'kernel_size', (1, 1))
    text = (f'{module.in_channels}->{module.out_channels} '
            f'{kernel[0]}x{kernel[1]} W{module.w_bits}A{module.a_bits}')
    stride = getattr(module, 'stride', (1, 1))
    if tuple(stride) != (1, 1):
        text += f' s{stride[0]}'
    dilation = getattr(module, 'dilation', (1, 1))
    if tuple(dilation) != (1, 1):
        text += f' d{dilation[0]}'
    if getattr(module, 'groups', 1) != 1:
        text += f' g{module.groups}'
    if getattr(module, 'kernel', 'popcount') != 'popcount':
        text += f' [{module.kernel}]'
    return text


def format_ms(value: Optional[float]) -> str:
    """``value`` with a precision that suits its size, or ``'n/a'``."""
    if value is None:
        return 'n/a'
    return f'{value:.1f}' if value >= 10 else f'{value:.2f}'


def format_ratio(numerator: Optional[float],
                 denominator: Optional[float]) -> str:
    """``numerator / denominator`` as ``'1.23x'``, or ``'n/a'``."""
    if not numerator or not denominator:
        return 'n/a'
    return f'{numerator / denominator:.2f}x'
