# Copyright (c) mmbinary contributors. All rights reserved.
import subprocess
import sys

from mmbinary.ops import ext_loaded
from mmbinary.utils.collect_env import collect_env


def test_collect_env_reports_the_extension():
    env = collect_env()
    assert 'PyTorch' in env and 'mmbinary' in env
    assert env['mmbinary._C loaded'] == ext_loaded()
    if ext_loaded():
        assert 'generic' in env['mmbinary._C CPU kernels']
        assert isinstance(env['mmbinary._C CUDA kernels'], bool)
    else:
        assert env['mmbinary._C error']


def test_collect_env_command():
    result = subprocess.run(
        [sys.executable, '-m', 'mmbinary.utils.collect_env'],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert 'mmbinary._C loaded:' in result.stdout
