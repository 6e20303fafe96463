"""Single-image inference with DAF-net: top-k classes, part boxes, heatmap.

The config's test pipeline preprocesses each image. Part boxes and the heatmap
come out in the network input's pixels; the inferencer maps them back onto the
original image when every size-changing step of the pipeline can be inverted:
``Resize`` (also ``RandomResize``, ``ResizeEdge``: a per-axis scale) and
mmcv's ``CenterCrop`` (an offset). With any other size-changing step,
or a flip, the picture is drawn on the network input image instead and the
result says so (``boxes_frame='network_input'``).
"""
import os
import os.path as osp
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmpretrain.registry import DATASETS, MODELS, TRANSFORMS

from .part_drawing import DEFAULT_MIN_SIDE, draw_parts

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')
# (sx, sy, tx, ty): network input pixel x_in = sx * x_original + tx (same for y).
Affine = Tuple[float, float, float, float]
IDENTITY: Affine = (1.0, 1.0, 0.0, 0.0)


def list_images(inputs: Union[str, Sequence[str]]) -> List[str]:
    """Expand files and folders (searched recursively, sorted) into image paths.

    Args:
        inputs (str | Sequence[str]): image files and/or folders.

    Returns:
        list[str]: image paths, files in the given order, each folder's images
        sorted by path.
    """
    if isinstance(inputs, str):
        inputs = [inputs]
    paths = []
    for item in inputs:
        if osp.isdir(item):
            found = sorted(
                osp.join(folder, name)
                for folder, _, names in os.walk(item) for name in names
                if name.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise ValueError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) in '
                                 f'folder {item!r}')
            paths.extend(found)
        elif osp.isfile(item):
            paths.append(item)
        else:
            raise FileNotFoundError(f'input {item!r} is neither a file nor a folder')
    return paths


def update_affine(affine: Optional[Affine], transform_name: str,
                  shape_before: Tuple[int, int], shape_after: Tuple[int, int],
                  flipped: bool) -> Optional[Affine]:
    """Compose one pipeline step into the original -> input mapping.

    Args:
        affine (tuple, optional): the mapping so far; None if already unknown.
        transform_name (str): class name of the transform.
        shape_before (tuple): (h, w) of the image before the step.
        shape_after (tuple): (h, w) after it.
        flipped (bool): whether the results are flipped after the step.

    Returns:
        tuple | None: the new ``(sx, sy, tx, ty)``, or None when the step
        cannot be inverted (unknown size change, flip).
    """
    if affine is None or flipped:
        return None
    if shape_before == shape_after:
        return affine
    sx, sy, tx, ty = affine
    (h0, w0), (h1, w1) = shape_before, shape_after
    if transform_name.endswith('Resize') or transform_name == 'ResizeEdge':
        ratio_x, ratio_y = w1 / w0, h1 / h0
        return sx * ratio_x, sy * ratio_y, tx * ratio_x, ty * ratio_y
    if transform_name == 'CenterCrop' and h1 <= h0 and w1 <= w0:
        # mmcv's CenterCrop puts the crop at round((size - crop) / 2).
        offset_x, offset_y = int(round((w0 - w1) / 2)), int(round((h0 - h1) / 2))
        return sx, sy, tx - offset_x, ty - offset_y
    return None


def boxes_to_original(boxes_xyxy: np.ndarray, affine: Affine) -> np.ndarray:
    """Map (N, 4) xyxy boxes from network input pixels to original pixels."""
    sx, sy, tx, ty = affine
    scale = np.array([sx, sy, sx, sy])
    shift = np.array([tx, ty, tx, ty])
    return (boxes_xyxy - shift) / scale


def heatmap_to_original(heatmap: np.ndarray, input_shape: Tuple[int, int],
                        original_shape: Tuple[int, int], affine: Affine) -> np.ndarray:
    """Resample the heatmap (covering the network input) onto the original
    image; pixels cropped away by the pipeline get 0.

    Returns:
        np.ndarray: (H_original, W_original) float32.
    """
    input_h, input_w = input_shape
    heat_input = cv2.resize(heatmap.astype(np.float32), (input_w, input_h),
                            interpolation=cv2.INTER_LINEAR)
    sx, sy, tx, ty = affine
    # warpAffine maps pixel centres; the affine maps pixel edges.
    input_from_original = np.array([[sx, 0.0, tx + 0.5 * sx - 0.5],
                                    [0.0, sy, ty + 0.5 * sy - 0.5]], np.float32)
    return cv2.warpAffine(heat_input, input_from_original,
                          (original_shape[1], original_shape[0]),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)


def _bgr_chw_to_rgb_hwc(image: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy()[..., ::-1])


class DAFInferencer:
    """Classify images with a DAF-net (or any mmpretrain classifier) checkpoint.

    Args:
        config (str | Config): model config; its ``test_dataloader`` pipeline
            preprocesses the images.
        checkpoint (str, optional): weights; None keeps the initialisation.
        device (str): ``'cpu'``, ``'cuda'``, ``'cuda:1'``, ...
        cfg_options (dict, optional): overrides merged into the config.

    Class names come from the first of these that has exactly as many names as
    the model has classes: the checkpoint's ``meta['dataset_meta']['classes']``,
    the config's test dataset (built only when needed), else the class index
    as a string.
    """

    def __init__(self, config: Union[str, Config], checkpoint: Optional[str] = None,
                 device: str = 'cpu', cfg_options: Optional[dict] = None) -> None:
        if isinstance(config, str):
            config = Config.fromfile(config)
        elif not isinstance(config, Config):
            raise TypeError(f'config must be a path or a Config, got {type(config)}')
        else:
            config = config.copy()
        if cfg_options:
            config.merge_from_dict(cfg_options)
        self.cfg = config
        self.device = torch.device(device)
        init_default_scope(config.get('default_scope', 'mmpretrain'))

        model_cfg = config.model.copy()
        # mmpretrain configs keep the normalisation (mean, std, to_rgb) in a
        # top-level data_preprocessor that the Runner hands to the model;
        # without it the network would see raw 0-255 BGR pixels.
        if model_cfg.get('data_preprocessor') is None and config.get('data_preprocessor'):
            model_cfg['data_preprocessor'] = config.data_preprocessor
        self.model = MODELS.build(model_cfg)
        self.checkpoint_meta: dict = {}
        if checkpoint is not None:
            loaded = load_checkpoint(self.model, checkpoint, map_location='cpu')
            self.checkpoint_meta = loaded.get('meta', {}) or {}
        self.model.to(self.device).eval()

        pipeline_cfg = config.test_dataloader.dataset.pipeline
        self.transforms = [TRANSFORMS.build(step) for step in pipeline_cfg]
        self._class_names: Optional[List[str]] = None

    # ------------------------------------------------------------ class names
    def _config_dataset_classes(self) -> Optional[Sequence[str]]:
        try:
            dataset = DATASETS.build(self.cfg.test_dataloader.dataset)
        except Exception as error:  # noqa: BLE001  (any failure: fall back)
            warnings.warn(f'could not build the test dataset for class names: {error}')
            return None
        return dataset.metainfo.get('classes', None)

    def class_names(self, num_classes: int) -> List[str]:
        """Names of the ``num_classes`` classes (see the class doc for the
        order of the sources)."""
        if self._class_names is not None and len(self._class_names) == num_classes:
            return self._class_names
        checkpoint_classes = self.checkpoint_meta.get('dataset_meta', {}).get('classes')
        candidates = [lambda: checkpoint_classes, self._config_dataset_classes]
        names = None
        for source in candidates:
            found = source()
            if found is not None and len(found) == num_classes:
                names = [str(name) for name in found]
                break
        self._class_names = names or [str(index) for index in range(num_classes)]
        return self._class_names

    # ------------------------------------------------------------ pipeline
    def preprocess(self, path: str) -> Tuple[dict, np.ndarray, Optional[Affine]]:
        """Run the test pipeline on one image.

        Returns:
            tuple: the packed sample (``inputs`` (3,H,W) uint8 BGR tensor and
            ``data_samples``), the original image (H0,W0,3) uint8 RGB, and the
            original -> input mapping ``(sx, sy, tx, ty)`` or None.
        """
        results: dict = dict(img_path=path)
        original = None
        affine: Optional[Affine] = IDENTITY
        for transform in self.transforms:
            shape_before = results['img'].shape[:2] if 'img' in results else None
            results = transform(results)
            if results is None:
                raise RuntimeError(f'the test pipeline dropped {path!r} at '
                                   f'{type(transform).__name__}')
            if 'img' not in results:  # packed
                continue
            if shape_before is None:
                original = results['img'][..., ::-1].copy()
                continue
            affine = update_affine(affine, type(transform).__name__, shape_before,
                                   results['img'].shape[:2],
                                   bool(results.get('flip', False)))
        if original is None or 'inputs' not in results:
            raise RuntimeError('the test pipeline must load the image and end with '
                               'PackInputs')
        return results, original, affine

    # ------------------------------------------------------------ inference
    @torch.no_grad()
    def predict_one(self, path: str, topk: int = 5) -> Dict:
        """Classify one image.

        Returns:
            dict: ``path``; ``topk`` (list of ``{class_index, class_name,
            score}``, descending); ``pred_score`` (K,) softmax; ``input_image``
            (H,W,3) uint8 RGB, what the network saw; ``original_image``
            (H0,W0,3) uint8 RGB; ``input_to_original`` affine or None;
            ``part_boxes`` (N,4) xyxy in input pixels, ``part_scores`` (N,),
            ``heatmap`` (h,w) in [0,1] (each None if the model has no such
            part); ``part_boxes_original`` (N,4) in original pixels or None.
        """
        packed, original, affine = self.preprocess(path)
        sample = self.model.test_step(pseudo_collate([packed]))[0]
        scores = sample.pred_score.float().cpu()
        k = min(topk, scores.numel())
        top_scores, top_indices = scores.topk(k)
        names = self.class_names(scores.numel())
        result = dict(
            path=path,
            topk=[dict(class_index=int(index), class_name=names[int(index)],
                       score=float(score))
                  for score, index in zip(top_scores, top_indices)],
            pred_score=scores.numpy(),
            input_image=_bgr_chw_to_rgb_hwc(packed['inputs']),
            original_image=original,
            input_to_original=affine,
            part_boxes=None, part_scores=None, heatmap=None, part_boxes_original=None)
        if 'part_boxes' in sample:
            result['part_boxes'] = sample.part_boxes.float().cpu().numpy()
            result['part_scores'] = sample.part_scores.float().cpu().numpy()
            if affine is not None:
                result['part_boxes_original'] = boxes_to_original(
                    result['part_boxes'], affine)
        if 'heatmap' in sample:
            result['heatmap'] = sample.heatmap.float().cpu().numpy()[0]
        return result

    def __call__(self, inputs: Union[str, Sequence[str]], topk: int = 5) -> List[Dict]:
        """Classify images.

        Args:
            inputs (str | Sequence[str]): image files and/or folders.
            topk (int): how many classes to return per image (at most K).

        Returns:
            list[dict]: one :meth:`predict_one` result per image.
        """
        if not isinstance(topk, int) or topk < 1:
            raise ValueError(f'topk must be a positive int, got {topk!r}')
        return [self.predict_one(path, topk) for path in list_images(inputs)]

    # ------------------------------------------------------------ pictures
    def visualize(self, result: Dict, out_file: Optional[str] = None,
                  alpha: float = 0.5, min_side: int = DEFAULT_MIN_SIDE,
                  caption: Optional[Sequence[str]] = None) -> np.ndarray:
        """Draw the heatmap and part boxes of one :meth:`predict_one` result.

        On the original image when the pipeline is invertible
        (``result['input_to_original']`` is set), else on the network input.

        Args:
            result (dict): from :meth:`predict_one` / :meth:`__call__`.
            out_file (str, optional): write the picture here (PNG, JPEG, ...).
            alpha (float): heatmap opacity at heat 1.
            min_side (int): a smaller image is upscaled (integer factor
                ``s``) until its shorter side is at least this, before the
                boxes and labels are drawn; 0 keeps its size.
            caption (Sequence[str], optional): text lines written in a band
                above the picture.

        Returns:
            np.ndarray: (s * H + band, s * W, 3) uint8 RGB picture. The
            result's boxes stay in the image's own pixels; only the picture
            is scaled.
        """
        affine = result['input_to_original']
        boxes, heatmap = result['part_boxes'], result['heatmap']
        if affine is None:
            image = result['input_image']
        else:
            image = result['original_image']
            boxes = result['part_boxes_original']
            if heatmap is not None:
                heatmap = heatmap_to_original(heatmap, result['input_image'].shape[:2],
                                              image.shape[:2], affine)
        picture = draw_parts(image, heatmap, boxes, result['part_scores'], alpha=alpha,
                             min_side=min_side, caption=caption)
        if out_file is not None:
            os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
            if not cv2.imwrite(out_file, picture[..., ::-1]):
                raise OSError(f'could not write {out_file!r}')
        return picture
