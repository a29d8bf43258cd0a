# Copyright (c) mmbinary contributors. All rights reserved.
"""Record the outputs of named modules during a forward pass."""
from typing import Dict, List

from torch import nn


class ModuleOutputsRecorder:
    """Keeps every output of one named submodule while it is enabled.

    A module called several times per forward (a head shared over FPN
    levels) leaves one entry per call, in call order.

    Args:
        model (nn.Module): the model that holds the module.
        source (str): the module's name in ``model.named_modules()``, e.g.
            ``'neck'`` or ``'bbox_head.retina_cls'``.
        owner (str): what ``model`` is (``'student'``, ``'teacher'``), for
            the error message.

    Raises:
        ValueError: ``model`` has no module called ``source``.
    """

    def __init__(self, model: nn.Module, source: str, owner: str) -> None:
        modules = dict(model.named_modules())
        if source not in modules:
            raise ValueError(
                f'the {owner} has no module {source!r} to record; some of '
                f'its modules: {sorted(modules)[:20]}')
        self.source = source
        self.enabled = False
        self.outputs: List = []
        modules[source].register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs, output) -> None:
        if self.enabled:
            self.outputs.append(output)

    def reset(self) -> None:
        self.outputs = []


class RecorderManager:
    """The recorders of one model, by name.

    Args:
        model (nn.Module): the recorded model.
        sources (dict[str, str]): recorder name -> module name.
        owner (str): ``'student'`` or ``'teacher'``, for error messages.
    """

    def __init__(self, model: nn.Module, sources: Dict[str, str],
                 owner: str) -> None:
        self.recorders = {
            name: ModuleOutputsRecorder(model, source, owner)
            for name, source in sources.items()
        }

    def start(self) -> None:
        for recorder in self.recorders.values():
            recorder.reset()
            recorder.enabled = True

    def stop(self) -> None:
        for recorder in self.recorders.values():
            recorder.enabled = False

    def outputs(self, name: str) -> List:
        return self.recorders[name].outputs

    def clear(self) -> None:
        for recorder in self.recorders.values():
            recorder.reset()
