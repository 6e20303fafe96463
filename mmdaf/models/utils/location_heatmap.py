"""Location heatmap: a non-learned SCDA-style object localiser (paper Sec. 3.2)."""
from typing import NamedTuple, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.registry import MODELS
from torch import Tensor


class LocationHeatmapOutput(NamedTuple):
    """What :class:`LocationHeatmap` returns.

    Attributes:
        heatmap (Tensor): (B, 1, h, w) float in [0, 1] on the grid of the first
            (finest, stride-8) feature map.
        object_mask (Tensor): (B, 1, h, w) bool, ``heatmap > mean(heatmap)`` per
            image; never empty (whole image when the heatmap is flat).
        object_area (Tensor): (B,) float, area of ``object_mask`` in input pixels.
    """

    heatmap: Tensor
    object_mask: Tensor
    object_area: Tensor


@MODELS.register_module()
class LocationHeatmap(nn.Module):
    """SCDA rule on the last backbone stages: where is the object, how big is it.

    For each stage feature map (ReLU outputs, e.g. C3/C4/C5 at strides 8/16/32):

    1. aggregation map ``A = sum_c F[c]`` (B, 1, h_l, w_l);
    2. keep ``A`` where ``A > mean(A)`` (spatial mean per image), zero elsewhere;
    3. divide by its maximum so the map lies in [0, 1];
    4. resize to the grid of the first feature map (``resize_mode``).

    Then ``H = mean`` of the stage maps, divided by its maximum (so in [0, 1]),
    ``O = H > mean(H)`` per image and ``S = |O| * (H_img / h) * (W_img / w)``,
    i.e. the mask's cell count times the input pixels each grid cell covers.

    Our choices where the paper is silent (DESIGN.md): thresholded maps keep their
    values (the paper's "set it to one" would lose the peak structure that
    SPPN and the teacher input use), the stages are combined by a mean, and the
    object mask thresholds the combined map at its mean once more.

    Never empty: an image whose combined map is all zero or constant (no stage
    has any position above its mean) gets ``H = 1`` and ``O`` = the whole image.

    The rule has no parameters and is computed under ``torch.no_grad()``: its
    outputs are targets/inputs for other parts and must not send gradient into
    the backbone.

    Args:
        resize_mode (str): interpolation used to bring the coarser stage maps to
            the finest grid. Defaults to ``'bilinear'`` (our choice).
        align_corners (bool): passed to ``F.interpolate`` for the bilinear modes.
            Defaults to False.
    """

    def __init__(self, resize_mode: str = 'bilinear', align_corners: bool = False):
        super().__init__()
        if resize_mode not in ('bilinear', 'nearest', 'bicubic', 'area'):
            raise ValueError(
                f"resize_mode must be 'bilinear', 'nearest', 'bicubic' or 'area', "
                f'got {resize_mode!r}')
        self.resize_mode = resize_mode
        self.align_corners = align_corners

    @torch.no_grad()
    def forward(self, feats: Sequence[Tensor],
                img_shape: Tuple[int, int]) -> LocationHeatmapOutput:
        """Compute heatmap, object mask and object area.

        Args:
            feats (Sequence[Tensor]): stage outputs, finest first, e.g.
                (C3 (B, C3, h, w), C4 (B, C4, h/2, w/2), C5 (B, C5, h/4, w/4)).
                The output grid is the first map's (h, w).
            img_shape (Tuple[int, int]): (H, W) of the network input in pixels.

        Returns:
            LocationHeatmapOutput: heatmap (B, 1, h, w) float32 in [0, 1],
            object_mask (B, 1, h, w) bool, object_area (B,) float32 pixels.
        """
        self._check_inputs(feats, img_shape)
        grid_size = tuple(feats[0].shape[-2:])
        stage_maps = torch.stack([self._stage_map(feat, grid_size) for feat in feats])
        heatmap = _max_normalise(stage_maps.mean(dim=0))

        mean_heat = heatmap.mean(dim=(2, 3), keepdim=True)
        object_mask = heatmap > mean_heat
        # A flat map (all zero or all equal) has nothing above its mean: the
        # object is then taken to be the whole image.
        flat = ~object_mask.flatten(1).any(dim=1)
        heatmap = torch.where(flat[:, None, None, None],
                              torch.ones_like(heatmap), heatmap)
        object_mask = object_mask | flat[:, None, None, None]

        cell_area = (img_shape[0] / grid_size[0]) * (img_shape[1] / grid_size[1])
        object_area = object_mask.flatten(1).sum(dim=1).float() * cell_area
        return LocationHeatmapOutput(heatmap, object_mask, object_area)

    def _stage_map(self, feat: Tensor, grid_size: Tuple[int, int]) -> Tensor:
        """Mean-thresholded, max-normalised aggregation map on ``grid_size``."""
        # float32: a channel sum over 2048 fp16 activations may overflow.
        aggregation = feat.float().sum(dim=1, keepdim=True)
        above_mean = aggregation > aggregation.mean(dim=(2, 3), keepdim=True)
        thresholded = _max_normalise(aggregation * above_mean)
        if tuple(thresholded.shape[-2:]) == grid_size:
            return thresholded
        if self.resize_mode in ('bilinear', 'bicubic'):
            resized = F.interpolate(thresholded, size=grid_size,
                                    mode=self.resize_mode,
                                    align_corners=self.align_corners)
            # bicubic overshoots; keep the [0, 1] contract.
            return resized.clamp(0.0, 1.0)
        return F.interpolate(thresholded, size=grid_size, mode=self.resize_mode)

    @staticmethod
    def _check_inputs(feats: Sequence[Tensor], img_shape: Tuple[int, int]) -> None:
        if len(feats) == 0:
            raise ValueError('feats must hold at least one feature map, got none')
        batch = feats[0].shape[0]
        for i, feat in enumerate(feats):
            if not isinstance(feat, Tensor) or feat.dim() != 4:
                raise ValueError(
                    f'feats[{i}] must be a (B, C, h, w) tensor, got '
                    f'{getattr(feat, "shape", type(feat))}')
            if feat.shape[0] != batch:
                raise ValueError(
                    f'feats[{i}] has batch size {feat.shape[0]}, feats[0] has '
                    f'{batch}')
        if len(img_shape) != 2 or min(img_shape) <= 0:
            raise ValueError(f'img_shape must be (H, W) > 0, got {img_shape}')


def _max_normalise(maps: Tensor) -> Tensor:
    """Divide each (1, h, w) map by its maximum; an all-zero map stays zero."""
    peak = maps.amax(dim=(2, 3), keepdim=True)
    return torch.where(peak > 0, maps / peak.clamp(min=torch.finfo(maps.dtype).tiny),
                       torch.zeros_like(maps))
