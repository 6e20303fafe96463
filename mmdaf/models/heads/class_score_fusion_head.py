"""Class score fusion (CSF) head of DAF-net (paper section 3.6)."""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmpretrain.models.heads import ClsHead
from mmpretrain.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class ClassScoreFusionHead(ClsHead):
    """Fuse the class scores of several streams with one linear layer.

    The per-stream logits (student z_s and teacher z_t in DAF-net, each
    (B, K)) are concatenated to (B, num_streams * K) and mapped to fused
    logits (B, K) by ``fc``. With ``init_cfg=None`` (our default) ``fc``
    starts as the average of the streams: weight ``[I/ns, ..., I/ns]``, bias
    0, so the untrained fusion is the plain ensemble. This initialisation is
    applied in ``__init__`` and again at the end of :meth:`init_weights`, so
    an ``init_cfg`` of a parent model (e.g. Normal on every Linear) does not
    overwrite it; pass an ``init_cfg`` here to replace it.

    ``loss`` and ``predict`` are :class:`ClsHead`'s: cross entropy on the
    fused logits and softmax ``pred_score`` on the data samples.

    Args:
        num_classes (int): Number of classes K.
        num_streams (int): Number of fused streams. Defaults to 2.
        loss (dict): Classification loss config. Defaults to
            ``dict(type='CrossEntropyLoss', loss_weight=1.0)``.
        topk (int | tuple[int]): Top-k accuracy. Defaults to ``(1, )``.
        cal_acc (bool): Compute training accuracy. Defaults to False.
        init_cfg (dict, optional): Replaces the average initialisation.
            Defaults to None.
    """

    def __init__(self,
                 num_classes: int,
                 num_streams: int = 2,
                 loss: dict = dict(type='CrossEntropyLoss', loss_weight=1.0),  # noqa: B006
                 topk: Union[int, Tuple[int]] = (1, ),
                 cal_acc: bool = False,
                 init_cfg: Optional[dict] = None):
        super().__init__(loss=loss, topk=topk, cal_acc=cal_acc, init_cfg=init_cfg)
        if not isinstance(num_classes, int) or num_classes <= 0:
            raise ValueError(
                f'num_classes must be a positive int, got {num_classes!r}')
        if not isinstance(num_streams, int) or num_streams <= 0:
            raise ValueError(
                f'num_streams must be a positive int, got {num_streams!r}')
        self.num_classes = num_classes
        self.num_streams = num_streams
        self.fc = nn.Linear(num_streams * num_classes, num_classes)
        self.init_fc_to_average()

    @torch.no_grad()
    def init_fc_to_average(self) -> None:
        """Set ``fc`` so that its output is the mean of the stream logits."""
        identity = torch.eye(self.num_classes) / self.num_streams
        self.fc.weight.copy_(identity.repeat(1, self.num_streams))
        self.fc.bias.zero_()

    def init_weights(self) -> None:
        """Apply ``init_cfg`` if given, else restore the average init."""
        was_initialised = self.is_init
        super().init_weights()
        if not was_initialised and not self.init_cfg:
            self.init_fc_to_average()

    def pre_logits(self, feats: Sequence[Tensor]) -> Tensor:
        """Concatenate the per-stream logits.

        Args:
            feats (Sequence[Tensor]): ``num_streams`` tensors of shape (B, K).

        Returns:
            Tensor: Shape (B, num_streams * K).
        """
        if isinstance(feats, Tensor) or len(feats) != self.num_streams:
            raise ValueError(f'ClassScoreFusionHead expects a tuple of '
                             f'{self.num_streams} logit tensors, got '
                             f'{type(feats).__name__} of length '
                             f'{len(feats)}')
        for stream_logits in feats:
            if stream_logits.dim() != 2 or stream_logits.shape[1] != \
                    self.num_classes:
                raise ValueError(
                    'each stream must have logits of shape (B, '
                    f'{self.num_classes}), got {tuple(stream_logits.shape)}')
        return torch.cat(tuple(feats), dim=1)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        """Fused logits of shape (B, K)."""
        return self.fc(self.pre_logits(feats))
