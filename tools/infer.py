"""Classify images with a trained model and draw where it looked.

Usage:
    python tools/infer.py CONFIG CHECKPOINT INPUT [INPUT ...] [--out-dir DIR]
        [--topk K] [--device cpu] [--alpha A] [--min-side PX]
        [--cfg-options KEY=VALUE ...]

INPUT: image files and/or folders (searched recursively). For each image the
top-k classes and their scores (softmax of the model's prediction, so they sum
to at most 1) are printed; ``--out-dir`` (default ``./infer_out``) receives
``predictions.json`` and one PNG per image with the location heatmap overlaid
and the part boxes drawn with their rank and score. Images whose shorter side
is below ``--min-side`` (default 384) are upscaled by an integer factor before
anything is drawn, so the labels do not cover a small image; the JSON's boxes
stay in the image's own pixels.

The picture is drawn on the original image when the config's test pipeline
only resizes and centre-crops (boxes and heatmap mapped back), else on the
network input image; ``boxes_frame`` in the JSON says which
(``original`` / ``network_input``), and ``part_boxes`` are in that frame.
"""
import argparse
import json
import os
import os.path as osp
from typing import Dict, List

from mmengine.config import DictAction

import mmdaf  # noqa: F401  (registers mmdaf components, allow-lists checkpoints)
from mmdaf.apis import DAFInferencer
from mmdaf.apis.part_drawing import DEFAULT_MIN_SIDE


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Classify images, draw part boxes')
    parser.add_argument('config', help='model config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('inputs', nargs='+', help='image files and/or folders')
    parser.add_argument('--out-dir', default='infer_out',
                        help='folder for predictions.json and the pictures')
    parser.add_argument('--topk', type=int, default=5, help='classes per image')
    parser.add_argument('--device', default='cpu', help='e.g. cpu, cuda, cuda:1')
    parser.add_argument('--alpha', type=float, default=0.5,
                        help='heatmap opacity at heat 1, in [0, 1]')
    parser.add_argument('--min-side', type=int, default=DEFAULT_MIN_SIDE,
                        help='upscale smaller pictures until their shorter side is at '
                        'least this many pixels (0: draw at the image size)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings in the config, key=value pairs')
    return parser.parse_args()


def unique_picture_name(path: str, used: set) -> str:
    """``<stem>.png``, or ``<stem>_<n>.png`` when that name is taken."""
    stem = osp.splitext(osp.basename(path))[0]
    name, index = f'{stem}.png', 1
    while name in used:
        name, index = f'{stem}_{index}.png', index + 1
    used.add(name)
    return name


def json_record(result: Dict, picture: str) -> Dict:
    """The JSON-serialisable part of one inference result."""
    on_original = result['input_to_original'] is not None
    boxes = result['part_boxes_original'] if on_original else result['part_boxes']
    return dict(
        path=result['path'],
        topk=result['topk'],
        part_boxes=None if boxes is None else boxes.round(2).tolist(),
        part_scores=(None if result['part_scores'] is None else
                     [round(float(s), 4) for s in result['part_scores']]),
        boxes_frame='original' if on_original else 'network_input',
        visualization=picture,
    )


def main() -> None:
    args = parse_args()
    inferencer = DAFInferencer(args.config, args.checkpoint, device=args.device,
                               cfg_options=args.cfg_options)
    results = inferencer(args.inputs, topk=args.topk)

    os.makedirs(args.out_dir, exist_ok=True)
    records: List[Dict] = []
    used_names: set = set()
    for result in results:
        name = unique_picture_name(result['path'], used_names)
        picture = osp.join(args.out_dir, name)
        inferencer.visualize(result, out_file=picture, alpha=args.alpha,
                             min_side=args.min_side)
        records.append(json_record(result, picture))
        ranked = ', '.join(f'{item["class_name"]} ({item["score"]:.4f})'
                           for item in result['topk'])
        print(f'{result["path"]}: {ranked}')

    json_path = osp.join(args.out_dir, 'predictions.json')
    with open(json_path, 'w') as file:
        json.dump(records, file, indent=2)
    print(f'wrote {json_path} and {len(records)} pictures')


if __name__ == '__main__':
    main()
