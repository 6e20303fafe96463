"""Location heatmap: a non-learned SCDA-style object localiser (paper Sec. 3.2)."""
from typing import NamedTuple, Optional, Sequence, Tuple

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
            image (only its largest 8-connected region with
            ``largest_component``); never empty (whole image when the
            heatmap is flat).
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

    Then ``H = mean`` of the stage maps (weighted by ``stage_weights``),
    divided by its maximum (so in [0, 1]),
    ``O = H > mean(H)`` per image and ``S = |O| * (H_img / h) * (W_img / w)``,
    i.e. the mask's cell count times the input pixels each grid cell covers.

    Our choices where the paper is silent (DESIGN.md): thresholded maps keep their
    values (the paper's "set it to one" would lose the peak structure that
    SPPN and the teacher input use), the stages are combined by a mean, and the
    object mask thresholds the combined map at its mean once more.

    With ``largest_component=True`` the object mask keeps only its largest
    8-connected region, as SCDA does: on cluttered images the mean threshold
    also keeps blobs on the background, and the object is taken to be the
    biggest blob. The heatmap itself is unchanged.

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
        largest_component (bool): keep only the object mask's largest
            8-connected region (SCDA's step). Defaults to False (the whole
            thresholded mask).
        stage_weights (Sequence[float], optional): one non-negative weight
            per stage map, finest first, for their weighted mean; a zero
            drops a stage (the grid stays the first map's). None (default)
            weighs them equally, the paper's three stages.
    """

    def __init__(self, resize_mode: str = 'bilinear', align_corners: bool = False,
                 largest_component: bool = False,
                 stage_weights: Optional[Sequence[float]] = None):
        super().__init__()
        if resize_mode not in ('bilinear', 'nearest', 'bicubic', 'area'):
            raise ValueError(
                f"resize_mode must be 'bilinear', 'nearest', 'bicubic' or 'area', "
                f'got {resize_mode!r}')
        self.resize_mode = resize_mode
        self.align_corners = align_corners
        self.largest_component = largest_component
        if stage_weights is not None:
            stage_weights = tuple(float(weight) for weight in stage_weights)
            if min(stage_weights, default=0.0) < 0 or sum(stage_weights) <= 0:
                raise ValueError('stage_weights must be non-negative with a positive '
                                 f'sum, got {stage_weights}')
        self.stage_weights = stage_weights

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
        heatmap = _max_normalise(self._combine(stage_maps))

        mean_heat = heatmap.mean(dim=(2, 3), keepdim=True)
        object_mask = heatmap > mean_heat
        # A flat map (all zero or all equal) has nothing above its mean: the
        # object is then taken to be the whole image.
        flat = ~object_mask.flatten(1).any(dim=1)
        heatmap = torch.where(flat[:, None, None, None],
                              torch.ones_like(heatmap), heatmap)
        object_mask = object_mask | flat[:, None, None, None]
        if self.largest_component:
            object_mask = largest_connected_region(object_mask)

        cell_area = (img_shape[0] / grid_size[0]) * (img_shape[1] / grid_size[1])
        object_area = object_mask.flatten(1).sum(dim=1).float() * cell_area
        return LocationHeatmapOutput(heatmap, object_mask, object_area)

    def _combine(self, stage_maps: Tensor) -> Tensor:
        """(S, B, 1, h, w) stage maps -> (B, 1, h, w) their (weighted) mean."""
        if self.stage_weights is None:
            return stage_maps.mean(dim=0)
        if len(self.stage_weights) != stage_maps.shape[0]:
            raise ValueError(f'LocationHeatmap: stage_weights has '
                             f'{len(self.stage_weights)} weights for '
                             f'{stage_maps.shape[0]} feature maps')
        weights = stage_maps.new_tensor(self.stage_weights)
        return (stage_maps * weights.view(-1, 1, 1, 1, 1)).sum(dim=0) / weights.sum()

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


def largest_connected_region(mask: Tensor) -> Tensor:
    """Keep each (1, h, w) mask's largest 8-connected region.

    Every foreground cell starts with its own label (its flat index + 1) and
    takes the largest label among its foreground neighbours until no label
    changes, so each region ends up labelled by its largest index: at most
    one step per cell along the region's longest path, no Python loop over
    cells. Ties between regions of equal size go to the region with the
    smaller label.

    Args:
        mask (Tensor): (B, 1, h, w) bool.

    Returns:
        Tensor: (B, 1, h, w) bool, a subset of ``mask``; all False where
        ``mask`` is.
    """
    batch, _, height, width = mask.shape
    foreground = mask.float()
    # float32 holds integers exactly up to 2**24 cells: far above any grid here.
    cell_ids = torch.arange(1, height * width + 1, device=mask.device, dtype=torch.float32)
    labels = cell_ids.view(1, 1, height, width) * foreground
    for _ in range(height * width):
        spread = F.max_pool2d(labels, kernel_size=3, stride=1, padding=1) * foreground
        if torch.equal(spread, labels):
            break
        labels = spread
    flat_labels = labels.flatten(1).long()
    counts = torch.zeros(batch, height * width + 1, device=mask.device)
    counts.scatter_add_(1, flat_labels, torch.ones_like(flat_labels, dtype=counts.dtype))
    counts[:, 0] = 0  # the background is not a region
    largest = counts.argmax(dim=1)
    keep = (flat_labels == largest[:, None]) & (flat_labels > 0)
    return keep.view_as(mask)
