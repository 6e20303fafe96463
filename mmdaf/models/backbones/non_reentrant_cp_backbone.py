"""Any mmpretrain backbone, with activation checkpointing that works under DDP
when the backbone runs more than once per training step."""
from typing import List, Sequence, Union

import torch.nn as nn
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS
from torch import Tensor

from ..utils.non_reentrant_checkpoint import non_reentrant_checkpointing


def merge_init_cfg(backbone: dict, init_cfg: Union[dict, List[dict], None]) -> dict:
    """The wrapped backbone's config with the wrapper's ``init_cfg`` moved in.

    The wrapped backbone's state-dict keys are those of the checkpoints
    (``prefix='backbone'`` of an mmpretrain classifier), so its init, a
    Pretrained one included, is run on it rather than on the wrapper.

    Args:
        backbone (dict): the wrapped backbone's config; not modified.
        init_cfg (dict | list, optional): the wrapper's init_cfg.

    Returns:
        dict: a new config.
    """
    backbone = dict(backbone)
    if init_cfg is not None:
        if backbone.get('init_cfg') is not None:
            raise ValueError(
                f'init_cfg is set both on the wrapper ({init_cfg}) and on the '
                f"wrapped {backbone.get('type')} ({backbone['init_cfg']}); set "
                'one of them')
        backbone['init_cfg'] = init_cfg
    return backbone


@MODELS.register_module()
class NonReentrantCPBackbone(BaseModule):
    """Wraps any mmpretrain backbone so that its ``with_cp`` checkpointing is
    non-reentrant, which DistributedDataParallel accepts for a backbone that
    runs several times in one step (DAF-net's student: images, then part
    images).

    The wrapped backbone runs inside :func:`non_reentrant_checkpointing`: the
    ``cp.checkpoint(...)`` calls of its blocks get ``use_reentrant=False``.
    Everything else (arguments, outputs, gradients, ``with_cp`` switch,
    ``train()`` overrides such as frozen stages) is the wrapped backbone's.

    State-dict keys: the wrapped backbone is the child ``backbone``, so in a
    model its keys get one more ``backbone.`` (e.g.
    ``backbone.backbone.stages.0.0.gamma`` in a DAFClassifier). Pretrained
    weights are loaded into the wrapped backbone itself, where the keys are
    those of the checkpoint: ``init_cfg=dict(type='Pretrained',
    checkpoint=..., prefix='backbone')`` works as for the bare backbone,
    given here or in ``backbone``.

    ``frozen_modules`` names sub-modules of the wrapped backbone whose
    parameters are frozen (``requires_grad=False``) and which stay in eval
    mode. DAF-net needs it for the output norms that ConvNeXt and Swin add
    for each ``out_indices`` stage (``norm{i}``): one whose output only feeds
    detached or no-grad consumers (the teacher's hint stage, or the student's
    C3 with ``sppn_detach_input``) gets no gradient, and DDP refuses
    parameters without gradient.

    Args:
        backbone (dict): the wrapped backbone, e.g. ``dict(type='ConvNeXt',
            arch='tiny', out_indices=(1, 2, 3), gap_before_final_norm=False,
            with_cp=True)``.
        frozen_modules (Sequence[str]): names in the wrapped backbone, e.g.
            ``('norm2', )``. Defaults to ().
        init_cfg (dict | list, optional): init of the wrapped backbone (moved
            into ``backbone``; an error if both set one). Defaults to None.
    """

    def __init__(self, backbone: dict, frozen_modules: Sequence[str] = (),
                 init_cfg: Union[dict, List[dict], None] = None) -> None:
        super().__init__(init_cfg=None)
        self.backbone = MODELS.build(merge_init_cfg(backbone, init_cfg))
        self.frozen_modules = tuple(frozen_modules)
        for module in self._frozen():
            for param in module.parameters():
                param.requires_grad = False

    def _frozen(self) -> List[nn.Module]:
        modules = dict(self.backbone.named_modules())
        unknown = [name for name in self.frozen_modules if name not in modules]
        if unknown:
            raise ValueError(f'{type(self).__name__}: frozen_modules {unknown} are not '
                             f'modules of {type(self.backbone).__name__}')
        return [modules[name] for name in self.frozen_modules]

    def train(self, mode: bool = True) -> 'NonReentrantCPBackbone':
        """Train mode, the frozen modules excepted."""
        super().train(mode)
        for module in self._frozen():
            module.eval()
        return self

    def forward(self, inputs: Tensor) -> tuple:
        """(B, C_in, H, W) -> the wrapped backbone's outputs, e.g. a tuple of
        (B, C_i, H / s_i, W / s_i) stage maps."""
        with non_reentrant_checkpointing():
            return self.backbone(inputs)

