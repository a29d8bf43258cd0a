# Copyright (c) mmbinary contributors. All rights reserved.
"""The commands of the README and of docs/*.md, parsed from the markdown,
so the docs cannot drift from the tools and configs.

* Every ``python tools/...`` command is parsed by its tool's own argument
  parser, its config is loaded with its ``--cfg-options`` (each key must
  exist in the config, or be a top-level precision or switch the tools
  read), and the files it names under ``configs/`` must exist.
* docs/own_data.md is executed, in order, on tiny data the test writes (a
  COCO json of two classes, a mask folder whose ignore label is 3, not 255)
  in a sandbox, with ``--epochs 1``: copy a template, edit its top lines as
  the page shows, train the float start, train the encoded model, test,
  pack and test packed. The tools run in this process (as ``python
  tools/x.py`` would, with ``sys.argv`` set), which keeps the whole run to
  tens of seconds.
"""
import contextlib
import copy
import glob
import importlib.util
import json
import os
import os.path as osp
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from typing import Dict, List, Tuple

import numpy as np
import pytest

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
#: The README and every page of docs/.
DOCS = ['README.md'] + sorted(
    osp.relpath(path, REPO)
    for path in glob.glob(osp.join(REPO, 'docs', '*.md')))
#: Top-level config keys the tools read from --cfg-options that a config
#: need not define.
TOOL_KEYS = ('w_bits', 'a_bits', 'allow_bit_change', 'load_from')


def fenced_blocks(path: str) -> List[Tuple[str, str]]:
    """(language, text) of every fenced block of a markdown file."""
    with open(osp.join(REPO, path), encoding='utf-8') as f:
        text = f.read()
    return re.findall(r'^```(\w*)\n(.*?)^```', text, re.M | re.S)


def shell_commands(block: str) -> List[str]:
    """The commands of a bash block: continuation lines joined, comments
    dropped, a here-document kept whole."""
    commands, lines = [], block.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        index += 1
        if not line or line.startswith('#'):
            continue
        heredoc = re.search(r"<<'?(\w+)'?", line)
        if heredoc:
            body = []
            while index < len(lines) and lines[index].strip() != \
                    heredoc.group(1):
                body.append(lines[index])
                index += 1
            index += 1
            commands.append('\n'.join([line] + body + [heredoc.group(1)]))
            continue
        while line.endswith('\\') and index < len(lines):
            line = line[:-1].rstrip() + ' ' + lines[index].strip()
            index += 1
        commands.append(line)
    return commands


def doc_commands(path: str) -> List[str]:
    return [
        command for language, block in fenced_blocks(path)
        if language == 'bash' for command in shell_commands(block)
    ]


def tool_commands() -> List[Tuple[str, str]]:
    """(doc, command) of every ``python tools/...`` command."""
    return [(doc, command) for doc in DOCS for command in doc_commands(doc)
            if command.startswith('python tools/')]


def load_tool(script: str):
    spec = importlib.util.spec_from_file_location(
        'doc_tool_' + osp.splitext(osp.basename(script))[0],
        osp.join(REPO, script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def placeholders(command: str) -> str:
    """Shell substitutions and upper-case placeholders (CONFIG, CKPT) as
    plain words, for parsing."""
    return re.sub(r'\$\(cat [^)]*\)', 'CHECKPOINT.pth', command)


def test_docs_have_commands():
    assert len(doc_commands('docs/models.md')) >= 8
    assert len(doc_commands('docs/own_data.md')) >= 12
    for doc in DOCS:
        for command in doc_commands(doc):
            words = command.split()
            if words[0] in ('python', 'bash') and words[1].startswith(
                    'tools/'):
                assert osp.isfile(osp.join(REPO, words[1])), (doc, command)


def test_docs_do_not_suggest_a_bare_max_epochs_override():
    for doc in DOCS:
        for command in doc_commands(doc):
            assert 'max_epochs=' not in command, (doc, command)


@pytest.mark.parametrize('doc, command', tool_commands())
def test_tool_command_parses_and_its_config_loads(doc, command, tmp_path,
                                                  monkeypatch):
    from mmengine.config import Config

    from mmbinary.utils.scope import apply_precision_options

    words = shlex.split(placeholders(command), comments=True)
    script, argv = words[1], words[2:]
    assert osp.isfile(osp.join(REPO, script)), f'{doc}: no {script}'
    if any(re.fullmatch(r'[A-Z_]+', word) for word in argv[:1]):
        # a synopsis (CONFIG CHECKPOINT ...): the options must exist
        tool = load_tool(script)
        parser_source = open(osp.join(REPO, script)).read()
        for option in re.findall(r'\[(--[\w-]+)', command):
            assert f"'{option}'" in parser_source, (doc, option)
        return
    # the stock-config example writes its one-line config first
    for earlier in doc_commands(doc):
        if earlier.startswith('cat > ') and earlier.split()[2] in argv:
            monkeypatch.chdir(tmp_path)
            subprocess.run(['bash', '-c', earlier], check=True)
    tool = load_tool(script)
    monkeypatch.setattr(sys, 'argv', [script] + argv)
    args = tool.parse_args()
    if not hasattr(args, 'config'):
        return  # a tool without a config: its arguments parsed
    config = args.config
    if not osp.isabs(config) and not osp.exists(config):
        config = osp.join(REPO, config)
    if 'own_data/my_' in config:
        # the copy the page makes of a template
        template = {
            'my_det': 'retinanet_mnv2_mbb_coco-format.py',
            'my_seg': 'deeplabv3_mnv2-d8_mbb_folder-format.py'
        }[osp.splitext(osp.basename(config))[0]]
        config = osp.join(REPO, 'configs', 'own_data', template)
    assert osp.isfile(config), f'{doc}: no config {args.config}'
    options = getattr(args, 'cfg_options', None) or {}
    plain = Config.fromfile(config)
    for key in options:
        if key in TOOL_KEYS:
            continue
        # the part a key sets must exist (options may add keys inside it)
        node = plain
        for name in key.split('.')[:2]:
            assert name in node, f'{doc}: {key} is not a key of {config}'
            node = node[name]
    # as load_tool_config merges them (the config is loaded once here)
    cfg = copy.deepcopy(plain)
    cfg.merge_from_dict(options)
    apply_precision_options(cfg, options)
    if 'w_bits' in options:
        from mmbinary.models.precision import precision_parts
        for part in precision_parts(cfg.model):
            node = cfg.model
            for name in part.split('.'):
                node = node[int(name)] if name.isdigit() else node[name]
            assert node['w_bits'] == options['w_bits'], (doc, part)


# --------------------------------------------------------------------------
# docs/own_data.md, run on tiny data


def write_tiny_coco(root: str) -> None:
    """Two 128x96 images per split, two classes (ids 3 and 7, as a COCO
    subset would have them), two boxes each."""
    import cv2
    rng = np.random.default_rng(0)
    os.makedirs(osp.join(root, 'images'))
    os.makedirs(osp.join(root, 'annotations'))
    for split in ('train', 'val'):
        images, annotations = [], []
        for index in range(2):
            name = f'{split}_{index}.jpg'
            cv2.imwrite(
                osp.join(root, 'images', name),
                rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
            images.append(
                dict(id=index + 1, file_name=name, width=128, height=96))
            boxes = ((3, [20, 16, 40, 36]), (7, [70, 40, 30, 30]))
            for number, (category, box) in enumerate(boxes):
                annotations.append(
                    dict(id=10 * index + number + 1, image_id=index + 1,
                         category_id=category, bbox=box,
                         area=box[2] * box[3], iscrowd=0))
        with open(osp.join(root, 'annotations', f'{split}.json'), 'w') as f:
            json.dump(
                dict(images=images, annotations=annotations,
                     categories=[dict(id=3, name='person'),
                                 dict(id=7, name='dog')]), f)


def write_tiny_masks(root: str, ignore_index: int = 3) -> None:
    """Two 96x80 images per split with masks of classes 0..2 and a band of
    the ignore label."""
    import cv2
    rng = np.random.default_rng(1)
    for split in ('train', 'val'):
        os.makedirs(osp.join(root, 'img_dir', split))
        os.makedirs(osp.join(root, 'ann_dir', split))
        for index in range(2):
            cv2.imwrite(
                osp.join(root, 'img_dir', split, f'{index}.jpg'),
                rng.integers(0, 255, (80, 96, 3), dtype=np.uint8))
            mask = rng.integers(0, 3, (80, 96), dtype=np.uint8)
            mask[:8] = ignore_index
            cv2.imwrite(
                osp.join(root, 'ann_dir', split, f'{index}.png'), mask)


def write_imagenet_stand_ins(folder: str) -> None:
    """MobileNetV2 state dicts in the layouts of the converted ImageNet
    files (random weights: the test needs the files, not the training)."""
    import torch
    from mmdet.models.backbones import MobileNetV2
    from mmseg.models.backbones import MobileNetV2 as SegMobileNetV2
    os.makedirs(folder)
    torch.save(
        MobileNetV2(out_indices=(2, 4, 6)).state_dict(),
        osp.join(folder, 'mobilenet_v2_mmdet.pth'))
    torch.save(
        SegMobileNetV2(
            strides=(1, 2, 2, 1, 1, 1, 1),
            dilations=(1, 1, 1, 2, 2, 4, 4),
            out_indices=(1, 2, 4, 6)).state_dict(),
        osp.join(folder, 'mobilenet_v2_mmseg.pth'))


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A working directory laid out as the repository (tools, a copy of
    configs) with the tiny data under data/."""
    os.symlink(osp.join(REPO, 'tools'), tmp_path / 'tools')
    shutil.copytree(osp.join(REPO, 'configs'), tmp_path / 'configs')
    write_tiny_coco(str(tmp_path / 'data' / 'my_coco'))
    write_tiny_masks(str(tmp_path / 'data' / 'my_masks'))
    write_imagenet_stand_ins(str(tmp_path / 'data' / 'demo' / 'pretrained'))
    monkeypatch.chdir(tmp_path)
    # the tools set LOCAL_RANK as launchers do; undone after the test
    monkeypatch.setenv('LOCAL_RANK', '0')
    # the sandbox stands for the repository where the tools look for
    # relative checkpoints
    from mmbinary.utils import data_check
    monkeypatch.setattr(data_check, '_repo_root', lambda: str(tmp_path))
    # the tools set mmengine's default scope (mmdet, mmseg) for the
    # process: give the later tests the one they had
    from mmengine.registry import DefaultScope
    current = DefaultScope.get_current_instance()
    with DefaultScope.overwrite_default_scope(
            current.scope_name if current else 'mmengine'):
        yield tmp_path


def own_data_section(title: str) -> List[Tuple[str, str]]:
    """('bash', command) and ('python', block) items of one section of
    docs/own_data.md, in order."""
    with open(osp.join(REPO, 'docs/own_data.md'), encoding='utf-8') as f:
        text = f.read()
    section = text.split(f'## {title}', 1)[1].split('\n## ', 1)[0]
    items = []
    for language, block in re.findall(r'^```(\w*)\n(.*?)^```', section,
                                      re.M | re.S):
        if language == 'bash':
            items += [('bash', command) for command in shell_commands(block)]
        elif language == 'python':
            items.append(('python', block))
    return items


def apply_top_lines(config: str, block: str) -> None:
    """Edit a copied template as the page shows: each ``name = value``
    line of the block replaces the template's line of that name."""
    with open(config, encoding='utf-8') as f:
        text = f.read()
    for line in block.splitlines():
        match = re.match(r'^(\w+) = (.*?)(\s+#.*)?$', line)
        if not match:
            continue
        name, value = match.group(1), match.group(2)
        pattern = re.compile(rf'^{name} = .*$', re.M)
        assert pattern.search(text), f'the template has no line {name} = '
        text = pattern.sub(lambda _: f'{name} = {value}', text, count=1)
    with open(config, 'w', encoding='utf-8') as f:
        f.write(text)


def run_tool(words: List[str], capfd) -> str:
    """Run ``python tools/x.py ARGS`` in this process; return its output."""
    script, argv = words[1], words[2:]
    if script == 'tools/train.py':
        argv += ['--epochs', '1']
    with _argv([script] + argv):
        try:
            runpy.run_path(script, run_name='__main__')
        except SystemExit as error:
            if error.code not in (None, 0):
                out, err = capfd.readouterr()
                raise AssertionError(
                    f'{" ".join(words)} stopped: {error.code}\n{err[-3000:]}')
    out, err = capfd.readouterr()
    return out + err


@contextlib.contextmanager
def _argv(argv: List[str]):
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved


def expand(command: str) -> List[str]:
    """The words of a command, ``$(cat FILE)`` replaced by FILE's text."""
    def cat(match):
        with open(match.group(1), encoding='utf-8') as f:
            return f.read().strip()
    return shlex.split(
        re.sub(r'\$\(cat ([^)]*)\)', cat, command), comments=True)


@pytest.mark.parametrize('title, metric', [
    ('Detection: a COCO json', 'coco/bbox_mAP'),
    ('Segmentation: a folder of masks', 'mIoU'),
])
def test_own_data_page_runs_end_to_end(title, metric, sandbox, capfd):
    from mmbinary.ops import ext_loaded
    items = own_data_section(title)
    copies = []
    outputs: Dict[str, str] = {}
    for language, text in items:
        if language == 'python':
            if copies:  # the top lines to edit in the copy just made
                apply_top_lines(copies[-1], text)
            continue
        if text.startswith('python tools/'):
            words = expand(text)
            needs_ext = 'pack_model.py' in text or '--packed' in text
            if needs_ext and not ext_loaded():
                pytest.skip('the packed steps need the compiled mmbinary._C')
            outputs[text] = run_tool(words, capfd)
        else:
            subprocess.run(['bash', '-c', text], check=True, cwd=sandbox)
            if text.startswith('cp '):
                copies.append(text.split()[-1])
            if text.startswith('sed ') and 'float_checkpoint' in text:
                # from here on the float start replaces the ImageNet file
                shutil.rmtree(sandbox / 'data' / 'demo')
    tests = [command for command in outputs if 'tools/test.py' in command]
    assert len(tests) >= 2
    for command in tests:
        output = outputs[command]
        if metric in output:
            continue
        # a detector trained for one iteration may keep no box above the
        # threshold: the tool must say so
        assert 'No metric: the model kept no detection' in output, command
    if metric == 'coco/bbox_mAP':
        # with --score-thr 0 there is a metric, packed too
        scored = [c for c in tests if '--score-thr 0' in c]
        assert scored and metric in outputs[scored[0]]
    # the encoded run started from the float run, without the ImageNet file
    encoded = [c for c in outputs
               if 'tools/train.py' in c and '--float' not in c]
    assert 'not needed: load_from loads the whole model' in outputs[
        encoded[0]]
    with open(copies[-1], encoding='utf-8') as f:
        assert re.search(r"^float_checkpoint = '.*_float/epoch_1\.pth'$",
                         f.read(), re.M)
    assert any('--float' in command for command in outputs)
