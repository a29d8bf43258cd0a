# Copyright (c) mmbinary contributors. All rights reserved.
"""Read back the metrics a ``tools/test.py`` run logged with mmengine."""
import glob
import json
import os.path as osp
from typing import Dict, Sequence


def read_test_metrics(work_dir: str, keys: Sequence[str]) -> Dict[str, float]:
    """The metrics of the newest test run in ``work_dir``.

    mmengine writes one ``<timestamp>/<timestamp>.json`` per run, whose last
    line holds the evaluator's results.

    Args:
        work_dir (str): the ``--work-dir`` given to ``tools/test.py``.
        keys (Sequence[str]): metric names, e.g. ``'coco/bbox_mAP'``.

    Returns:
        dict: ``{key: value}``; a key the evaluator did not report is 0.0
        (mmdet's CocoMetric reports nothing when there is no detection).

    Raises:
        FileNotFoundError: no test log in ``work_dir``.
    """
    logs = sorted(glob.glob(osp.join(work_dir, '*', '*.json')))
    if not logs:
        raise FileNotFoundError(f'no test log found in {work_dir}')
    with open(logs[-1], encoding='utf-8') as f:
        lines = [json.loads(line) for line in f if line.strip()]
    if not lines:
        raise FileNotFoundError(f'the test log {logs[-1]} is empty')
    return {key: float(lines[-1].get(key, 0.0)) for key in keys}
