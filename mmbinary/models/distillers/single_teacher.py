# Copyright (c) mmbinary contributors. All rights reserved.
"""``SingleTeacherDistill``: train a model with the outputs of a frozen
teacher, in mmrazor's config shape.

.. code-block:: python

    model = dict(
        type='mmbinary.SingleTeacherDistill',
        architecture=STUDENT_MODEL_DICT,
        teacher=dict(cfg_path='configs/.../retinanet_float.py'),
        teacher_ckpt='work_dirs/float/epoch_12.pth',
        distiller=dict(
            student_recorders=dict(
                fpn=dict(type='ModuleOutputs', source='neck')),
            teacher_recorders=dict(
                fpn=dict(type='ModuleOutputs', source='neck')),
            distill_losses=dict(loss_fpn=dict(type='FeatureImitationLoss')),
            loss_forward_mappings=dict(loss_fpn=dict(
                preds_S=dict(from_student=True, recorder='fpn'),
                preds_T=dict(from_student=False, recorder='fpn')))))

Checkpoints hold the student alone, under its own parameter names (the
teacher is loaded from ``teacher_ckpt`` every time): a distilled model's
checkpoint is tested, packed and exported with the student's config, and a
student (or float) checkpoint loads into the distiller as it is.
"""
import os.path as osp
from typing import Dict, List, Optional, Union

import torch
from mmengine.config import Config
from mmengine.model import BaseModel
from torch import Tensor, nn

from mmbinary.registry import MODELS
from mmbinary.utils import safe_torch_load

from .recorders import RecorderManager

#: Keys of ``distiller``.
_DISTILLER_KEYS = ('student_recorders', 'teacher_recorders',
                   'distill_losses', 'loss_forward_mappings')


def _flatten(outputs: List) -> List[Tensor]:
    """Recorded outputs (tensors, or tuples of them: FPN levels) as one
    list of tensors."""
    flat = []
    for output in outputs:
        if isinstance(output, (tuple, list)):
            flat.extend(output)
        else:
            flat.append(output)
    return flat


def _sources(recorders: dict, owner: str) -> Dict[str, str]:
    sources = {}
    for name, cfg in (recorders or {}).items():
        if cfg.get('type', 'ModuleOutputs') != 'ModuleOutputs':
            raise ValueError(
                f"{owner}_recorders.{name}: type must be 'ModuleOutputs', "
                f"got {cfg.get('type')!r}")
        if 'source' not in cfg:
            raise ValueError(f'{owner}_recorders.{name} needs a source '
                             '(the name of a module)')
        sources[name] = cfg['source']
    return sources


@MODELS.register_module()
class SingleTeacherDistill(BaseModel):
    """A student trained with its own losses plus distillation losses from
    a frozen teacher.

    ``loss`` runs the teacher (eval mode, no gradient) and the student on the
    same preprocessed batch, records the named modules' outputs and adds one
    loss per ``distill_losses`` entry (keys starting with ``loss``, logged as
    ``distill_<key>``). ``predict`` and ``tensor`` are the student's.

    Args:
        architecture (dict): the student model config.
        teacher (dict): the teacher model config, or
            ``dict(cfg_path=...)``: the ``model`` of that config file.
        teacher_ckpt (str): the teacher's trained checkpoint; it must match
            the teacher config exactly (every key, every shape).
        distiller (dict): ``student_recorders`` and ``teacher_recorders``
            (name -> ``dict(type='ModuleOutputs', source=MODULE_NAME)``),
            ``distill_losses`` (name -> loss config) and
            ``loss_forward_mappings`` (loss name -> argument ->
            ``dict(from_student=bool, recorder=NAME)``).
        data_preprocessor (dict, optional): unused: the student's is used.
        init_cfg (dict, optional): as ``BaseModel``.

    Raises:
        FileNotFoundError: ``teacher_ckpt`` (or ``cfg_path``) is missing.
        ValueError: the checkpoint does not match the teacher config, or a
            recorded module is not in the student or the teacher.
    """

    def __init__(self,
                 architecture: dict,
                 teacher: dict,
                 teacher_ckpt: str,
                 distiller: dict,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        unknown = sorted(set(distiller) - set(_DISTILLER_KEYS) - {'type'})
        if unknown:
            raise ValueError(f'distiller: unknown keys {unknown}; allowed: '
                             f'{list(_DISTILLER_KEYS)}')
        self.architecture = MODELS.build(architecture)
        self.data_preprocessor = self.architecture.data_preprocessor
        teacher_name = 'the teacher config'
        if 'cfg_path' in teacher:
            cfg_path = teacher['cfg_path']
            if not osp.isfile(cfg_path):
                raise FileNotFoundError(
                    f'teacher.cfg_path: no config file {cfg_path!r}')
            teacher_name = cfg_path
            teacher = Config.fromfile(cfg_path)['model']
        self.teacher = MODELS.build(teacher)
        self._load_teacher(teacher_ckpt, teacher_name)
        self.teacher_ckpt = teacher_ckpt

        self.student_recorders = RecorderManager(
            self.architecture,
            _sources(distiller.get('student_recorders'), 'student'),
            'student')
        self.teacher_recorders = RecorderManager(
            self.teacher,
            _sources(distiller.get('teacher_recorders'), 'teacher'),
            f'teacher ({teacher_name})')
        self.distill_losses = nn.ModuleDict()
        for name, cfg in (distiller.get('distill_losses') or {}).items():
            if not name.startswith('loss'):
                raise ValueError(f'distill_losses: {name!r} must start with '
                                 "'loss' (mmengine sums the keys with it)")
            self.distill_losses[name] = MODELS.build(cfg)
        self.loss_forward_mappings = dict(
            distiller.get('loss_forward_mappings') or {})
        self._check_mappings()
        self._register_state_dict_hook(_student_state_dict)

    def _load_teacher(self, filename: str, teacher_name: str) -> None:
        if not isinstance(filename, str) or not osp.isfile(filename):
            raise FileNotFoundError(
                f'teacher_ckpt: no checkpoint file {filename!r}')
        checkpoint = safe_torch_load(filename, map_location='cpu')
        state = checkpoint.get('state_dict', checkpoint)
        own = self.teacher.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        wrong_shape = sorted(
            key for key in set(own) & set(state)
            if tuple(own[key].shape) != tuple(state[key].shape))
        if missing or unexpected or wrong_shape:
            raise ValueError(
                f'teacher_ckpt {filename} does not match {teacher_name}: '
                f'missing {missing[:5]} ({len(missing)} keys), unexpected '
                f'{unexpected[:5]} ({len(unexpected)} keys), other shapes '
                f'{wrong_shape[:5]} ({len(wrong_shape)} keys)')
        self.teacher.load_state_dict(state, strict=True)
        for param in self.teacher.parameters():
            param.requires_grad_(False)
        self.teacher.eval()
        # init_weights (ImageNet backbone weights) must not overwrite it.
        self.teacher._is_init = True

    def _check_mappings(self) -> None:
        recorders = {True: self.student_recorders.recorders,
                     False: self.teacher_recorders.recorders}
        for name in self.distill_losses:
            if name not in self.loss_forward_mappings:
                raise ValueError(f'loss_forward_mappings has no entry for '
                                 f'the distill loss {name!r}')
            for arg, source in self.loss_forward_mappings[name].items():
                from_student = bool(source.get('from_student'))
                if source.get('recorder') not in recorders[from_student]:
                    owner = 'student' if from_student else 'teacher'
                    raise ValueError(
                        f'loss_forward_mappings.{name}.{arg}: no {owner} '
                        f"recorder {source.get('recorder')!r}")

    def train(self, mode: bool = True) -> 'SingleTeacherDistill':
        super().train(mode)
        self.teacher.eval()  # batch norms keep their statistics
        return self

    def forward(self,
                inputs: Tensor,
                data_samples: Optional[list] = None,
                mode: str = 'tensor') -> Union[dict, list, tuple]:
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        return self.architecture(inputs, data_samples, mode)

    def loss(self, inputs: Tensor, data_samples: list) -> dict:
        """The student's losses plus ``distill_<name>`` for each distill
        loss."""
        try:
            self.teacher_recorders.start()
            with torch.no_grad():
                self.teacher._forward(inputs, data_samples)
            self.teacher_recorders.stop()
            self.student_recorders.start()
            losses = self.architecture.loss(inputs, data_samples)
            self.student_recorders.stop()
            for name, loss in self.distill_losses.items():
                kwargs = {}
                for arg, source in self.loss_forward_mappings[name].items():
                    manager = (self.student_recorders
                               if source.get('from_student') else
                               self.teacher_recorders)
                    kwargs[arg] = _flatten(manager.outputs(source['recorder']))
                losses[f'distill_{name}'] = loss(**kwargs)
        finally:
            for manager in (self.student_recorders, self.teacher_recorders):
                manager.stop()
                manager.clear()
        return losses

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys,
                              error_msgs):
        # A student (or float) checkpoint: its keys are the student's.
        ours = tuple(prefix + part
                     for part in ('architecture.', 'teacher.',
                                  'data_preprocessor.'))
        for key in [k for k in state_dict
                    if k.startswith(prefix) and not k.startswith(ours)]:
            state_dict[prefix + 'architecture.' +
                       key[len(prefix):]] = state_dict.pop(key)
        # The teacher comes from teacher_ckpt, never from a checkpoint.
        for key, value in self.teacher.state_dict().items():
            state_dict[prefix + 'teacher.' + key] = value
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)


def _student_state_dict(module: SingleTeacherDistill, state_dict: dict,
                        prefix: str, local_metadata: dict) -> None:
    """State-dict hook: keep the student's entries under their own names."""
    for key in list(state_dict):
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix):]
        value = state_dict.pop(key)
        if rest.startswith('architecture.'):
            state_dict[prefix + rest[len('architecture.'):]] = value
        elif not rest.startswith(('teacher.', 'data_preprocessor.')):
            state_dict[key] = value
