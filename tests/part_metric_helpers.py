"""Shared by the tests of the part metrics (PartHitRate, PartCoverage): a
hand-written CUB-format root, data samples with part boxes, an evaluation."""
import os.path as osp

import numpy as np
import torch
from mmengine.evaluator import Evaluator
from mmpretrain.structures import DataSample


def write_cub_root(tmp_path, images: str, part_locs: str, part_boxes: str) -> str:
    """A CUB-layout root with ``images.txt`` and the two part files."""
    root = tmp_path / 'CUB'
    (root / 'parts').mkdir(parents=True)
    (root / 'images.txt').write_text(images)
    (root / 'parts' / 'part_locs.txt').write_text(part_locs)
    (root / 'parts' / 'part_boxes.txt').write_text(part_boxes)
    return str(root)


def make_sample(data_root, rel_path, boxes, ori_shape, img_shape=None, **metainfo):
    sample = DataSample().set_gt_label(0)
    sample.set_metainfo(dict(img_path=osp.join(data_root, 'images', rel_path),
                             ori_shape=ori_shape, img_shape=img_shape or ori_shape,
                             **metainfo))
    if boxes is not None:
        sample.set_field(torch.tensor(np.asarray(boxes), dtype=torch.float32), 'part_boxes')
    return sample


def evaluate(metric, samples):
    evaluator = Evaluator(metric)
    evaluator.process(data_samples=samples)
    return evaluator.evaluate(len(samples))


def visible_part_regions(root):
    """image id -> (P, 4) part regions of the visible parts of a synthetic set."""
    visible = {}
    with open(osp.join(root, 'parts', 'part_locs.txt')) as f:
        for line in f:
            image_id, part_id, _, _, flag = line.split()
            visible[image_id, part_id] = flag == '1'
    regions = {}
    with open(osp.join(root, 'parts', 'part_boxes.txt')) as f:
        for line in f:
            image_id, part_id, *box = line.split()
            if visible[image_id, part_id]:
                regions.setdefault(int(image_id), []).append([float(v) for v in box])
    return regions
