# Copyright (c) mmbinary contributors. All rights reserved.
"""Stop a run at once when its dataset is not on disk.

mmengine datasets only look for their files when the runner builds the
dataloaders, after the model is built, and then fail with a bare path.
:func:`check_datasets` reads the dataset configs instead (``data_root``,
``ann_file``, ``data_prefix``, through ``ConcatDataset``/``RepeatDataset``
style wrappers) and raises :class:`DatasetNotFoundError` naming the data
root, the files and folders the config expects there, and where to get the
data. Datasets read through a storage backend (``backend_args``) are not
checked.
"""
import os.path as osp
from typing import Dict, Iterator, List, Sequence, Tuple

#: Where to get the datasets the shipped configs use, by dataset type.
DATASET_SOURCES = {
    'CocoDataset':
    'COCO 2017 (train2017, val2017 and annotations_trainval2017) from '
    'https://cocodataset.org/#download',
    'VOCDataset':
    'Pascal VOC 2007/2012 (VOCtrainval, VOCtest) from '
    'http://host.robots.ox.ac.uk/pascal/VOC/',
    'PascalVOCDataset':
    'Pascal VOC 2012 from http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ '
    'and the SBD masks; mmsegmentation\'s '
    'tools/dataset_converters/voc_aug.py makes SegmentationClassAug and '
    'ImageSets/Segmentation/aug.txt',
    'CityscapesDataset':
    'Cityscapes (leftImg8bit_trainvaltest, gtFine_trainvaltest) from '
    'https://www.cityscapes-dataset.com; mmsegmentation\'s '
    'tools/dataset_converters/cityscapes.py makes the *labelTrainIds.png '
    'masks',
}


class DatasetNotFoundError(FileNotFoundError):
    """A config's dataset files are missing."""


def _leaf_datasets(dataset_cfg: dict) -> Iterator[dict]:
    """The dataset configs inside wrappers such as ``ConcatDataset``."""
    if 'datasets' in dataset_cfg:
        for child in dataset_cfg['datasets']:
            yield from _leaf_datasets(child)
    elif isinstance(dataset_cfg.get('dataset'), dict):
        yield from _leaf_datasets(dataset_cfg['dataset'])
    else:
        yield dataset_cfg


def _join(data_root, path: str) -> str:
    """Join as mmengine's ``BaseDataset`` does."""
    if data_root and not osp.isabs(path):
        return osp.join(data_root, path)
    return path


def expected_paths(dataset_cfg: dict) -> List[Tuple[str, str]]:
    """Files and folders a (leaf) dataset config reads.

    Args:
        dataset_cfg (dict): one dataset config.

    Returns:
        list[tuple[str, str]]: ``(path, kind)`` with kind ``'file'`` (the
        annotation file) or ``'folder'`` (each ``data_prefix`` entry).
    """
    data_root = dataset_cfg.get('data_root')
    paths = []
    ann_file = dataset_cfg.get('ann_file')
    if ann_file:
        paths.append((_join(data_root, ann_file), 'file'))
    prefixes = dataset_cfg.get('data_prefix') or {}
    for prefix in prefixes.values():
        if isinstance(prefix, str):
            paths.append((_join(data_root, prefix), 'folder'))
    if not paths and data_root:
        paths.append((data_root, 'folder'))
    return paths


def _exists(path: str, kind: str) -> bool:
    return osp.isfile(path) if kind == 'file' else osp.isdir(path)


def _describe(dataset_type: str, data_root: str,
              entries: Dict[Tuple[str, str], List[str]]) -> str:
    """One data root's report: every expected entry, whether it is there,
    and the loaders that read it."""
    root = data_root or '.'
    lines = [
        f'{dataset_type} expects under data_root {root!r} (absolute: '
        f'{osp.abspath(root)}):'
    ]
    for (path, kind), loaders in entries.items():
        inside = data_root and path.startswith(data_root)
        shown = osp.relpath(path, root) if inside else path
        shown += '/' if kind == 'folder' else ''
        state = 'ok' if _exists(path, kind) else 'MISSING'
        lines.append(f'    {shown:<44} {kind:<6} {state:<7} '
                     f'({", ".join(loaders)})')
    source = DATASET_SOURCES.get(dataset_type.split('.')[-1])
    if source:
        lines.append(f'  Get {source}.')
    return '\n'.join(lines)


def check_datasets(cfg,
                   loaders: Sequence[str] = ('train_dataloader',
                                             'val_dataloader')) -> None:
    """Raise :class:`DatasetNotFoundError` unless every dataset is on disk.

    Args:
        cfg (Config | dict): a full mmengine config.
        loaders (Sequence[str]): dataloader keys to check; absent or None
            ones are skipped.
    """
    # (dataset type, data_root) -> {(path, kind): [loaders]}
    groups: Dict[Tuple[str, str], Dict[Tuple[str, str], List[str]]] = {}
    for loader in loaders:
        loader_cfg = cfg.get(loader)
        if not loader_cfg or not loader_cfg.get('dataset'):
            continue
        for dataset_cfg in _leaf_datasets(loader_cfg['dataset']):
            if dataset_cfg.get('backend_args'):
                continue
            key = (str(dataset_cfg.get('type', 'dataset')),
                   dataset_cfg.get('data_root') or '')
            entries = groups.setdefault(key, {})
            for entry in expected_paths(dataset_cfg):
                entries.setdefault(entry, [])
                if loader not in entries[entry]:
                    entries[entry].append(loader)
    reports = [
        _describe(dataset_type, data_root, entries)
        for (dataset_type, data_root), entries in groups.items()
        if not all(_exists(*entry) for entry in entries)
    ]
    if reports:
        raise DatasetNotFoundError(
            'Dataset missing, nothing was run.\n' + '\n'.join(reports) +
            '\nPut the data there (or link it: ln -s /path/to/data '
            'data/<name>), or point the config at it, e.g. --cfg-options '
            'train_dataloader.dataset.data_root=/path/to/data/ (and the '
            'same for val_dataloader and test_dataloader).')
