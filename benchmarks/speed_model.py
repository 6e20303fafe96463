"""The model and the input batch that ``benchmarks/speed.py`` measures."""
import copy
from typing import Any, List, Optional, Tuple

import torch

from benchmarks.common import load_config


def _drop_pretrained(cfg):
    """Copy of a config tree without ``Pretrained`` init_cfgs (no downloads)."""
    if isinstance(cfg, dict):
        out = {}
        for key, value in cfg.items():
            if key == 'init_cfg' and isinstance(value, dict) and \
                    value.get('type') == 'Pretrained':
                out[key] = None
            else:
                out[key] = _drop_pretrained(value)
        return out
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(_drop_pretrained(value) for value in cfg)
    return cfg


def build_daf_model(config: str, device: str, cfg_options: Optional[dict] = None):
    """Build the config's ``DAFClassifier`` with random (non-pretrained) weights.

    Args:
        config (str): a config whose model is a ``DAFClassifier``.
        device (str): where to put the model.
        cfg_options (dict, optional): merged into the config first
            (``--cfg-options``).

    Returns:
        DAFClassifier: the model, initialised without any checkpoint.
    """
    from mmpretrain.registry import MODELS

    from mmdaf.models.classifiers.daf_classifier import DAFClassifier
    from mmdaf.utils import init_weights_quietly

    cfg = load_config(config, cfg_options)
    model_cfg = _drop_pretrained(copy.deepcopy(cfg.model.to_dict()))
    if model_cfg.get('type') != 'DAFClassifier':
        raise ValueError(f'--config must define a DAFClassifier model, {config} has '
                         f'type={model_cfg.get("type")!r}')
    model = MODELS.build(model_cfg)
    assert isinstance(model, DAFClassifier)
    init_weights_quietly(model)
    return model.to(device)


def make_batch(model, batch: int, size: int, device: str,
               seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor, List[Any]]:
    """Seeded random inputs and labels for ``model``.

    Args:
        model (DAFClassifier): gives the number of classes.
        batch (int): images in the batch.
        size (int): side of the square inputs in pixels.
        device (str): where to put the tensors.
        seed (int): seed of the inputs and labels.

    Returns:
        tuple: ``(inputs, labels, samples)``: (B, 3, size, size) normal noise,
        (B,) labels and one ``DataSample`` per image carrying its label.
    """
    from mmpretrain.structures import DataSample
    num_classes = model.head.num_classes
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch, 3, size, size, generator=generator).to(device)
    labels = torch.randint(num_classes, (batch, ), generator=generator)
    # The data preprocessor moves the samples in training; here we do.
    samples = [DataSample().set_gt_label(int(label)).to(device) for label in labels]
    return inputs, labels.to(device), samples


def part_pass_is_forward_only(model) -> bool:
    """Whether the model's part pass is forward-only in the backbone."""
    return getattr(model, 'part_backbone_grad_scale', 1.0) == 0


def part_pass_needed(model, sampling: bool) -> bool:
    """Whether a training step runs the N part images through the student.

    The rule of ``DAFClassifier.sppn_loss``: the part pass runs when
    ``loss_concentrate`` is set (L_con reads its logits) or when the step
    ranks (``sppn_head.ranks``) and the ranking target reads the part images
    (``rank_target.uses_part_images``: ``PartImageRankTarget``, not
    ``WindowRankTarget``). Without an SPPN there is no part pass.

    Args:
        model (DAFClassifier): the model.
        sampling (bool): whether the step draws sampled anchors.
    """
    if not model.with_sppn:
        return False
    if model.loss_concentrate is not None:
        return True
    return bool(model.sppn_head.ranks(with_samples=sampling)
                and model.rank_target.uses_part_images)


def part_pass_share(model) -> float:
    """Share of the training steps that run the N part images' pass.

    A step that draws sampled anchors (1 in ``rank_interval`` with
    ``rank_samples``, none without) runs it when
    ``part_pass_needed(model, sampling=True)``, the other steps when
    ``part_pass_needed(model, sampling=False)``.
    """
    if not model.with_sppn:
        return 0.0
    head = model.sppn_head
    sampling_share = 1.0 / head.rank_interval if head.rank_samples > 0 else 0.0
    return (sampling_share * part_pass_needed(model, sampling=True)
            + (1.0 - sampling_share) * part_pass_needed(model, sampling=False))
