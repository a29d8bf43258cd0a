# Copyright (c) mmbinary contributors. All rights reserved.
"""Export a packed PyTorch model part (a backbone, ...) to the packed-model
format, and load an export back into a PyTorch model.

The part's forward is traced with ``torch.fx`` (packed MBB layers and the
standard float layers are leaves) into a small graph of named nodes that
the NumPy reference and the ONNX builder interpret; every tensor of the
part's state dict is written, so nothing is lost.
"""
import operator
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn.modules.batchnorm import _BatchNorm

from mmbinary.models.packing import (FoldedNorm, PackedMBBConv2d,
                                     PackedMBBLinear, apply_packed_layout,
                                     packed_layout)
from mmbinary.models.packing.packed_flow import disable_packed_flow
from mmbinary.packed_format import pair, tap_weight_sums
from mmbinary.utils.atomic_write import atomic_write_files

from .format import (FORMAT_NAME, FORMAT_VERSION, MANIFEST, MODEL_FILE,
                     ONNX_CUSTOM_FILE, ONNX_PLAIN_FILE, RESOURCES_FILE,
                     VECTORS_FILE, PackedExport, file_entry, read_export,
                     remove_stale_export_files, save_tensors, tensor_entry,
                     write_manifest)

#: Float modules the graph keeps as single nodes.
_LEAF_TYPES = (nn.Conv2d, nn.Linear, _BatchNorm, nn.ReLU, nn.ReLU6,
               nn.Hardtanh, nn.MaxPool2d, nn.Identity, nn.Dropout,
               nn.Dropout2d)
_ADD = (operator.add, operator.iadd, torch.add)
_RELU = (F.relu, torch.relu, torch.relu_)


class ExportError(ValueError):
    """A model part that cannot be exported (with the reason)."""


class _Tracer(fx.Tracer):

    def is_leaf_module(self, module: nn.Module, qualname: str) -> bool:
        if isinstance(module, FoldedNorm):
            return False  # an identity: traced through, it disappears
        if isinstance(module, (PackedMBBConv2d, ) + _LEAF_TYPES):
            return True
        return super().is_leaf_module(module, qualname)


def _as_list_pair(value, name: str, minimum: int) -> List[int]:
    """A module's int-or-pair attribute as the manifest's list of 2."""
    return list(pair(value, name, minimum))


def _symmetric_padding(conv: nn.Conv2d, name: str) -> List[int]:
    if not isinstance(conv.padding, str):
        return _as_list_pair(conv.padding, f'{name}.padding', 0)
    left, right, top, bottom = conv._reversed_padding_repeated_twice
    if left != right or top != bottom:
        raise ExportError(f'{name}: padding={conv.padding!r} pads unevenly')
    return [top, left]


def trace_part(part: nn.Module, num_inputs: int = 1,
               container: Optional[type] = None) -> fx.GraphModule:
    """Trace a model part with the export's leaf modules.

    Args:
        part (nn.Module): the part, in eval mode, already packed.
        num_inputs (int): how many tensors it takes.
        container (type, optional): ``tuple`` or ``list`` when the part
            takes its tensors as one sequence (a neck), else None.

    Returns:
        fx.GraphModule: module targets are the part's own module names.
    """
    if container is None and num_inputs == 1:
        root = part
    else:
        names = ', '.join(f'x{i}' for i in range(num_inputs))
        body = f'self.part({container.__name__}(({names}, )))' \
            if container else f'self.part({names})'
        namespace: dict = {}
        exec(f'def forward(self, {names}):\n    return {body}\n', namespace)
        root = type('PartCall', (nn.Module, ),
                    {'forward': namespace['forward']})()
        root.part = part
    # The export describes the layer-by-layer forward: the packed flow of
    # residual blocks (packed activations between their convs, the same
    # outputs) is switched off while tracing, then given back.
    saved = {module: module.__dict__['forward'] for module in part.modules()
             if 'forward' in module.__dict__}
    disable_packed_flow(part)
    try:
        graph = _Tracer().trace(root)
    except Exception as error:
        raise ExportError(
            f'the part cannot be traced with torch.fx: {error}') from None
    finally:
        for module, forward in saved.items():
            module.forward = forward
    gm = fx.GraphModule(root, graph)
    # Layers whose output reaches no output (mmdet's MobileNetV2 runs its
    # last conv even when out_indices leave it out) are not in the graph;
    # their tensors are still exported.
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def _module_op(module: nn.Module, name: str) -> Tuple[str, dict]:
    if isinstance(module, PackedMBBLinear):
        return 'mbb_linear', {}
    if isinstance(module, PackedMBBConv2d):
        return 'mbb_conv2d', {}
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != 'zeros':
            raise ExportError(f'{name}: padding_mode={module.padding_mode!r}'
                              " is not supported (only 'zeros')")
        return 'conv2d', {}
    if isinstance(module, _BatchNorm):
        if module.training or not module.track_running_stats or \
                module.running_mean is None:
            raise ExportError(f'{name}: a batch norm must be in eval mode '
                              'with running statistics')
        return 'batch_norm', {}
    if isinstance(module, nn.Linear):
        return 'linear', {}
    if isinstance(module, nn.ReLU6) or (
            isinstance(module, nn.Hardtanh) and
            (module.min_val, module.max_val) == (0.0, 6.0)):
        return 'relu6', {}
    if isinstance(module, nn.ReLU):
        return 'relu', {}
    if isinstance(module, nn.MaxPool2d):
        if module.return_indices:
            raise ExportError(f'{name}: return_indices is not supported')
        return 'max_pool2d', dict(
            kernel_size=_as_list_pair(module.kernel_size,
                                      f'{name}.kernel_size', 1),
            stride=_as_list_pair(module.stride or module.kernel_size,
                                 f'{name}.stride', 1),
            padding=_as_list_pair(module.padding, f'{name}.padding', 0),
            dilation=_as_list_pair(module.dilation, f'{name}.dilation', 1),
            ceil_mode=bool(module.ceil_mode))
    if isinstance(module, (nn.Identity, nn.Dropout, nn.Dropout2d)):
        return 'identity', {}
    raise ExportError(f'{name}: module type {type(module).__name__} is not '
                      'supported by the export graph')


def _function_op(node: fx.Node) -> str:
    target = node.target
    if node.op == 'call_function':
        if target in _ADD and len(node.args) == 2 and not node.kwargs:
            return 'add'
        if target in _RELU:
            return 'relu'
        if target is F.relu6:
            return 'relu6'
        if target is torch.flatten and _flatten_from_1(node):
            return 'flatten'
    elif node.op == 'call_method':
        if target in ('add', 'add_', '__add__', '__iadd__') and len(
                node.args) == 2 and not node.kwargs:
            return 'add'
        if target in ('relu', 'relu_'):
            return 'relu'
        if target == 'flatten' and _flatten_from_1(node):
            return 'flatten'
    name = getattr(target, '__name__', target)
    raise ExportError(
        f'graph node {node.name!r} ({node.op} {name}) is not supported by '
        'the export graph (supported: packed MBB layers, Conv2d, BatchNorm, '
        'Linear, ReLU, ReLU6, MaxPool2d, Identity/Dropout, add, '
        'flatten(x, 1))')


def _flatten_from_1(node: fx.Node) -> bool:
    """``flatten(x, 1)`` (to (N, -1)), the only flatten supported."""
    args = list(node.args[1:]) + [node.kwargs.get('start_dim'),
                                  node.kwargs.get('end_dim')]
    args = [arg for arg in args if arg is not None]
    return args in ([1], [1, -1])


def _flatten_output(value) -> List[fx.Node]:
    if isinstance(value, fx.Node):
        return [value]
    if isinstance(value, (tuple, list)):
        return [node for item in value for node in _flatten_output(item)]
    raise ExportError(f'the part returns {type(value).__name__}, not tensors')


def graph_nodes(gm: fx.GraphModule) -> Tuple[List[dict], List[str]]:
    """The export graph of a traced part (ShapeProp already run).

    Returns:
        tuple[list[dict], list[str]]: the nodes and the output names.
    """
    modules = dict(gm.named_modules())
    nodes, outputs = [], []
    for node in gm.graph.nodes:
        entry = dict(name=node.name, op=None, inputs=[], layer=None,
                     attributes={})
        if node.op == 'placeholder':
            entry['op'] = 'input'
        elif node.op == 'output':
            outputs = [n.name for n in _flatten_output(node.args[0])]
            continue
        elif node.op == 'call_module':
            layer = _strip(node.target)
            entry['op'], entry['attributes'] = _module_op(
                modules[node.target], layer)
            if entry['op'] in ('mbb_conv2d', 'mbb_linear', 'conv2d',
                               'batch_norm', 'linear'):
                entry['layer'] = layer
        elif node.op in ('call_function', 'call_method'):
            entry['op'] = _function_op(node)
        else:
            raise ExportError(f'graph node {node.name!r}: {node.op} '
                              f'{node.target!r} is not supported (a '
                              'parameter used outside its layer?)')
        if node.op != 'placeholder':
            args = list(node.args) + list(node.kwargs.values())
            if node.op == 'call_module' or entry['op'] == 'flatten':
                args = args[:1]  # a layer's input
            for arg in args:
                if not isinstance(arg, fx.Node):
                    raise ExportError(
                        f'graph node {node.name!r}: a non-tensor argument '
                        f'{arg!r} is not supported')
                entry['inputs'].append(arg.name)
        meta = node.meta.get('tensor_meta')
        if meta is not None and hasattr(meta, 'shape'):
            entry['shape'] = list(meta.shape)
        nodes.append(entry)
    return nodes, outputs


def _strip(target: str) -> str:
    return target[len('part.'):] if target.startswith('part.') else target


def _float_attributes(module: nn.Module, name: str) -> dict:
    if isinstance(module, nn.Conv2d):
        return dict(in_channels=module.in_channels,
                    out_channels=module.out_channels,
                    kernel_size=_as_list_pair(module.kernel_size,
                                              f'{name}.kernel_size', 1),
                    stride=_as_list_pair(module.stride, f'{name}.stride', 1),
                    padding=_symmetric_padding(module, name),
                    dilation=_as_list_pair(module.dilation,
                                           f'{name}.dilation', 1),
                    groups=module.groups,
                    bias=module.bias is not None)
    if isinstance(module, _BatchNorm):
        return dict(num_features=module.num_features, eps=float(module.eps),
                    affine=bool(module.affine))
    if isinstance(module, nn.Linear):
        return dict(in_features=module.in_features,
                    out_features=module.out_features,
                    bias=module.bias is not None)
    return {}


def _mbb_attributes(module: PackedMBBConv2d) -> dict:
    inv_step = float(module.inv_step.float())
    return dict(
        in_channels=module.in_channels, out_channels=module.out_channels,
        kernel_size=list(module.kernel_size), stride=list(module.stride),
        padding=list(module.padding), dilation=list(module.dilation),
        groups=module.groups, w_bits=module.w_bits, a_bits=module.a_bits,
        mode='signed' if module.signed else 'unsigned', inv_step=inv_step,
        step=1.0 / inv_step,
        words_per_group=int(module.weight_words.shape[-1]))


def collect_layers(part: nn.Module) -> Tuple[List[dict],
                                             Dict[str, np.ndarray]]:
    """Layers (every module owning state-dict tensors) and the arrays.

    Returns:
        tuple[list[dict], dict]: manifest layer entries in module order,
        and key -> np.ndarray (the state dict plus the derived
        ``tap_weight_sums`` of the MBB layers).
    """
    state = part.state_dict()
    by_module: Dict[str, Dict[str, Tensor]] = {}
    for key, value in state.items():
        if not isinstance(value, Tensor):
            continue  # the packed layers' _extra_state (their config)
        module_name, _, role = key.rpartition('.')
        by_module.setdefault(module_name, {})[role] = value
    layers, arrays = [], {}
    for name, module in part.named_modules():
        if name not in by_module:
            continue
        entry = dict(name=name, type=type(module).__name__,
                     module=f'{type(module).__module__}.'
                     f'{type(module).__qualname__}')
        tensors = {}
        for role, value in by_module[name].items():
            key = f'{name}.{role}' if name else role
            array = value.detach().cpu().contiguous().numpy()
            arrays[key] = array
            tensors[role] = tensor_entry(key, array)
        if isinstance(module, PackedMBBConv2d):
            entry['kind'] = ('mbb_linear' if isinstance(
                module, PackedMBBLinear) else 'mbb_conv2d')
            entry['attributes'] = _mbb_attributes(module)
            key = f'{name}.tap_weight_sums'
            arrays[key] = tap_weight_sums(arrays[tensors['weight_words']
                                                 ['key']],
                                          module.in_channels, module.w_bits,
                                          module.groups)
            tensors['tap_weight_sums'] = tensor_entry(key, arrays[key],
                                                      derived=True)
        else:
            entry['kind'] = 'float'
            entry['attributes'] = _float_attributes(module, name)
        entry['tensors'] = tensors
        layers.append(entry)
    return layers, arrays


def _layout(part: nn.Module) -> dict:
    layout = packed_layout(part)
    return dict(
        layers={
            name: dict(type=entry['type'],
                       config={
                           key: list(value) if isinstance(value, tuple) else
                           value
                           for key, value in entry['config'].items()
                       })
            for name, entry in layout['layers'].items()
        },
        folded_norms=layout['folded_norms'])


def export_packed(part: nn.Module,
                  example_inputs: Sequence[Tensor],
                  out_dir: str,
                  *,
                  container: Optional[type] = None,
                  vectors: int = 0,
                  seed: int = 0,
                  onnx: bool = False,
                  source: Optional[dict] = None) -> PackedExport:
    """Export a packed model part.

    Args:
        part (nn.Module): converted with ``convert_to_packed`` (eval mode).
        example_inputs (Sequence[Tensor]): float32 inputs of the part (batch
            1 is enough): they fix the example shapes recorded in the
            manifest, the resource counts and the vectors' shapes.
        out_dir (str): the export directory (created; files of an earlier
            export there are replaced, others kept). The files are written
            into a temporary folder inside it and moved into place, the
            manifest last, only when all are complete: a failed export
            leaves an earlier one as it was.
        container (type, optional): ``tuple``/``list`` when the part takes
            its inputs as one sequence.
        vectors (int): number of random test vectors (0: none).
        seed (int): their seed.
        onnx (bool): also write the two ONNX graphs.
        source (dict, optional): provenance for the manifest (config,
            checkpoint, part).

    Returns:
        PackedExport: the export, read back and validated.
    """
    part.eval()
    example_inputs = [x.detach().float().cpu() for x in example_inputs]
    part_cpu = part.cpu()
    gm = trace_part(part_cpu, len(example_inputs), container)
    with torch.no_grad():
        ShapeProp(gm).propagate(*example_inputs)
    nodes, outputs = graph_nodes(gm)
    layers, arrays = collect_layers(part_cpu)
    names = {layer['name'] for layer in layers}
    for node in nodes:
        if node['layer'] is not None and node['layer'] not in names:
            raise ExportError(f"node {node['name']!r}: layer "
                              f"{node['layer']!r} has no tensors")
    with atomic_write_files(out_dir, last=(MANIFEST, )) as stage:
        manifest = _write_export(stage, gm, nodes, outputs, layers, arrays,
                                 part_cpu, vectors, seed, onnx, source)
    remove_stale_export_files(out_dir, manifest)
    return read_export(out_dir)


def _write_export(out_dir: str, gm: fx.GraphModule, nodes: List[dict],
                  outputs: List[str], layers: List[dict],
                  arrays: Dict[str, np.ndarray], part: nn.Module,
                  vectors: int, seed: int, onnx: bool,
                  source: Optional[dict]) -> dict:
    """Write every file of an export into ``out_dir`` (the manifest last,
    read back before it is final); returns the manifest."""
    from .resources import resource_table, resources
    save_tensors(osp.join(out_dir, MODEL_FILE), arrays)
    manifest = dict(
        format=FORMAT_NAME,
        version=FORMAT_VERSION,
        producer=dict(name='mmbinary', version=_version(),
                      torch=torch.__version__),
        source=source or {},
        byte_order='little',
        files=dict(model=file_entry(out_dir, MODEL_FILE)),
        inputs=[dict(name=node['name'], shape=node.get('shape'),
                     dtype='float32')
                for node in nodes if node['op'] == 'input'],
        layers=layers,
        graph=dict(nodes=nodes, outputs=outputs),
        packed_layout=_layout(part))
    write_manifest(out_dir, manifest)
    export = read_export(out_dir)
    manifest['resources'] = resources(export)
    with open(osp.join(out_dir, RESOURCES_FILE), 'w') as file:
        file.write(resource_table(manifest['resources']) + '\n')
    manifest['files']['resources'] = file_entry(out_dir, RESOURCES_FILE)
    if vectors:
        from .vectors import write_vectors
        manifest['vectors'] = write_vectors(
            gm, export, osp.join(out_dir, VECTORS_FILE), vectors, seed)
        manifest['files']['vectors'] = file_entry(out_dir, VECTORS_FILE)
    if onnx:
        from .onnx_export import export_onnx
        for mode, name in (('custom', ONNX_CUSTOM_FILE),
                           ('plain', ONNX_PLAIN_FILE)):
            export_onnx(export, osp.join(out_dir, name), mode)
            manifest['files'][f'onnx_{mode}'] = file_entry(out_dir, name)
    write_manifest(out_dir, manifest)
    read_export(out_dir)  # everything checks before it is published
    return manifest


def _version() -> str:
    from mmbinary.version import __version__
    return __version__


def load_export_into(module: nn.Module, export) -> nn.Module:
    """Give a model part built from the same config its packed form and
    the exported tensors (``load_state_dict(strict=True)``).

    Args:
        module (nn.Module): the part, freshly built (float MBB layers).
        export (PackedExport | str): the export or its directory.

    Returns:
        nn.Module: ``module``, packed, in eval mode.
    """
    if isinstance(export, str):
        export = read_export(export)
    layout = export.manifest['packed_layout']
    apply_packed_layout(module, layout)
    state = {key: torch.from_numpy(array.copy())
             for key, array in export.state_dict_arrays().items()}
    for name, entry in layout['layers'].items():
        state[f'{name}._extra_state'] = entry['config']
    module.load_state_dict(state, strict=True)
    return module.eval()
