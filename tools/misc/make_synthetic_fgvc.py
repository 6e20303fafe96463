"""Write the synthetic fine-grained set in CUB-200-2011's layout.

Example:
    python tools/misc/make_synthetic_fgvc.py --out data/synthetic_fgvc \\
        --num-classes 20 --train-per-class 30 --test-per-class 20 --img-size 128
    # the generic pretraining set (12 classes: body hue x facing)
    python tools/misc/make_synthetic_fgvc.py --generic --out data/synthetic_generic \\
        --train-per-class 100 --test-per-class 10 --img-size 64 --part-scale 1.6 \\
        --seed 1000
"""
import argparse
import os
import os.path as osp
from typing import Dict, List, Optional

from mmdaf.datasets.synthetic_fgvc import (
    MAX_NUM_CLASSES,
    make_synthetic_fgvc,
    make_synthetic_generic,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description='Write a synthetic fine-grained image set that '
        "mmpretrain's CUB dataset reads.")
    parser.add_argument('--out', required=True, help='root of the set')
    parser.add_argument('--num-classes', type=int, default=20,
                        help=f'number of classes, 2 to {MAX_NUM_CLASSES}')
    parser.add_argument('--train-per-class', type=int, default=30)
    parser.add_argument('--test-per-class', type=int, default=20)
    parser.add_argument('--img-size', type=int, default=128,
                        help='side of the square images in pixels (>= 32)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-workers', type=int, default=None,
                        help='drawing processes (default: min(2, CPUs))')
    parser.add_argument('--jpeg-quality', type=int, default=90)
    parser.add_argument('--part-scale', type=float, default=1.0,
                        help='enlarge the informative parts by this factor '
                        '(0.5-3; 1.6 makes them about 1/4 of the bird, like CUB)')
    parser.add_argument('--plain-clutter', action='store_true',
                        help='clutter without part-like shapes and part colours, '
                        'so that a part seen out of context says what it is')
    parser.add_argument('--generic', action='store_true',
                        help='write the generic pretraining set instead (12 '
                        'classes: body hue x facing; --num-classes is ignored)')
    parser.add_argument('--force', action='store_true',
                        help='replace the set in a non-empty --out')
    return parser


def main(argv: Optional[List[str]] = None) -> Dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.generic and args.plain_clutter:
        parser.error('--plain-clutter applies to the fine-grained set, not to '
                     '--generic (the pretraining set keeps its clutter)')
    if osp.isdir(args.out) and os.listdir(args.out) and not args.force:
        parser.error(f'--out {args.out} exists and is not empty; '
                     'pass --force to overwrite it')
    try:
        common = dict(
            train_per_class=args.train_per_class,
            test_per_class=args.test_per_class,
            img_size=args.img_size,
            seed=args.seed,
            num_workers=args.num_workers,
            jpeg_quality=args.jpeg_quality,
            overwrite=args.force,
            part_scale=args.part_scale)
        if args.generic:
            summary = make_synthetic_generic(args.out, **common)
        else:
            summary = make_synthetic_fgvc(args.out, num_classes=args.num_classes,
                                          part_like_clutter=not args.plain_clutter,
                                          **common)
    except (ValueError, TypeError, OSError) as error:
        parser.error(str(error))
    print(f"wrote {summary['num_images']} images ({summary['num_train']} train, "
          f"{summary['num_test']} test, {summary['num_classes']} classes, "
          f"{summary['img_size']} px) to {summary['data_root']} in "
          f"{summary['elapsed_s']:.1f} s: {summary['images_per_s']:.0f} images/s "
          f"with {summary['num_workers']} workers")
    return summary


if __name__ == '__main__':
    main()
