# Copyright (c) mmbinary contributors. All rights reserved.
"""Stop a run at once, with one message, when a file it will open is
missing.

mmengine opens a run's files one by one, late (the checkpoints when the
model is initialized, the datasets when the dataloaders are built, the
evaluators' annotation files when evaluation starts), and fails on the first
with a bare path. :func:`check_datasets` reads the config instead and looks
for everything at once:

* each dataloader's dataset (``data_root``, ``ann_file``, every
  ``data_prefix`` folder, through ``ConcatDataset``/``RepeatDataset`` style
  wrappers);
* each evaluator's ``ann_file`` (``val_evaluator`` with ``val_dataloader``,
  ``test_evaluator`` with ``test_dataloader``);
* ``load_from`` (also the checkpoint of ``--resume CKPT``);
* when training from scratch, every ``init_cfg=dict(type='Pretrained',
  checkpoint=...)`` and mmseg's ``model.pretrained``;
* the files a model opens when it is built (a distiller's
  ``teacher_ckpt`` and teacher ``cfg_path``).

It raises :class:`DatasetNotFoundError` naming, for each missing path, the
config key that sets it, and where to get the data only for the datasets it
knows; then :class:`ClassesNotFoundError` when a COCO-format dataset's class
names are not among its json's categories. Paths read through a storage
backend (``backend_args``) and URLs are not checked.

:func:`resolve_checkpoint_paths` makes relative checkpoint paths independent
of the working directory, and :func:`drop_unneeded_pretrained` removes the
backbone's pretrained file from a run that loads a whole model anyway.
"""
import json
import os
import os.path as osp
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

#: Where to get the data a config reads, by what identifies it:
#: (name, test on (dataset config, path), where to get it).
DATASET_SOURCES: List[Tuple[str, Callable[[dict, str], bool], str]] = [
    ('COCO 2017',
     lambda dataset, path: 'instances_' in path and '2017' in path,
     'COCO 2017 (train2017, val2017 and annotations_trainval2017) from '
     'https://cocodataset.org/#download'),
    ('Pascal VOC detection',
     lambda dataset, path: _type(dataset) == 'VOCDataset',
     'Pascal VOC 2007/2012 (VOCtrainval, VOCtest) from '
     'http://host.robots.ox.ac.uk/pascal/VOC/'),
    ('Pascal VOC segmentation',
     lambda dataset, path: _type(dataset) == 'PascalVOCDataset',
     'Pascal VOC 2012 from http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ '
     'and the SBD masks; mmsegmentation\'s '
     'tools/dataset_converters/voc_aug.py makes SegmentationClassAug and '
     'ImageSets/Segmentation/aug.txt'),
    ('Cityscapes',
     lambda dataset, path: _type(dataset) == 'CityscapesDataset',
     'Cityscapes (leftImg8bit_trainvaltest, gtFine_trainvaltest) from '
     'https://www.cityscapes-dataset.com; mmsegmentation\'s '
     'tools/dataset_converters/cityscapes.py makes the *labelTrainIds.png '
     'masks'),
    ('Penn-Fudan', lambda dataset, path: 'pennfudan' in path.lower(),
     'Penn-Fudan (PennFudanPed.zip) from '
     'https://www.cis.upenn.edu/~jshi/ped_html/, converted by '
     'tools/dataset_converters/pennfudan.py'),
    ('the embedded demo data',
     lambda dataset, path: 'data/demo/' in path.replace(os.sep, '/'),
     'the embedded demo data (tree tiles, ImageNet MobileNetV2 weights) '
     'with python tools/dataset_converters/prepare_demo_data.py'),
]


class DatasetNotFoundError(FileNotFoundError):
    """Files or folders a run will open are missing."""


class ClassesNotFoundError(DatasetNotFoundError):
    """Class names of a config are not in its COCO annotation file (the
    dataset would read no box of them)."""


#: COCO json files larger than this are not opened to check class names
#: (COCO 2017's train file is 450 MB and its names are known).
MAX_CLASS_CHECK_BYTES = 100 * 2**20


@dataclass(frozen=True)
class ExpectedPath:
    """A file or folder a run opens, and the config key that sets it."""
    #: the path as the run opens it (joined to ``data_root`` where the
    #: dataset joins it).
    path: str
    #: ``'file'`` or ``'folder'``.
    kind: str
    #: what it is, e.g. ``'annotation file'``.
    what: str
    #: the config key to set, e.g. ``'train_dataloader.dataset.ann_file'``.
    key: str

    def exists(self) -> bool:
        if self.kind == 'file':
            return osp.isfile(self.path)
        return osp.isdir(self.path)


def _type(dataset_cfg: dict) -> str:
    return str(dataset_cfg.get('type', '')).split('.')[-1]


def _is_url(path: str) -> bool:
    return '://' in path


def _leaf_datasets(dataset_cfg: dict, key: str) -> Iterator[Tuple[str, dict]]:
    """(key, config) of the datasets inside wrappers such as
    ``ConcatDataset`` and ``RepeatDataset``."""
    if isinstance(dataset_cfg.get('datasets'), (list, tuple)):
        for index, child in enumerate(dataset_cfg['datasets']):
            yield from _leaf_datasets(child, f'{key}.datasets.{index}')
    elif isinstance(dataset_cfg.get('dataset'), dict):
        yield from _leaf_datasets(dataset_cfg['dataset'], f'{key}.dataset')
    else:
        yield key, dataset_cfg


def _join(data_root, path: str) -> str:
    """Join as mmengine's ``BaseDataset`` does."""
    if data_root and not osp.isabs(path):
        return osp.join(data_root, path)
    return path


def _folder_kind(prefix_name: str) -> str:
    """What a ``data_prefix`` entry holds: ``img``/``img_path`` images,
    ``seg``/``seg_map_path`` masks."""
    if prefix_name.startswith('img'):
        return 'image folder'
    if prefix_name.startswith('seg'):
        return 'mask folder'
    return f'{prefix_name} folder'


def expected_paths(dataset_cfg: dict,
                   key: str = 'dataset') -> List[ExpectedPath]:
    """Files and folders a (leaf) dataset config reads.

    Args:
        dataset_cfg (dict): one dataset config.
        key (str): its key in the full config, e.g.
            ``'train_dataloader.dataset'``.

    Returns:
        list[ExpectedPath]: the annotation file (``ann_file``) and each
        ``data_prefix`` folder, joined to ``data_root``; the data root alone
        when the dataset names neither.
    """
    data_root = dataset_cfg.get('data_root')
    paths = []
    ann_file = dataset_cfg.get('ann_file')
    if ann_file:
        paths.append(
            ExpectedPath(
                _join(data_root, ann_file), 'file', 'annotation file',
                f'{key}.ann_file'))
    prefixes = dataset_cfg.get('data_prefix') or {}
    for name, prefix in prefixes.items():
        if isinstance(prefix, str):
            paths.append(
                ExpectedPath(
                    _join(data_root, prefix), 'folder',
                    _folder_kind(name),
                    f'{key}.data_prefix.{name}'))
    if not paths and data_root:
        paths.append(
            ExpectedPath(data_root, 'folder', 'data root',
                         f'{key}.data_root'))
    return paths


def _evaluator_paths(evaluator_cfg, key: str) -> List[ExpectedPath]:
    """The annotation files of an evaluator (a metric dict or a list)."""
    if isinstance(evaluator_cfg, (list, tuple)):
        return [
            path for index, metric in enumerate(evaluator_cfg)
            for path in _evaluator_paths(metric, f'{key}.{index}')
        ]
    if not isinstance(evaluator_cfg, dict):
        return []
    if isinstance(evaluator_cfg.get('metrics'), (list, tuple, dict)):
        return _evaluator_paths(evaluator_cfg['metrics'], f'{key}.metrics')
    ann_file = evaluator_cfg.get('ann_file')
    if (not isinstance(ann_file, str) or not ann_file
            or evaluator_cfg.get('backend_args') or _is_url(ann_file)):
        return []
    return [ExpectedPath(ann_file, 'file', 'evaluator annotation file',
                         f'{key}.ann_file')]


def init_checkpoints(model_cfg, key: str = 'model') -> List[Tuple[str, str]]:
    """(config key, path) of every pretrained checkpoint a model config's
    initialization loads: ``init_cfg=dict(type='Pretrained',
    checkpoint=...)`` anywhere, and mmseg's ``pretrained=...``."""
    found = []
    if isinstance(model_cfg, dict):
        for name, value in model_cfg.items():
            child = f'{key}.{name}'
            if name == 'init_cfg':
                many = isinstance(value, (list, tuple))
                for index, init in enumerate(value if many else [value]):
                    if (isinstance(init, dict)
                            and init.get('type') == 'Pretrained'
                            and isinstance(init.get('checkpoint'), str)):
                        where = f'{child}.{index}' if many else child
                        found.append(
                            (f'{where}.checkpoint', init['checkpoint']))
            elif name == 'pretrained' and isinstance(value, str):
                found.append((child, value))
            else:
                found += init_checkpoints(value, child)
    elif isinstance(model_cfg, (list, tuple)):
        for index, value in enumerate(model_cfg):
            found += init_checkpoints(value, f'{key}.{index}')
    return found


#: Model config keys that name a file the model opens when it is built
#: (a distiller's teacher), and what the file is.
BUILD_FILE_KEYS = {'teacher_ckpt': 'teacher checkpoint',
                   'cfg_path': 'teacher config'}


def build_files(model_cfg, key: str = 'model') -> List[Tuple[str, str, str]]:
    """(config key, path, what) of the files a model opens when it is
    built, e.g. a distiller's ``teacher_ckpt`` and ``teacher.cfg_path``."""
    found = []
    if isinstance(model_cfg, dict):
        for name, value in model_cfg.items():
            child = f'{key}.{name}'
            if name in BUILD_FILE_KEYS and isinstance(value, str):
                found.append((child, value, BUILD_FILE_KEYS[name]))
            else:
                found += build_files(value, child)
    elif isinstance(model_cfg, (list, tuple)):
        for index, value in enumerate(model_cfg):
            found += build_files(value, f'{key}.{index}')
    return found


def _set_key(cfg, key: str, value) -> None:
    """Set a dotted key (list items by index) of a config in place."""
    *parents, last = key.split('.')
    node = cfg
    for name in parents:
        node = node[int(name)] if isinstance(node, (list, tuple)) else node[
            name]
    if isinstance(node, (list, tuple)):
        node[int(last)] = value
    else:
        node[last] = value


def _repo_root() -> str:
    """The folder that holds the mmbinary package (the repository, for a
    clone)."""
    import mmbinary
    return osp.dirname(osp.dirname(osp.abspath(mmbinary.__file__)))


def resolve_checkpoint_paths(cfg, config_file: Optional[str] = None) -> None:
    """Make relative checkpoint paths independent of the working directory.

    A relative ``load_from`` or pretrained (``init_cfg``) checkpoint that is
    not found from the working directory is looked for next to the config
    file, then in the repository; the first found replaces it (absolute).
    A path found nowhere is left as it is, for :func:`check_datasets` to
    report with its key.

    Args:
        cfg (Config): a full config, changed in place.
        config_file (str, optional): the config's file.
    """
    roots = [osp.dirname(osp.abspath(config_file))] if config_file else []
    roots.append(_repo_root())
    entries = init_checkpoints(cfg.get('model')) + [
        (key, path) for key, path, _ in build_files(cfg.get('model'))
    ]
    if isinstance(cfg.get('load_from'), str):
        entries.append(('load_from', cfg.load_from))
    for key, path in entries:
        if osp.isabs(path) or _is_url(path) or osp.exists(path):
            continue
        for root in roots:
            candidate = osp.join(root, path)
            if osp.isfile(candidate):
                _set_key(cfg, key, candidate)
                break


def drop_unneeded_pretrained(cfg) -> List[str]:
    """Drop the pretrained checkpoints that are absent from a run that
    loads a whole model (``load_from``): that checkpoint replaces them.

    Args:
        cfg (Config): a full config, changed in place.

    Returns:
        list[str]: the keys dropped (their ``init_cfg`` is set to None).
    """
    if not cfg.get('load_from'):
        return []
    dropped = []
    for key, path in init_checkpoints(cfg.get('model')):
        if _is_url(path) or osp.isfile(path):
            continue
        if key.endswith('.pretrained'):
            _set_key(cfg, key, None)
        else:
            # model.backbone.init_cfg[.0].checkpoint -> drop that init_cfg
            parts = key.split('.')[:-1]
            if parts[-1].isdigit():
                parts = parts[:-1]
            _set_key(cfg, '.'.join(parts), None)
        dropped.append(key)
    return dropped


def expected_run_paths(cfg,
                       loaders: Sequence[str],
                       check_init_checkpoints: bool = False
                       ) -> List[ExpectedPath]:
    """Every file and folder a run of ``cfg`` over ``loaders`` opens.

    Args:
        cfg (Config | dict): a full mmengine config.
        loaders (Sequence[str]): dataloader keys; absent or None ones are
            skipped. ``val_dataloader``/``test_dataloader`` bring their
            evaluator.
        check_init_checkpoints (bool): also the pretrained checkpoints of
            the model's initialization (a training run without
            ``load_from``).

    Returns:
        list[ExpectedPath]
    """
    paths = []
    for loader in loaders:
        loader_cfg = cfg.get(loader)
        if not loader_cfg or not loader_cfg.get('dataset'):
            continue
        for key, dataset_cfg in _leaf_datasets(loader_cfg['dataset'],
                                               f'{loader}.dataset'):
            if dataset_cfg.get('backend_args'):
                continue
            paths += expected_paths(dataset_cfg, key)
        evaluator = loader.replace('_dataloader', '_evaluator')
        paths += _evaluator_paths(cfg.get(evaluator), evaluator)
    load_from = cfg.get('load_from')
    if isinstance(load_from, str) and load_from and not _is_url(load_from):
        what = 'checkpoint to resume' if cfg.get(
            'resume') else 'checkpoint to start from'
        paths.append(ExpectedPath(load_from, 'file', what, 'load_from'))
    for key, path, what in build_files(cfg.get('model')):
        if not _is_url(path):
            paths.append(ExpectedPath(path, 'file', what, key))
    if check_init_checkpoints and not load_from:
        for key, path in init_checkpoints(cfg.get('model')):
            if not _is_url(path):
                paths.append(
                    ExpectedPath(path, 'file', 'pretrained checkpoint', key))
    return paths


def _source(cfg, path: ExpectedPath) -> Optional[str]:
    """Where to get the data of a missing path, when it is a known set."""
    dataset = {}
    if '.dataset' in path.key:
        loader = cfg.get(path.key.split('.')[0]) or {}
        for key, leaf in _leaf_datasets(loader.get('dataset') or {},
                                        path.key.split('.')[0] + '.dataset'):
            if path.key.startswith(key + '.'):
                dataset = leaf
    for _, matches, source in DATASET_SOURCES:
        if matches(dataset, path.path):
            return source
    return None


def _report(cfg, missing: List[ExpectedPath],
            all_paths: List[ExpectedPath]) -> str:
    """The message: one entry per missing path with the keys that set it,
    missing data roots folded into one entry with what they should hold."""
    by_path: Dict[Tuple[str, str], List[ExpectedPath]] = {}
    for path in missing:
        by_path.setdefault((path.path, path.kind), []).append(path)
    top_root = cfg.get('data_root') if isinstance(cfg.get('data_root'),
                                                  str) else None
    lines = ['Files missing, nothing was run. Set these config keys '
             '(or put the files there):']
    # Entries under a data_root that does not exist: one entry per root.
    roots: Dict[str, List[ExpectedPath]] = {}
    for (path, kind), entries in by_path.items():
        root = _missing_root(cfg, entries[0])
        if root is not None:
            roots.setdefault(root, []).extend(entries)
    sources = []
    for root, entries in roots.items():
        keys = sorted({_data_root_key(entry) for entry in entries})
        if top_root and osp.normpath(top_root) == osp.normpath(root):
            keys.insert(0, 'data_root (top of the config)')
        lines.append(f'  data root {root} (absolute: {osp.abspath(root)}) '
                     'does not exist')
        lines.append(f'      set: {", ".join(keys)}')
        layout = sorted({
            (osp.relpath(entry.path, root) +
             ('/' if entry.kind == 'folder' else ''))
            for entry in entries
        })
        lines.append(f'      it should hold: {", ".join(layout)}')
        sources += [_source(cfg, entry) for entry in entries]
    for (path, kind), entries in by_path.items():
        if _missing_root(cfg, entries[0]) is not None:
            continue
        what = entries[0].what + ' ' if entries[0].what else ''
        lines.append(f'  {what}{path}{"/" if kind == "folder" else ""} '
                     f'(absolute: {osp.abspath(path)})')
        lines.append(
            f'      set: {", ".join(dict.fromkeys(e.key for e in entries))}')
        sources += [_source(cfg, entry) for entry in entries]
    present = [path for path in all_paths if path not in missing]
    if present:
        lines.append(f'  ({len(present)} other '
                     f'{"path is" if len(present) == 1 else "paths are"} '
                     'there.)')
    for source in dict.fromkeys(s for s in sources if s):
        lines.append(f'Get {source}.')
    lines.append('Relative data roots and evaluator files are read from '
                 f'the working directory ({os.getcwd()}); relative '
                 'checkpoints from there, the config\'s folder or the '
                 'repository.')
    return '\n'.join(lines)


def _data_root_key(path: ExpectedPath) -> str:
    """The key of the ``data_root`` a dataset path is joined to; the path's
    own key for a path outside a dataset (an evaluator's file)."""
    if '.dataset' not in path.key:
        return path.key
    if '.data_prefix.' in path.key:
        return path.key.split('.data_prefix.')[0] + '.data_root'
    return path.key.rsplit('.', 1)[0] + '.data_root'


def _missing_root(cfg, path: ExpectedPath) -> Optional[str]:
    """The dataset's ``data_root`` when ``path`` is under it and it does not
    exist."""
    if '.dataset' not in path.key:
        return None
    loader = path.key.split('.')[0]
    dataset_cfg = (cfg.get(loader) or {}).get('dataset') or {}
    for key, leaf in _leaf_datasets(dataset_cfg, f'{loader}.dataset'):
        if path.key.startswith(key + '.'):
            root = leaf.get('data_root')
            if root and not osp.isdir(root) and path.path.startswith(root):
                return root
    return None


def _coco_category_names(ann_file: str) -> Optional[List[str]]:
    """The category names of a COCO json; None when it is too large to
    read here."""
    if osp.getsize(ann_file) > MAX_CLASS_CHECK_BYTES:
        return None
    with open(ann_file, encoding='utf-8') as f:
        try:
            data = json.load(f)
        except ValueError as error:
            raise ClassesNotFoundError(
                f'{ann_file} is not a COCO json: {error}') from None
    categories = data.get('categories') if isinstance(data, dict) else None
    if not isinstance(categories, list):
        raise ClassesNotFoundError(
            f'{ann_file} is not a COCO json: it has no "categories" list')
    return [str(category.get('name')) for category in categories]


def check_class_names(cfg, loaders: Sequence[str]) -> None:
    """Raise :class:`ClassesNotFoundError` when a COCO-format dataset's
    ``metainfo.classes`` names a class its annotation file does not have:
    mmdet would read no box of it, and with none found, no image."""
    problems = []
    for loader in loaders:
        loader_cfg = cfg.get(loader)
        if not loader_cfg or not loader_cfg.get('dataset'):
            continue
        for key, dataset_cfg in _leaf_datasets(loader_cfg['dataset'],
                                               f'{loader}.dataset'):
            classes = (dataset_cfg.get('metainfo') or {}).get('classes')
            ann_file = dataset_cfg.get('ann_file')
            if (not _type(dataset_cfg).endswith('CocoDataset') or not classes
                    or not ann_file or dataset_cfg.get('backend_args')):
                continue
            path = _join(dataset_cfg.get('data_root'), ann_file)
            if not osp.isfile(path):
                continue
            names = _coco_category_names(path)
            if names is None:
                continue
            unknown = [name for name in classes if name not in names]
            if unknown:
                problems.append(
                    f'  {key}.metainfo.classes: {unknown} not among the '
                    f'categories of {path}: {names}')
    if problems:
        top = ' (classes, top of the config)' if 'classes' in cfg else ''
        raise ClassesNotFoundError(
            'Class names not in the annotation file, nothing was run. Set '
            f'the class names{top} to the "name" of the json\'s categories '
            '(a subset works):\n' + '\n'.join(problems))


def check_datasets(cfg,
                   loaders: Sequence[str] = ('train_dataloader',
                                             'val_dataloader'),
                   check_init_checkpoints: Optional[bool] = None,
                   files: Optional[Dict[str, str]] = None) -> None:
    """Raise :class:`DatasetNotFoundError` unless every file and folder a
    run opens is there.

    Args:
        cfg (Config | dict): a full mmengine config.
        loaders (Sequence[str]): dataloader keys to check (and their
            evaluators); absent or None ones are skipped.
        check_init_checkpoints (bool, optional): check the model's
            pretrained checkpoints too; by default when ``train_dataloader``
            is among ``loaders`` and no ``load_from`` is set.
        files (dict[str, str], optional): other files the run opens, by how
            to name them, e.g. ``{'CHECKPOINT (command line)': path}``. A
            path named here is not reported again as ``load_from``.
    """
    if check_init_checkpoints is None:
        check_init_checkpoints = 'train_dataloader' in loaders
    paths = expected_run_paths(cfg, loaders, check_init_checkpoints)
    extra = [
        ExpectedPath(path, 'file', '', name)
        for name, path in (files or {}).items()
    ]
    extra_paths = {path.path for path in extra}
    paths = [
        path for path in paths
        if not (path.key == 'load_from' and path.path in extra_paths)
    ] + extra
    missing = [path for path in paths if not path.exists()]
    if missing:
        raise DatasetNotFoundError(_report(cfg, missing, paths))
    check_class_names(cfg, loaders)
