"""Save pictures of DAF-net's heatmap and part boxes during validation."""
import os
import os.path as osp
from typing import Optional, Sequence

import cv2
import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import BaseLoop, IterBasedTrainLoop

from ...apis.part_drawing import DEFAULT_MIN_SIDE, draw_parts


def _input_to_rgb(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) uint8 BGR (as mmcv's LoadImageFromFile reads) -> (H, W, 3) RGB."""
    array = image.detach().cpu()
    if array.dtype != torch.uint8:
        array = array.clamp(0, 255).round().to(torch.uint8)
    return np.ascontiguousarray(array.permute(1, 2, 0).numpy()[..., ::-1])


@HOOKS.register_module()
class PartVisualizationHook(Hook):
    """Draw the location heatmap and part boxes of the first validation images.

    In every validation run, the first ``num_images`` images that rank 0
    evaluates (with a distributed sampler: every world-size-th image of the
    val set) are drawn with :func:`mmdaf.apis.draw_parts` on the network input
    image (boxes and heatmap live in its pixels), upscaled when small and written as PNG files
    ``<index>_<image name>.png`` to ``<out_dir>/epoch_<k>/`` (``iter_<k>/`` when
    validating inside iteration-based training; ``epoch_0/`` for a val-only
    run). Other ranks draw nothing.

    Models without a heatmap or part boxes (the ablation baselines) still get
    the plain image, so the folder layout does not depend on the config.

    Args:
        num_images (int): images drawn per validation run. Defaults to 4.
        out_dir (str, optional): root folder; default ``<work_dir>/vis``.
        enable (bool): switch the hook off without removing it from the
            config. Defaults to True.
        alpha (float): heatmap opacity at heat 1. Defaults to 0.5.
        min_side (int): images with a shorter side below this are upscaled
            (by an integer factor, nearest-neighbour) before the heatmap,
            boxes and labels are drawn; 0 draws at the input's own size.
            Defaults to 384.
    """
    priority = 'LOW'

    def __init__(self, num_images: int = 4, out_dir: Optional[str] = None,
                 enable: bool = True, alpha: float = 0.5,
                 min_side: int = DEFAULT_MIN_SIDE) -> None:
        if not isinstance(num_images, int) or num_images < 0:
            raise ValueError(
                f'num_images must be a non-negative int, got {num_images!r}')
        self.num_images = num_images
        self.out_dir = out_dir
        self.enable = enable
        self.alpha = alpha
        self.min_side = min_side
        self._num_drawn = 0
        self._epoch_dir: Optional[str] = None

    def _run_dir(self, runner) -> str:
        root = self.out_dir if self.out_dir is not None else osp.join(runner.work_dir,
                                                                      'vis')
        # runner.epoch would build the train loop (and its dataloader) in a
        # val-only run, so look at the loop only if training built it.
        train_loop = getattr(runner, '_train_loop', None)
        if not isinstance(train_loop, BaseLoop):
            return osp.join(root, 'epoch_0')
        if isinstance(train_loop, IterBasedTrainLoop):
            return osp.join(root, f'iter_{train_loop.iter}')
        return osp.join(root, f'epoch_{train_loop.epoch}')

    def before_val_epoch(self, runner) -> None:
        self._num_drawn = 0
        self._epoch_dir = self._run_dir(runner)

    def after_val_iter(self, runner, batch_idx: int, data_batch: Optional[dict] = None,
                       outputs: Optional[Sequence] = None) -> None:
        if (not self.enable or runner.rank != 0 or self._num_drawn >= self.num_images
                or data_batch is None or outputs is None):
            return
        if self._epoch_dir is None:
            self._epoch_dir = self._run_dir(runner)
        os.makedirs(self._epoch_dir, exist_ok=True)
        inputs = data_batch['inputs']
        for index, sample in enumerate(outputs):
            if self._num_drawn >= self.num_images:
                break
            picture = draw_parts(_input_to_rgb(inputs[index]), sample.get('heatmap'),
                                 sample.get('part_boxes'), sample.get('part_scores'),
                                 alpha=self.alpha, min_side=self.min_side)
            image_path = sample.get('img_path', None)
            name = (osp.splitext(osp.basename(image_path))[0] if image_path
                    else f'sample_{sample.get("sample_idx", batch_idx)}')
            out_file = osp.join(self._epoch_dir, f'{self._num_drawn:03d}_{name}.png')
            cv2.imwrite(out_file, picture[..., ::-1])
            self._num_drawn += 1
