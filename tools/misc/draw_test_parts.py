"""Draw where a trained DAF-net looks on a few test images of a CUB-layout root.

Usage:
    python tools/misc/draw_test_parts.py CONFIG CHECKPOINT --data-root ROOT
        [--out-dir DIR] [--num-images K] [--device cpu] [--min-side PX]
        [--alpha A]

Takes K images of ROOT's test split (the config's test dataset, with its
``data_root`` set to ROOT): the first test image of each class in turn, then,
when K exceeds the number of classes, the next ones in file order. Each picture
(``DIR/<index>_<image name>.png``) shows the location heatmap, the part boxes
labelled ``rank:score`` and, in a band above the image, the predicted class
with its score and the true class. Small images are upscaled before drawing
(``--min-side``, default 384). The last line printed is the folder.
"""
import argparse
import os
import os.path as osp
from typing import List, Sequence

from mmpretrain.registry import DATASETS

import mmdaf  # noqa: F401  (registers mmdaf components, allow-lists checkpoints)
from mmdaf.apis import DAFInferencer
from mmdaf.apis.part_drawing import DEFAULT_MIN_SIDE


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Draw part boxes and heatmap on a few test images')
    parser.add_argument('config', help='model config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--data-root', required=True,
                        help='CUB_200_2011-layout root whose test split is drawn')
    parser.add_argument('--out-dir', default='part_pictures',
                        help='folder for the pictures')
    parser.add_argument('--num-images', type=int, default=6,
                        help='how many test images to draw')
    parser.add_argument('--device', default='cpu', help='e.g. cpu, cuda, cuda:1')
    parser.add_argument('--min-side', type=int, default=DEFAULT_MIN_SIDE,
                        help='upscale smaller pictures until their shorter side is at '
                        'least this many pixels (0: draw at the image size)')
    parser.add_argument('--alpha', type=float, default=0.5,
                        help='heatmap opacity at heat 1, in [0, 1]')
    args = parser.parse_args()
    if args.num_images < 1:
        parser.error(f'--num-images must be at least 1, got {args.num_images}')
    return args


def pick_one_per_class(labels: Sequence[int], num_images: int) -> List[int]:
    """Indices of ``num_images`` samples, covering as many classes as possible.

    Round-robin over the classes in order of first appearance, each class's
    samples in file order, so the choice is the same on every run.

    Args:
        labels (Sequence[int]): class index of every sample.
        num_images (int): how many indices to return (fewer if there are
            fewer samples).

    Returns:
        list[int]: sample indices, one per class first.
    """
    by_class: dict = {}
    for index, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(index)
    queues = list(by_class.values())
    picked: List[int] = []
    depth = 0
    while len(picked) < min(num_images, len(labels)):
        for queue in queues:
            if depth < len(queue) and len(picked) < num_images:
                picked.append(queue[depth])
        depth += 1
    return picked


def main() -> None:
    args = parse_args()
    inferencer = DAFInferencer(
        args.config, args.checkpoint, device=args.device,
        cfg_options={'test_dataloader.dataset.data_root': args.data_root})
    dataset = DATASETS.build(inferencer.cfg.test_dataloader.dataset)
    infos = [dataset.get_data_info(index) for index in range(len(dataset))]
    if not infos:
        raise ValueError(f'the test split of {args.data_root!r} has no images')
    chosen = pick_one_per_class([info['gt_label'] for info in infos], args.num_images)

    os.makedirs(args.out_dir, exist_ok=True)
    for number, index in enumerate(chosen):
        path, true_label = infos[index]['img_path'], int(infos[index]['gt_label'])
        result = inferencer.predict_one(path, topk=1)
        best = result['topk'][0]
        # Both names from one list, so a right prediction reads the same twice.
        names = inferencer.class_names(len(result['pred_score']))
        verdict = 'right' if best['class_index'] == true_label else 'wrong'
        caption = [f'pred: {best["class_name"]} ({best["score"]:.2f}, {verdict})',
                   f'true: {names[true_label]}']
        stem = osp.splitext(osp.basename(path))[0]
        out_file = osp.join(args.out_dir, f'{number:02d}_{stem}.png')
        inferencer.visualize(result, out_file=out_file, alpha=args.alpha,
                             min_side=args.min_side, caption=caption)
        print(f'{osp.basename(out_file)}: true {names[true_label]}, '
              f'predicted {best["class_name"]} ({best["score"]:.4f})')
    print(f'part pictures ({len(chosen)}): {osp.abspath(args.out_dir)}')


if __name__ == '__main__':
    main()
