"""Part attention filter + semantic grouping + group bilinear pooling.

The teacher neck of DAF-net (paper section 3.4). The grouping and the group
bilinear pooling follow DBT (Zheng et al., "Learning Deep Bilinear
Transformation for Fine-grained Image Representation", NeurIPS 2019); the part
attention filter in front of them is DAF-net's addition.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS
from torch import Tensor

FILTER_MODES = ('highlight', 'gate')
# Channel maps with an L2 norm at most this are dead in the grouping loss.
DEAD_MAP_NORM = 1e-6


def resize_mask(mask: Tensor, size: Tuple[int, int]) -> Tensor:
    """Resize a saliency mask to a feature map's spatial size.

    Shrinking uses adaptive average pooling, so each feature cell receives the
    fraction of its receptive area that the mask covers (thin parts do not
    vanish as they would with nearest or strided sampling). Enlarging (a mask
    coarser than the features) uses bilinear interpolation.

    Args:
        mask (Tensor): Saliency mask of shape (B, 1, H, W).
        size (tuple[int, int]): Target (h, w).

    Returns:
        Tensor: The mask at shape (B, 1, h, w).
    """
    height, width = mask.shape[-2:]
    if (height, width) == tuple(size):
        return mask
    if height >= size[0] and width >= size[1]:
        return F.adaptive_avg_pool2d(mask, size)
    return F.interpolate(mask, size=size, mode='bilinear', align_corners=False)


def _autocast_off(tensor: Tensor):
    """A context in which ``tensor``'s device type runs without autocast.

    Inside it, ops on float32 tensors stay float32 even when the caller runs
    under ``torch.autocast`` (which would otherwise cast a matmul back to
    fp16/bf16).
    """
    return torch.autocast(device_type=tensor.device.type, enabled=False)


def group_bilinear_pool(features: Tensor, num_groups: int,
                        eps: float = 1e-12) -> Tensor:
    """Group bilinear pooling with signed square root and L2 normalisation.

    The C channels are split into ``num_groups`` contiguous groups of
    ``c_g = C // num_groups`` channels. For group g with channel matrix
    X_g of shape (c_g, hw) the bilinear matrix is ``B_g = X_g X_g^T / hw``;
    the G matrices are flattened and concatenated (group-major, row-major
    inside a group), then ``sign(v) * sqrt(|v| + eps)`` and L2 normalisation
    over the whole vector are applied.

    Everything is computed in float32, with autocast switched off, whatever
    the input dtype: in fp16 ``eps`` rounds to 0, so an exactly zero entry
    (a dead channel, two channels that never fire together) would give
    ``sqrt(0)`` and a NaN gradient, an all-zero row a 0/0 in the
    normalisation, and a sum over h*w products can exceed fp16's range. The
    pooled matrices are small (B x C x c_g), so this costs little. The result
    is cast back to the input dtype (its entries lie in [-1, 1]).

    Args:
        features (Tensor): Feature map of shape (B, C, h, w), any float dtype.
        num_groups (int): Number of groups G; must divide C.
        eps (float): Added under the square root so that its gradient stays
            finite at zero. Defaults to 1e-12.

    Returns:
        Tensor: Shape (B, G * c_g**2) = (B, C**2 // G), dtype of
        ``features``, unit L2 norm per row (a zero row stays zero).
    """
    batch_size, channels, height, width = features.shape
    if channels % num_groups != 0:
        raise ValueError(f'num_groups={num_groups} must divide the number of '
                         f'channels {channels}')
    group_channels = channels // num_groups
    with _autocast_off(features):
        grouped = features.float().reshape(batch_size, num_groups,
                                           group_channels, height * width)
        bilinear = torch.matmul(grouped, grouped.transpose(-1, -2))
        bilinear = bilinear.reshape(batch_size, -1) / (height * width)
        signed_sqrt = torch.sign(bilinear) * torch.sqrt(bilinear.abs() + eps)
        pooled = F.normalize(signed_sqrt, p=2, dim=1)
    return pooled.to(features.dtype)


def semantic_grouping_loss(features: Tensor, num_groups: int) -> Tensor:
    """DBT-style semantic grouping constraint, bounded in [0, 2].

    Each channel map is flattened to a vector over the h*w positions and L2
    normalised; ``d_ij`` is the cosine correlation of channels i and j. A map
    whose L2 norm is at most ``DEAD_MAP_NORM`` (1e-6, our choice) counts as a
    dead channel: its normalised map is 0 (correlation 0 with every channel)
    and it gets no gradient. The gradient of ``x / ||x||`` grows as
    ``1 / ||x||``; with ``F.normalize``'s floor of 1e-12 an all-zero map
    received about 1e12 times the upstream gradient (inf in fp16). Channel c belongs to group
    ``c // (C // G)``. With intra pairs = ordered pairs (i, j), i != j, of
    the same group and inter pairs = pairs of different groups::

        L = 1 + mean_{inter pairs} d_ij - mean_{intra pairs} d_ij

    averaged over the batch. On non-negative maps (after ReLU) d_ij is in
    [0, 1], so L is in [0, 2]: 0 when the channels of a group respond at the
    same positions and different groups at disjoint positions, 2 in the
    opposite case. With one channel per group there are no intra pairs and
    that term is 0; with one group there are no inter pairs and that term
    is 0.

    Computed in float32 with autocast off, as :func:`group_bilinear_pool`
    (fp16 cannot hold the small norms, nor sums over many positions).

    Args:
        features (Tensor): Channel maps of shape (B, C, h, w), any float dtype.
        num_groups (int): Number of groups G; must divide C.

    Returns:
        Tensor: Scalar float32 loss.
    """
    batch_size, channels = features.shape[:2]
    if channels % num_groups != 0:
        raise ValueError(f'num_groups={num_groups} must divide the number of '
                         f'channels {channels}')
    with _autocast_off(features):
        maps = features.float().reshape(batch_size, channels, -1)
        norms = maps.norm(dim=2, keepdim=True)
        alive = norms > DEAD_MAP_NORM
        # A dead map is 0 and gets no gradient (torch.where sends none to
        # the unselected branch), instead of F.normalize's 1 / 1e-12.
        channel_maps = torch.where(alive, maps / norms.clamp_min(DEAD_MAP_NORM),
                                   torch.zeros_like(maps))
        correlation = torch.matmul(channel_maps, channel_maps.transpose(1, 2))

    group_index = torch.arange(channels, device=features.device) // (
        channels // num_groups)
    same_group = group_index[:, None] == group_index[None, :]
    not_self = ~torch.eye(channels, dtype=torch.bool, device=features.device)
    intra_pairs = same_group & not_self
    inter_pairs = ~same_group

    intra = _masked_mean(correlation, intra_pairs)
    inter = _masked_mean(correlation, inter_pairs)
    return 1.0 + inter - intra


def _masked_mean(correlation: Tensor, pair_mask: Tensor) -> Tensor:
    """Mean of (B, C, C) correlations over the pairs in a (C, C) mask."""
    num_pairs = int(pair_mask.sum())
    if num_pairs == 0:
        return correlation.new_zeros(())
    selected = correlation * pair_mask.to(correlation.dtype)
    return selected.sum(dim=(1, 2)).mean() / num_pairs


@MODELS.register_module()
class PAFBilinearNeck(BaseModule):
    """Part attention filter, semantic grouping and group bilinear pooling.

    Works on the last feature map of the input tuple, x of shape (B, C, h, w):

    1. Part attention filter (optional, only when a saliency mask is given
       and ``use_attention``): the mask (B, 1, H, W), at any resolution, is
       resized to (h, w) (:func:`resize_mask`), then an adaptive layer
       ``m -> m * sigmoid(conv1x1(relu(conv3x3(m))))`` gives the attention
       A in [0, 1]. Multiplying by m (our choice) means only masked positions
       can be highlighted, and an all-zero mask leaves x exactly unchanged,
       so ``mask=None`` and a zero mask agree. In ``filter_mode='highlight'``
       (our default) the filtered map is ``x * (1 + A)``: parts are amplified
       up to x2 while the context outside the parts is kept, as the paper
       argues for keeping context in section 3.3. ``filter_mode='gate'``
       uses ``x * A`` (erases everything outside the parts).
    2. Semantic grouping: 1x1 conv (no bias) + BN + ReLU projects C ->
       ``reduced_channels``, split into ``num_groups`` contiguous groups. The
       grouping constraint is :func:`semantic_grouping_loss` on these
       projected maps (in [0, 2], times ``grouping_loss_weight``).
    3. Group bilinear pooling (:func:`group_bilinear_pool`): per group
       ``X_g X_g^T / hw``, concatenated, signed square root, L2 norm.

    The output has ``out_channels = reduced_channels**2 // num_groups``
    dimensions (16384 with the defaults 512 and 16); set the head's
    ``in_channels`` to it. Without a mask the neck is a plain grouped bilinear
    neck and works in any mmpretrain ``ImageClassifier`` (``neck(feats)``);
    there the grouping loss is simply not used, since ``ImageClassifier``
    only collects head losses.

    To get the grouping loss of the same forward pass (no recomputation),
    call ``neck(feats, mask, return_grouping_loss=True)``, which returns
    ``((feature,), loss_grouping)`` with the weight already applied.

    Args:
        in_channels (int): Channels C of the last input feature map.
        reduced_channels (int): Channels after the 1x1 projection.
            Defaults to 512 (DBT's choice).
        num_groups (int): Semantic groups G; must divide
            ``reduced_channels``. Defaults to 16.
        attention_channels (int): Hidden channels of the adaptive attention
            layer. Defaults to 16.
        use_attention (bool): Build and apply the part attention filter. If
            False a given mask is ignored. Defaults to True.
        filter_mode (str): 'highlight' (x * (1 + A), our default) or 'gate'
            (x * A).
        grouping_loss_weight (float): Weight of the grouping loss. The raw
            loss is bounded in [0, 2], on the scale of a classification
            cross entropy, so 1.0 (our default) weighs them alike.
        output_scale (float): the L2-normalised vector is multiplied by it.
            A unit-norm vector spread over thousands of dimensions gives a
            linear head with the usual init and learning rate logits near 0
            for a long time (bilinear CNNs train their classifier with a far
            higher learning rate for this reason); a scale s lets the logits
            reach +-s. Defaults to 1.0 (plain normalisation); the DAF configs
            set 16 (docs/benchmarks.md has the measurement).
        init_cfg (dict | list[dict], optional): Initialisation config.
            Defaults to None (PyTorch's default initialisation).
    """

    def __init__(self,
                 in_channels: int,
                 reduced_channels: int = 512,
                 num_groups: int = 16,
                 attention_channels: int = 16,
                 use_attention: bool = True,
                 filter_mode: str = 'highlight',
                 grouping_loss_weight: float = 1.0,
                 output_scale: float = 1.0,
                 init_cfg: Optional[Union[dict, list]] = None):
        super().__init__(init_cfg=init_cfg)
        for name, value in (('in_channels', in_channels),
                            ('reduced_channels', reduced_channels),
                            ('num_groups', num_groups),
                            ('attention_channels', attention_channels)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f'{name} must be a positive int, got {value!r}')
        if reduced_channels % num_groups != 0:
            raise ValueError(f'num_groups={num_groups} must divide '
                             f'reduced_channels={reduced_channels}')
        if filter_mode not in FILTER_MODES:
            raise ValueError(f'filter_mode must be one of {FILTER_MODES}, '
                             f'got {filter_mode!r}')
        if grouping_loss_weight < 0:
            raise ValueError('grouping_loss_weight must be >= 0, got '
                             f'{grouping_loss_weight}')
        if output_scale <= 0:
            raise ValueError(f'output_scale must be > 0, got {output_scale}')
        self.output_scale = output_scale
        self.in_channels = in_channels
        self.reduced_channels = reduced_channels
        self.num_groups = num_groups
        self.use_attention = use_attention
        self.filter_mode = filter_mode
        self.grouping_loss_weight = grouping_loss_weight

        if use_attention:
            self.attention = nn.Sequential(
                nn.Conv2d(1, attention_channels, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(attention_channels, 1, kernel_size=1))
        self.projection = nn.Sequential(
            nn.Conv2d(in_channels, reduced_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(reduced_channels), nn.ReLU(inplace=True))

    @property
    def out_channels(self) -> int:
        """Length of the output vector: reduced_channels**2 // num_groups."""
        return self.reduced_channels**2 // self.num_groups

    def part_attention(self, saliency_mask: Tensor,
                       size: Tuple[int, int]) -> Tensor:
        """Attention A in [0, 1] of shape (B, 1, h, w) from a (B, 1, H, W)
        saliency mask; zero wherever the resized mask is zero."""
        mask = resize_mask(saliency_mask, size)
        return mask * torch.sigmoid(self.attention(mask))

    def filter_features(self, features: Tensor, saliency_mask: Tensor) -> Tensor:
        """Apply the part attention filter to a (B, C, h, w) feature map."""
        attention = self.part_attention(saliency_mask, features.shape[-2:])
        if self.filter_mode == 'highlight':
            return features * (1.0 + attention)
        return features * attention

    def grouping_loss(self, grouped_features: Tensor) -> Tensor:
        """Weighted grouping loss of projected maps (B, reduced_channels, h, w).

        Returns:
            Tensor: Scalar, ``grouping_loss_weight *``
            :func:`semantic_grouping_loss`.
        """
        return self.grouping_loss_weight * semantic_grouping_loss(
            grouped_features, self.num_groups)

    def forward(
        self,
        inputs: Sequence[Tensor],
        saliency_mask: Optional[Tensor] = None,
        return_grouping_loss: bool = False
    ) -> Union[Tuple[Tensor], Tuple[Tuple[Tensor], Tensor]]:
        """Pool the last feature map into a group bilinear vector.

        Args:
            inputs (tuple[Tensor] | Tensor): Backbone features; the last one,
                of shape (B, in_channels, h, w), is used.
            saliency_mask (Tensor, optional): (B, 1, H, W), any H and W,
                values in [0, 1]. None skips the part attention filter.
            return_grouping_loss (bool): Also return the weighted grouping
                loss of this pass. Defaults to False.

        Returns:
            tuple[Tensor]: ``(feature,)`` with feature of shape
            (B, out_channels); or ``((feature,), loss_grouping)`` if
            ``return_grouping_loss``.
        """
        features = self._last_feature(inputs)
        if saliency_mask is not None and self.use_attention:
            self._check_mask(saliency_mask, features)
            features = self.filter_features(features,
                                            saliency_mask.to(features))
        grouped_features = self.projection(features)
        pooled = self.output_scale * group_bilinear_pool(grouped_features,
                                                         self.num_groups)
        if return_grouping_loss:
            return (pooled, ), self.grouping_loss(grouped_features)
        return (pooled, )

    def _last_feature(self, inputs: Union[Sequence[Tensor], Tensor]) -> Tensor:
        features = inputs if isinstance(inputs, Tensor) else inputs[-1]
        if features.dim() != 4 or features.shape[1] != self.in_channels:
            raise ValueError('PAFBilinearNeck expects a last feature map of '
                             f'shape (B, {self.in_channels}, h, w), got '
                             f'{tuple(features.shape)}')
        return features

    @staticmethod
    def _check_mask(saliency_mask: Tensor, features: Tensor) -> None:
        if (saliency_mask.dim() != 4 or saliency_mask.shape[1] != 1
                or saliency_mask.shape[0] != features.shape[0]):
            raise ValueError(
                'saliency_mask must have shape (B, 1, H, W) with '
                f'B={features.shape[0]}, got {tuple(saliency_mask.shape)}')
