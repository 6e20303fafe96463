"""Which boxes carry the class? The classifier head on the last stage pooled
in boxes, on the test split of a synthetic set.

For each trained run (a work dir of ``benchmarks/learning.py``: its dumped
config and final checkpoint) the script takes the student's last stage (a
plain classifier's backbone output), averages it inside boxes (cells weighted
by their overlap, :func:`mmdaf.models.utils.box_pooled_features`, as the
``PooledPartHead`` of ``DAFClassifier(part_pool=...)`` does) and classifies
each pooled vector with the model's own head. Boxes of four kinds, per image:

- ``parts``: the ground-truth part regions of ``parts/part_boxes.txt``;
- ``parts_random``: the same regions moved to random positions (sizes kept);
- ``proposals``: the SPPN's top-M proposals (models with an SPPN);
- ``proposals_random``: the proposals moved to random positions.

For a DAF model it also measures ``window.<part>``: the share of right answers
of the student on the ``--window`` S x S window of each ground-truth part (the
part sharp, the rest blurred, as the window ranking target sees a box; part
names from ``parts/parts.txt``), and
``window.random`` on windows of the same regions moved at random. A part
whose windows score no better than random windows is invisible to the ranking
target: no proposal is trained to go there.

For each kind it prints ``each`` (the share of boxes whose own logits are
right), ``mean`` (top-1 of the boxes' mean logits) and ``with_image`` (top-1
of the mean of the image's logits and the boxes' logits: the student
prediction of ``part_pool.predict``); ``image`` is the head on the whole
image. For the proposals it also splits ``each`` by whether the box hits a
part (its centre in a part region, as the hit rate counts). ``part_alone.<part>``
is ``with_image`` for that one ground-truth region alone: what pooling at
that part, and no other, would give this model.

For a model with a location heatmap it also measures its object mask
against the object's box (``bounding_boxes.txt``), over the mask's grid
cells: ``object_mask.area`` (share of the image's cells in the mask),
``object_mask.precision`` (share of the mask's cells whose centre lies in
the object's box), ``object_mask.recall`` (share of the box's cells in the
mask) and ``object_mask.parts_in`` (share of part regions whose centre cell
is in the mask).

``parts`` far above ``parts_random`` says the features where the parts are
carry the class better than features elsewhere: pooling there can help, and
proposals that hit more parts would help more. ``parts`` near
``parts_random`` says the last stage does not localise the class at this
resolution: which boxes are pooled then matters little. Usage::

    python benchmarks/box_probe.py work_dirs/val_v5/v7_lhm_pool.py_seed{0,1,2} \\
        --data-root work_dirs/val_v5/data/synthetic_c8_tr60_te100_s64_p1.6_seed1 \\
        --out work_dirs/box_probe.json
"""
import argparse
import os.path as osp
import sys
from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmengine.config import DictAction

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
from benchmarks.common import (  # noqa: E402
    build_test_loader,
    check_out_path,
    load_trained_model,
    read_image_ids,
    read_object_boxes,
    read_part_box_rows,
    write_json,
)
from benchmarks.learning_metrics import box_centre_hits  # noqa: E402

KINDS = ('parts', 'parts_random', 'proposals', 'proposals_random')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('runs', nargs='+',
                        help='work dirs of trained runs (one dumped config and '
                        'a last_checkpoint file each)')
    parser.add_argument('--data-root', required=True, help='the synthetic set')
    parser.add_argument('--top-m', type=int, default=3,
                        help='proposals pooled per image (default 3)')
    parser.add_argument('--window', type=int, default=24,
                        help='side of the part windows in pixels (default 24, the '
                        'synthetic configs\' rank_target.crop); 0 skips them')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the random positions (default 0)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override keys of every run\'s config, e.g. '
                        'model.sppn_head.nms_iou_thr=0.01')
    parser.add_argument('--out', help='write the results as JSON to this path')
    args = parser.parse_args(argv)
    check_out_path(parser, args.out)
    if args.top_m < 1:
        parser.error(f'--top-m must be >= 1, got {args.top_m}')
    if args.window < 0:
        parser.error(f'--window must be >= 0, got {args.window}')
    return args


def run_files(run_dir: str) -> Dict[str, str]:
    """The dumped config and the final checkpoint of one run's work dir."""
    from benchmarks.learning_eval import _dumped_config
    pointer = osp.join(run_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        raise FileNotFoundError(f'{pointer} not found: is {run_dir} a finished run?')
    with open(pointer) as f:
        checkpoint = f.read().strip()
    if not osp.isabs(checkpoint) or not osp.isfile(checkpoint):
        checkpoint = osp.join(run_dir, osp.basename(checkpoint))
    return dict(config=_dumped_config(run_dir), checkpoint=checkpoint)


class BoxClassifier:
    """The last stage, the head and the proposals of a trained model.

    Works for a ``DAFClassifier`` (its student) and for a plain mmpretrain
    ``ImageClassifier`` (its backbone's last output; no proposals).
    """

    def __init__(self, model) -> None:
        self.model = model
        self.is_daf = hasattr(model, 'run_student')

    def forward(self, inputs):
        """(B, C, h, w) last stage, (B, K) image logits, (B, N, 4) proposals
        or None, (B, 1, h', w') bool object mask or None."""
        if self.is_daf:
            student = self.model.run_student(inputs)
            return student.feats[-1], student.logits, student.boxes, student.object_mask
        feat = self.model.backbone(inputs)[-1]
        return feat, self.model.head((feat.mean(dim=(2, 3)), )), None, None

    def box_logits(self, feat, boxes, img_shape):
        """(B, M, K) head logits of ``feat`` pooled in the (B, M, 4) boxes
        (:meth:`PooledPartHead.box_logits`, what ``part_pool`` computes)."""
        from mmdaf.models.heads import PooledPartHead
        return PooledPartHead.box_logits(self.model.head, feat, boxes, img_shape)


class Tally:
    """Counts of right answers per kind and measure."""

    def __init__(self) -> None:
        self.right = defaultdict(int)
        self.total = defaultdict(int)
        self.counts = defaultdict(list)

    def add(self, name: str, correct) -> None:
        correct = np.asarray(correct, dtype=bool).reshape(-1)
        self.right[name] += int(correct.sum())
        self.total[name] += correct.size

    def add_count(self, name: str, count: int) -> None:
        """One image's count, averaged per image by :meth:`shares`."""
        self.counts[name].append(count)

    def shares(self) -> Dict[str, float]:
        shares = {name: 100.0 * self.right[name] / self.total[name]
                  for name in sorted(self.total) if self.total[name]}
        shares.update({name: float(np.mean(values))
                       for name, values in self.counts.items()})
        return shares


def parts_hit(boxes_xyxy: np.ndarray, regions_xyxy: np.ndarray) -> int:
    """How many of the (P, 4) part regions hold the centre of at least one
    of the (M, 4) boxes (edges inside): how many different parts the boxes
    show."""
    from mmdaf.evaluation.part_hit_rate import boxes_containing_points
    centres = (boxes_xyxy[:, :2] + boxes_xyxy[:, 2:]) / 2
    return int(boxes_containing_points(regions_xyxy, centres).sum())


def centres_in_regions(boxes_xyxy: np.ndarray, regions_xyxy: np.ndarray) -> np.ndarray:
    """(P, M) bool: whether region p holds the centre of box m (edges
    inside)."""
    from mmdaf.evaluation.part_annotations import points_in_boxes
    centres = (boxes_xyxy[:, :2] + boxes_xyxy[:, 2:]) / 2
    return points_in_boxes(centres[None], regions_xyxy[:, None])


def cell_centres(grid_shape: Sequence[int], img_shape: Sequence[int]) -> np.ndarray:
    """(h * w, 2) xy input-pixel centres of an h x w grid's cells, row-major."""
    height, width = grid_shape
    ys = (np.arange(height) + 0.5) * img_shape[0] / height
    xs = (np.arange(width) + 0.5) * img_shape[1] / width
    grid_y, grid_x = np.meshgrid(ys, xs, indexing='ij')
    return np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)


def tally_object_mask(tally: Tally, mask: np.ndarray, object_box: np.ndarray,
                      regions: np.ndarray, img_shape: Sequence[int]) -> None:
    """Add one image's object mask against its object box and parts.

    Args:
        mask (np.ndarray): (h, w) bool object mask.
        object_box (np.ndarray): (4, ) xyxy object box, input pixels.
        regions (np.ndarray): (P, 4) xyxy part regions.
        img_shape (tuple): (H, W) of the input.
    """
    centres = cell_centres(mask.shape, img_shape)
    in_mask = mask.ravel()
    in_box = ((centres >= object_box[:2]) & (centres <= object_box[2:])).all(axis=1)
    tally.add('object_mask.area', in_mask)
    tally.add('object_mask.precision', in_box[in_mask])
    tally.add('object_mask.recall', in_mask[in_box])
    part_centres = (regions[:, :2] + regions[:, 2:]) / 2
    cell_h, cell_w = img_shape[0] / mask.shape[0], img_shape[1] / mask.shape[1]
    rows = np.clip((part_centres[:, 1] // cell_h).astype(int), 0, mask.shape[0] - 1)
    cols = np.clip((part_centres[:, 0] // cell_w).astype(int), 0, mask.shape[1] - 1)
    tally.add('object_mask.parts_in', mask[rows, cols])


def tally_boxes(tally: Tally, kind: str, box_logits, image_logits, label: int) -> None:
    """Add one image's (M, K) box logits of one kind to ``tally``."""
    tally.add(f'{kind}.each', box_logits.argmax(dim=1).numpy() == label)
    tally.add(f'{kind}.mean', int(box_logits.mean(dim=0).argmax()) == label)
    with_image = (box_logits.sum(dim=0) + image_logits) / (len(box_logits) + 1)
    tally.add(f'{kind}.with_image', int(with_image.argmax()) == label)


def read_part_names(data_root: str) -> Dict[int, str]:
    """part id -> name from ``parts/parts.txt``."""
    path = osp.join(data_root, 'parts', 'parts.txt')
    names = {}
    with open(path) as f:
        for line_no, line in enumerate(f, start=1):
            fields = line.split(maxsplit=1)
            if len(fields) != 2:
                raise ValueError(f'{path}:{line_no}: expected "<part_id> <name>", '
                                 f'got {line!r}')
            names[int(fields[0])] = fields[1].strip()
    return names


def tally_windows(tally: Tally, model, inputs, regions, part_names: List[str],
                  labels, generator, window: int) -> None:
    """Add the student's answers on the S x S window of every part region
    (``window.<name>``) and of the regions moved at random
    (``window.random``), for a batch whose images all have P regions.

    Args:
        regions (Tensor): (B, P, 4) part regions, input pixels.
        part_names (list): the P part names, in the regions' order.
        labels (Tensor): (B, ) ground-truth labels.
        window (int): the window side S in pixels.
    """
    from mmdaf.models.heads.pooled_part_head import move_boxes_at_random
    img_shape = tuple(inputs.shape[-2:])
    moved = move_boxes_at_random(regions, img_shape, generator)
    for name, boxes in (('parts', regions), ('random', moved)):
        windows = model.part_image_generator.single_box_windows(inputs, boxes, window)
        logits = model.classify_part_images(windows)
        right = (logits.argmax(dim=1).view(boxes.shape[:2]) == labels[:, None]).numpy()
        if name == 'random':
            tally.add('window.random', right)
            continue
        for index, part in enumerate(part_names):
            tally.add(f'window.{part}', right[:, index])


def tally_image(tally: Tally, probe: BoxClassifier, feat, image_logits, label: int,
                regions: np.ndarray, proposals, img_shape, generator,
                region_names: Sequence[str] = ()) -> None:
    """Add one image's answers: the image, and each kind of box.

    Args:
        feat (Tensor): (1, C, h, w) the image's last stage.
        image_logits (Tensor): (K, ) the head on the whole image.
        label (int): the ground-truth label.
        regions (np.ndarray): (P, 4) the image's part regions.
        proposals (Tensor, optional): (1, M, 4) its top-M proposals.
        img_shape (tuple): (H, W) of the input.
        region_names (Sequence[str]): the P regions' part names; with them
            each region alone is also classified (``part_pooled.<name>``:
            what the pooled features there say, which is what the removed
            ``rank_target='clean_features'`` ranked by) and averaged with the
            image (``part_alone.<name>``: what pooling at that one part
            would give).
    """
    import torch

    from mmdaf.models.heads.pooled_part_head import move_boxes_at_random
    tally.add('image', int(image_logits.argmax()) == label)
    boxes = {'parts': torch.as_tensor(regions, dtype=feat.dtype)[None]}
    if proposals is not None:
        boxes['proposals'] = proposals
    for kind in list(boxes):
        boxes[f'{kind}_random'] = move_boxes_at_random(boxes[kind], img_shape, generator)
    logits = {kind: probe.box_logits(feat, kind_boxes, img_shape)[0]
              for kind, kind_boxes in boxes.items()}
    for kind, kind_logits in logits.items():
        tally_boxes(tally, kind, kind_logits, image_logits, label)
    for name, region_logits in zip(region_names, logits['parts']):
        alone = (region_logits + image_logits) / 2
        tally.add(f'part_alone.{name}', int(alone.argmax()) == label)
        tally.add(f'part_pooled.{name}', int(region_logits.argmax()) == label)
    if proposals is None:
        return
    right = logits['proposals'].argmax(dim=1).numpy() == label
    hits = box_centre_hits(proposals[0].numpy(), regions)
    tally.add('proposals.each_hit', right[hits])
    tally.add('proposals.each_miss', right[~hits])
    for kind in ('proposals', 'proposals_random'):
        tally.add_count(f'{kind}.parts_hit', parts_hit(boxes[kind][0].numpy(), regions))
    for name, landed in zip(region_names, centres_in_regions(proposals[0].numpy(), regions)):
        tally.add(f'proposals.in.{name}', landed)


def probe_run(run_dir: str, data_root: str, top_m: int, seed: int,
              cfg_options: Optional[dict] = None, window: int = 24) -> Dict[str, float]:
    """The shares of right answers of every kind of box, for one run."""
    import torch

    files = run_files(run_dir)
    cfg, model = load_trained_model(files['config'], files['checkpoint'], cfg_options)
    probe = BoxClassifier(model)
    image_ids = read_image_ids(data_root)
    rows = read_part_box_rows(data_root)
    regions = {image_id: np.array([box for _, box in parts])
               for image_id, parts in rows.items()}
    object_boxes = read_object_boxes(data_root)
    images_dir = osp.join(data_root, 'images')
    generator = torch.Generator().manual_seed(seed)
    with_windows = probe.is_daf and window > 0
    part_names = read_part_names(data_root)
    part_ids = {image_id: [part_id for part_id, _ in parts]
                for image_id, parts in rows.items()}
    tally = Tally()
    with torch.no_grad():
        for data in build_test_loader(cfg, data_root):
            data = model.data_preprocessor(data, False)
            inputs, samples = data['inputs'], data['data_samples']
            img_shape = tuple(inputs.shape[-2:])
            feat, image_logits, proposals, object_mask = probe.forward(inputs)
            if with_windows:
                batch_ids = [image_ids[osp.relpath(s.img_path, images_dir)]
                             for s in samples]
                ids = part_ids[batch_ids[0]]
                if any(part_ids[i] != ids for i in batch_ids):
                    raise ValueError(f'{data_root}: the images of a batch list '
                                     'different parts in parts/part_boxes.txt')
                batch_regions = torch.as_tensor(
                    np.stack([regions[i] for i in batch_ids]), dtype=inputs.dtype)
                labels = torch.tensor([int(s.gt_label) for s in samples])
                tally_windows(tally, model, inputs, batch_regions,
                              [part_names[i] for i in ids], labels, generator, window)
            for i, sample in enumerate(samples):
                image_id = image_ids[osp.relpath(sample.img_path, images_dir)]
                image_proposals = None if proposals is None else proposals[i:i + 1, :top_m]
                tally_image(tally, probe, feat[i:i + 1], image_logits[i],
                            int(sample.gt_label), regions[image_id], image_proposals,
                            img_shape, generator,
                            [part_names[p] for p in part_ids[image_id]])
                if object_mask is not None:
                    tally_object_mask(tally, object_mask[i, 0].numpy(),
                                      object_boxes[image_id], regions[image_id], img_shape)
    return tally.shares()


def summarise(per_run: Dict[str, Dict[str, float]]) -> Dict[str, List[float]]:
    """measure -> [mean, std] over the runs that have it."""
    names = sorted({name for shares in per_run.values() for name in shares})
    summary = {}
    for name in names:
        values = [shares[name] for shares in per_run.values() if name in shares]
        summary[name] = [float(np.mean(values)), float(np.std(values))]
    return summary


def print_summary(summary: Dict[str, List[float]], num_runs: int) -> None:
    print(f'top-1 % over {num_runs} run(s), mean ± std')
    print(f"  image: {summary['image'][0]:.1f} ± {summary['image'][1]:.1f}")
    for kind in KINDS:
        cells = [f'{m}: {summary[f"{kind}.{m}"][0]:.1f} ± {summary[f"{kind}.{m}"][1]:.1f}'
                 for m in ('each', 'mean', 'with_image') if f'{kind}.{m}' in summary]
        if cells:
            print(f'  {kind}: ' + ', '.join(cells))
    for name in ('proposals.each_hit', 'proposals.each_miss'):
        if name in summary:
            print(f'  {name}: {summary[name][0]:.1f} ± {summary[name][1]:.1f}')
    alone = [name for name in summary if name.startswith('part_alone.')]
    if alone:
        print('  one part region with the image: ' + ', '.join(
            f'{name[len("part_alone."):]} {summary[name][0]:.1f}' for name in alone))
    pooled = [name for name in summary if name.startswith('part_pooled.')]
    if pooled:
        print('  one part region pooled alone: ' + ', '.join(
            f'{name[len("part_pooled."):]} {summary[name][0]:.1f}' for name in pooled))
    windows = [name for name in summary if name.startswith('window.')]
    if windows:
        print('  student on the part windows: ' + ', '.join(
            f'{name[len("window."):]} {summary[name][0]:.1f}' for name in windows))
    landed = [name for name in summary if name.startswith('proposals.in.')]
    if landed:
        print('  proposals whose centre lies in each part: ' + ', '.join(
            f'{name[len("proposals.in."):]} {summary[name][0]:.1f}' for name in landed))
    mask = [name for name in summary if name.startswith('object_mask.')]
    if mask:
        print('  object mask (% of cells): ' + ', '.join(
            f'{name[len("object_mask."):]} {summary[name][0]:.1f}' for name in mask))
    for name in ('proposals.parts_hit', 'proposals_random.parts_hit'):
        if name in summary:
            print(f'  {name} (different parts per image): '
                  f'{summary[name][0]:.2f} ± {summary[name][1]:.2f}')


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    per_run = {run: probe_run(run, args.data_root, args.top_m, args.seed,
                              args.cfg_options, args.window)
               for run in args.runs}
    summary = summarise(per_run)
    print_summary(summary, len(per_run))
    result = dict(data_root=args.data_root, top_m=args.top_m, seed=args.seed,
                  window=args.window,
                  cfg_options=args.cfg_options, per_run=per_run, summary=summary)
    write_json(result, args.out)
    return result


if __name__ == '__main__':
    main()
