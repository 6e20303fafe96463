"""Does the SPPN rank anchors the way its training target does?

For every anchor of the first ``--max-images`` test images of a synthetic set
(fixed anchors, ``SPPNHead(regress_boxes=False)``), the script builds the
anchor's single-box part image (the box sharp, the rest blurred; cut to the
S x S window around the box under ``rank_target=dict(type='WindowRankTarget',
crop=S)``), takes the student's ground-truth cross entropy on it -- the
quantity the ranking loss orders -- and the SPPN's score of the anchor. Per
anchor shape (level, ratio, scale) it prints:

- ``random``: the share of anchors of that shape that contain the centre of a
  part region (``parts/part_boxes.txt``): the chance level of a box that size;
- ``oracle4``: the same share for the 4 anchors of that shape whose part images
  have the lowest cross entropy, per image: what a perfect ranker would pick;
- ``sppn4``: the same for the 4 anchors the SPPN scores highest;
- ``auc_ce`` and ``auc_score``: the probability that an anchor containing a
  part has a lower cross entropy (a higher score) than one that does not
  (0.5: no relation);
- ``mean_ce``: the mean cross entropy of the shape's part images;
- ``score_std``: the standard deviation of the SPPN's scores within the shape
  and image (0: the scores do not depend on the image content).

It also prints ``score_tower_active``, the share of the score tower's final
ReLU outputs above zero over all anchors and images: 0 means a dead tower
whose scores are its score conv's biases.

With ranked windows (``WindowRankTarget``, ``rank_target.crop`` S) it also
compares the two kinds of cross entropy the ranking loss can order, for the
SPPN's 4 proposals and ``--samples`` random candidate anchors per image: their
means on whole single-box part images and on S x S windows, and how often a
proposal has the lower cross entropy than a sample when both are whole
images, both windows (what ``WindowRankTarget`` orders), or ``mixed``
(proposals whole, samples windows: the removed ``proposal_rank_ce=
'part_image'`` with ``single_box_crop``, docs/benchmarks_history.md).

``oracle4`` far above ``random`` says the ranking target carries where the
parts are; ``sppn4`` near ``oracle4`` says the SPPN learned it. Usage::

    python benchmarks/anchor_ranking.py work_dirs/demo/daf_r18_synthetic.py \\
        work_dirs/demo/epoch_10.pth --data-root data/synthetic_fgvc
"""
import argparse
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
from benchmarks.common import (  # noqa: E402
    build_test_loader,
    check_out_path,
    load_trained_model,
    read_image_ids,
    read_part_boxes,
    write_json,
)
from benchmarks.learning_metrics import boxes_containing_a_part  # noqa: E402

TOP = 4


def rank_auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """P(a positive value > a negative one), ties counted half; nan if a set
    is empty (the Mann-Whitney U statistic over the pair count)."""
    if len(positives) == 0 or len(negatives) == 0:
        return float('nan')
    greater = (positives[:, None] > negatives[None, :]).sum()
    ties = (positives[:, None] == negatives[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(positives) * len(negatives)))


def top_share(hits: np.ndarray, values: np.ndarray, top: int) -> float:
    """Share of hits among the ``top`` largest ``values``."""
    return float(hits[np.argsort(-values, kind='stable')[:top]].mean())


def summarise_shapes(records: Sequence[Dict[str, np.ndarray]]) -> Dict[str, dict]:
    """Per anchor shape: random, oracle4, sppn4, auc_ce, auc_score, mean_ce,
    score_std.

    Args:
        records: one dict per image with (M,) arrays ``shape`` (anchor shape
            label), ``hit`` (bool), ``ce`` and ``score``.
    """
    shapes = list(dict.fromkeys(str(s) for r in records for s in r['shape']))
    summary = {}
    for shape in shapes:
        rows = dict(random=[], oracle4=[], sppn4=[], auc_ce=[], auc_score=[], mean_ce=[],
                    score_std=[])
        for r in records:
            keep = r['shape'] == shape
            hit, ce, score = r['hit'][keep], r['ce'][keep], r['score'][keep]
            rows['random'].append(hit.mean())
            rows['oracle4'].append(top_share(hit, -ce, TOP))
            rows['sppn4'].append(top_share(hit, score, TOP))
            rows['auc_ce'].append(rank_auc(-ce[hit], -ce[~hit]))
            rows['auc_score'].append(rank_auc(score[hit], score[~hit]))
            rows['mean_ce'].append(ce.mean())
            rows['score_std'].append(score.std())
        summary[shape] = {k: float(np.nanmean(v)) if not np.all(np.isnan(v)) else None
                          for k, v in rows.items()}
    return summary


def proposal_above_sample(proposal_ce: np.ndarray, sample_ce: np.ndarray) -> float:
    """Share of (proposal, sample) pairs of the same image where the
    proposal has the lower cross entropy (the ranking loss then wants it
    scored higher); ties count half.

    Args:
        proposal_ce (np.ndarray): (I, N) per image.
        sample_ce (np.ndarray): (I, K) per image.
    """
    lower = proposal_ce[:, :, None] < sample_ce[:, None, :]
    ties = proposal_ce[:, :, None] == sample_ce[:, None, :]
    return float((lower + 0.5 * ties).mean())


def summarise_rank_targets(ce: Dict[str, np.ndarray]) -> dict:
    """Means of the four cross entropies and the proposal-above-sample
    shares of the three ways to pair them.

    Args:
        ce: (I, N) ``proposal_whole``, ``proposal_window`` and (I, K)
            ``sample_whole``, ``sample_window``.
    """
    summary = {f'mean_{k}': float(v.mean()) for k, v in ce.items()}
    summary['above_whole'] = proposal_above_sample(ce['proposal_whole'],
                                                   ce['sample_whole'])
    summary['above_window'] = proposal_above_sample(ce['proposal_window'],
                                                    ce['sample_window'])
    summary['above_mixed'] = proposal_above_sample(ce['proposal_whole'],
                                                   ce['sample_window'])
    return summary


def rank_window(model) -> int:
    """S, the window side of the model's ``WindowRankTarget`` (its ``crop``);
    0 for a ranking target that reads whole part images
    (``PartImageRankTarget``)."""
    return int(getattr(model.rank_target, 'crop', 0))


def single_box_ce(model, inputs, boxes, labels, crop: int):
    """(B, M) student cross entropies of the (B, M, 4) boxes' single-box part
    images (only the box sharp), each cut to the ``crop`` x ``crop`` window
    around its box when ``crop`` > 0 (as ``WindowRankTarget`` ranks the
    boxes), whole with 0 (as ``PartImageRankTarget`` ranks the sampled
    anchors); the student normalised as for the ranking targets."""
    from mmdaf.models.utils.ranking_batch import per_box_cross_entropy
    generator = model.part_image_generator
    if crop > 0:
        images = generator.single_box_windows(inputs, boxes, crop)
    else:
        images = generator.single_box_images(inputs, boxes)
    return per_box_cross_entropy(model.classify_part_images(images), labels,
                                 boxes.shape[1])


def both_kinds_of_ce(model, inputs, boxes, label) -> tuple:
    """(whole single-box part image, window) cross entropies of ``boxes``."""
    whole = single_box_ce(model, inputs, boxes, label, crop=0)[0]
    window = single_box_ce(model, inputs, boxes, label, crop=rank_window(model))[0]
    return whole.numpy(), window.numpy()


def measure(config_file: str, checkpoint: str, data_root: str, max_images: int,
            num_samples: int = 16) -> dict:
    import torch

    cfg, model = load_trained_model(config_file, checkpoint)
    head = model.sppn_head
    if head is None or head.regress_boxes:
        raise ValueError(f'{config_file}: needs an SPPN with fixed anchors '
                         '(sppn_head.regress_boxes=False)')
    loader = build_test_loader(cfg, data_root, batch_size=1)
    regions = read_part_boxes(data_root)
    image_ids = read_image_ids(data_root)
    images_dir = osp.join(data_root, 'images')

    records = []
    active = tower_values = 0
    targets = dict(proposal_whole=[], proposal_window=[], sample_whole=[],
                   sample_window=[])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for index, data in enumerate(loader):
            if index >= max_images:
                break
            data = model.data_preprocessor(data, False)
            inputs, sample = data['inputs'], data['data_samples'][0]
            height, width = inputs.shape[-2:]
            student = model.run_student(inputs)
            sppn_feats = model.sppn_neck(student.feats)
            anchors, scores, deltas = head.dense_scores(sppn_feats)
            towers = [head.score_tower(feat) for feat in sppn_feats]
            active += sum(int((tower > 0).sum()) for tower in towers)
            tower_values += sum(tower.numel() for tower in towers)
            # Fixed anchors: zero deltas, so this only clips, as the head does.
            boxes = head.bbox_coder.decode(anchors, deltas[0], max_shape=(height, width))
            label = sample.gt_label.reshape(1)
            ce = torch.cat([
                single_box_ce(model, inputs, chunk[None], label, rank_window(model))[0]
                for chunk in boxes.split(128)])
            sizes = [(-(-height // s_h), -(-width // s_w))
                     for s_w, s_h in head.prior_generator.strides]
            shape_labels = np.concatenate([
                np.tile(np.array(names), h * w)
                for names, (h, w) in zip(shape_names(head), sizes)])
            image_id = image_ids[osp.relpath(sample.img_path, images_dir)]
            records.append(dict(
                shape=shape_labels, ce=ce.numpy(), score=scores[0].numpy(),
                hit=boxes_containing_a_part(boxes.numpy(), regions[image_id])))
            if rank_window(model) > 0:
                samples, _ = head.sample_anchors(sppn_feats, (height, width),
                                                 student.object_mask, num_samples,
                                                 generator=generator)
                for kind, kind_boxes in (('proposal', student.boxes), ('sample', samples)):
                    whole, window = both_kinds_of_ce(model, inputs, kind_boxes, label)
                    targets[f'{kind}_whole'].append(whole)
                    targets[f'{kind}_window'].append(window)
    result = dict(config=config_file, checkpoint=checkpoint, data_root=data_root,
                  num_images=len(records), shapes=summarise_shapes(records),
                  score_tower_active=active / max(tower_values, 1))
    if targets['sample_whole']:
        result['rank_targets'] = summarise_rank_targets(
            {k: np.stack(v) for k, v in targets.items()})
    return result


def shape_names(head) -> List[List[str]]:
    """Per level, the label of each base anchor in mmdet's order (ratio-major):
    ``s<stride> r<ratio> <side>px``, side = the square-equivalent side."""
    generator = head.prior_generator
    names = []
    for level, base in enumerate(generator.base_anchors):
        stride = generator.strides[level][0]
        level_names = []
        for anchor_index, anchor in enumerate(base.tolist()):
            ratio = generator.ratios[anchor_index // len(generator.scales)]
            side = ((anchor[2] - anchor[0]) * (anchor[3] - anchor[1]))**0.5
            level_names.append(f's{stride} r{float(ratio):g} {side:.0f}px')
        names.append(level_names)
    return names


def _cell(value: Optional[float], width: int) -> str:
    return f'{value:{width}.3f}' if value is not None else f"{'-':>{width}}"


def format_summary(result: dict) -> str:
    lines = [f"{result['num_images']} test images; share of anchors containing a part",
             f"{'anchor':<18}{'random':>8}{'oracle4':>9}{'sppn4':>8}{'auc_ce':>8}"
             f"{'auc_score':>10}{'mean_ce':>9}{'score_std':>10}"]
    for shape, row in result['shapes'].items():
        cells = [_cell(row[key], width) for key, width in
                 (('random', 8), ('oracle4', 9), ('sppn4', 8), ('auc_ce', 8),
                  ('auc_score', 10), ('mean_ce', 9), ('score_std', 10))]
        lines.append(f'{shape:<18}' + ''.join(cells))
    if 'score_tower_active' in result:
        lines.append(f"score tower ReLU outputs above zero: "
                     f"{100 * result['score_tower_active']:.1f} %")
    targets = result.get('rank_targets')
    if targets:
        lines.append(
            'mean cross entropy, proposals: whole {mean_proposal_whole:.3f}, window '
            '{mean_proposal_window:.3f}; samples: whole {mean_sample_whole:.3f}, '
            'window {mean_sample_window:.3f}'.format(**targets))
        lines.append(
            'proposal below a sample in cross entropy: both whole {above_whole:.3f}, '
            'both windows {above_window:.3f}, mixed {above_mixed:.3f}'.format(**targets))
    return '\n'.join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='the config the run dumped into its work dir')
    parser.add_argument('checkpoint')
    parser.add_argument('--data-root', required=True,
                        help='a synthetic set (it has parts/part_boxes.txt)')
    parser.add_argument('--max-images', type=int, default=60)
    parser.add_argument('--samples', type=int, default=16,
                        help='random candidate anchors per image for the '
                        'proposal-against-sample comparison')
    parser.add_argument('--out', help='write the result as JSON here')
    args = parser.parse_args(argv)
    if args.max_images < 1:
        parser.error(f'--max-images must be >= 1, got {args.max_images}')
    if args.samples < 1:
        parser.error(f'--samples must be >= 1, got {args.samples}')
    check_out_path(parser, args.out)
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    result = measure(args.config, args.checkpoint, args.data_root, args.max_images,
                     args.samples)
    print(format_summary(result))
    write_json(result, args.out)
    return result


if __name__ == '__main__':
    main()
