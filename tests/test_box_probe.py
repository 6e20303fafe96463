"""benchmarks/box_probe.py: the head on the last stage pooled in boxes."""
import importlib
import os.path as osp
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, config_path, drop_synthetic_pretrained

if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
box_probe = importlib.import_module('benchmarks.box_probe')


def test_parts_hit_counts_each_part_once():
    regions = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 44, 44]], dtype=float)
    # Centres (5, 5) and (6, 6) both in part 0, (25, 30) on part 1's edge,
    # (50, 50) in none: 2 different parts.
    boxes = np.array([[0, 0, 10, 10], [2, 2, 10, 10], [20, 25, 30, 35],
                      [45, 45, 55, 55]], dtype=float)
    assert box_probe.parts_hit(boxes, regions) == 2
    assert box_probe.parts_hit(boxes[3:], regions) == 0


def test_centres_in_regions_says_which_part_holds_each_box_centre():
    regions = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=np.float32)
    # Centres (5, 5), (25, 25), (40, 40) and (10, 10) on the first region's edge.
    boxes = np.array([[0, 0, 10, 10], [22, 22, 28, 28], [35, 35, 45, 45], [8, 8, 12, 12]],
                     dtype=np.float32)
    landed = box_probe.centres_in_regions(boxes, regions)
    assert landed.shape == (2, 4) and landed.dtype == bool
    assert landed.tolist() == [[True, False, False, True], [False, True, False, False]]


def test_tally_boxes_each_mean_and_with_image():
    tally = box_probe.Tally()
    # Box 0 says class 0 strongly, boxes 1 and 2 say class 1 weakly; label 1.
    box_logits = torch.tensor([[4., 0.], [0., 1.], [0., 1.]])
    image_logits = torch.tensor([0., 0.5])
    box_probe.tally_boxes(tally, 'parts', box_logits, image_logits, label=1)
    shares = tally.shares()
    assert shares['parts.each'] == pytest.approx(200 / 3)
    assert shares['parts.mean'] == 0.0  # mean (4/3, 2/3) -> class 0
    assert shares['parts.with_image'] == 0.0  # (4, 2.5) / 4 -> class 0
    box_probe.tally_boxes(tally, 'parts', box_logits[1:], image_logits, label=1)
    shares = tally.shares()
    assert shares['parts.each'] == pytest.approx(400 / 5)
    assert shares['parts.mean'] == shares['parts.with_image'] == 50.0


def test_counts_are_averaged_per_image():
    tally = box_probe.Tally()
    tally.add_count('proposals.parts_hit', 1)
    tally.add_count('proposals.parts_hit', 2)
    assert tally.shares() == {'proposals.parts_hit': 1.5}


def test_summarise_mean_and_population_std():
    summary = box_probe.summarise({'a': {'image': 50.0, 'parts.each': 40.0},
                                   'b': {'image': 60.0}})
    assert summary == {'image': [55.0, 5.0], 'parts.each': [40.0, 0.0]}


def test_read_part_names_names_the_bad_line(tmp_path):
    (tmp_path / 'parts').mkdir()
    (tmp_path / 'parts' / 'parts.txt').write_text('1 beak\n2\n')
    with pytest.raises(ValueError, match=r'parts.txt:2: expected "<part_id> <name>"'):
        box_probe.read_part_names(str(tmp_path))


def test_run_files_names_the_unfinished_run(tmp_path):
    with pytest.raises(FileNotFoundError, match='last_checkpoint not found'):
        box_probe.run_files(str(tmp_path))


def test_top_m_must_be_positive_and_the_window_not_negative(capsys):
    with pytest.raises(SystemExit):
        box_probe.parse_args(['run', '--data-root', 'd', '--top-m', '0'])
    assert '--top-m must be >= 1, got 0' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        box_probe.parse_args(['run', '--data-root', 'd', '--window', '-1'])
    assert '--window must be >= 0, got -1' in capsys.readouterr().err


def _student_run(tmp_path, data_root: str) -> str:
    """A work dir holding the + SPPN + LHM config (4 classes, random weights)
    and a checkpoint of it, as a finished learning run leaves it."""
    from mmpretrain.registry import MODELS

    from benchmarks.common import load_config, model_cfg_with_preprocessor
    cfg = load_config(config_path('ablation', 'r18_sppn_lhm_synthetic.py'))
    drop_synthetic_pretrained(cfg.model)
    cfg.merge_from_dict({'model.head.num_classes': 4,
                         'data_preprocessor.num_classes': 4,
                         'test_dataloader.dataset.data_root': data_root})
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    cfg.dump(str(run_dir / 'r18_sppn_lhm_synthetic.py'))
    torch.manual_seed(0)
    model = MODELS.build(model_cfg_with_preprocessor(cfg))
    torch.save(dict(state_dict=model.state_dict()), run_dir / 'epoch_1.pth')
    (run_dir / 'last_checkpoint').write_text(str(run_dir / 'epoch_1.pth'))
    return str(run_dir)


def test_probe_agrees_with_the_models_own_student_predictions(tmp_path, tiny_cub_root):
    # The probe's proposals 'with_image' is what part_pool.predict averages,
    # and its 'image' the head on the whole image: both must equal the
    # student stream's top-1 that the model itself predicts.
    from benchmarks.common import build_test_loader, load_trained_model
    from benchmarks.learning_eval import predicted_samples
    run_dir = _student_run(tmp_path, tiny_cub_root)
    shares = box_probe.probe_run(run_dir, tiny_cub_root, top_m=3, seed=0)

    files = box_probe.run_files(run_dir)
    cfg, model = load_trained_model(files['config'], files['checkpoint'])
    loader = build_test_loader(cfg, tiny_cub_root)

    def student_top1() -> float:
        right = [int(s.student_score.argmax()) == int(s.gt_label)
                 for s in predicted_samples(model, loader)]
        return 100.0 * np.mean(right)

    assert model.part_pool.predict and model.part_pool.top_m == 3
    assert shares['proposals.with_image'] == pytest.approx(student_top1())
    model.part_pool.predict = False
    assert shares['image'] == pytest.approx(student_top1())
    num_images = 8  # 4 classes x 2 test images
    assert set(shares) >= {f'{kind}.{m}' for kind in box_probe.KINDS
                           for m in ('each', 'mean', 'with_image')}
    assert all(round(v * num_images / 100, 6).is_integer()
               for k, v in shares.items() if k.endswith(('.mean', '.with_image')))
    assert 0 <= shares['proposals.parts_hit'] <= 3
    # The heatmap's object mask: 8 images x 64 cells of the 8 x 8 grid.
    assert {k for k in shares if k.startswith('object_mask.')} == {
        'object_mask.area', 'object_mask.precision', 'object_mask.recall',
        'object_mask.parts_in'}
    assert round(shares['object_mask.area'] * num_images * 64 / 100, 6).is_integer()
    # The config ranks by 24 px windows: one window share per part, and the
    # random windows'; 8 images x 5 parts of the synthetic generator.
    names = box_probe.read_part_names(tiny_cub_root)
    assert sorted(names.values()) == ['beak', 'crown', 'eye', 'tail', 'wing']
    assert {k for k in shares if k.startswith('window.')} == \
        {f'window.{n}' for n in names.values()} | {'window.random'}
    assert all(round(shares[f'window.{n}'] * num_images / 100, 6).is_integer()
               for n in names.values())
    # Each part region alone with the image: one share per part name.
    assert {k for k in shares if k.startswith('part_alone.')} == \
        {f'part_alone.{n}' for n in names.values()}
    assert all(round(shares[f'part_alone.{n}'] * num_images / 100, 6).is_integer()
               for n in names.values())
    assert {k for k in shares if k.startswith('part_pooled.')} == \
        {f'part_pooled.{n}' for n in names.values()}
    no_windows = box_probe.probe_run(run_dir, tiny_cub_root, top_m=3, seed=0, window=0)
    assert not any(k.startswith('window.') for k in no_windows)
    assert no_windows['proposals.with_image'] == shares['proposals.with_image']
    assert osp.isfile(files['checkpoint'])


class _OneHotBoxes:
    """A stand-in probe: each box's logits are 3 on the class given by its
    left edge (x1 mod K), 0 elsewhere."""

    def box_logits(self, feat, boxes, img_shape):
        logits = torch.zeros(*boxes.shape[:2], 3)
        for m, box in enumerate(boxes[0]):
            logits[0, m, int(box[0]) % 3] = 3.0
        return logits


def beak_and_tail_shares(image_logits: torch.Tensor) -> dict:
    """The shares of one image of label 1 whose beak region's logits say
    class 1 and whose tail region's say class 2 (:class:`_OneHotBoxes`)."""
    tally = box_probe.Tally()
    regions = np.array([[1.0, 0.0, 5.0, 4.0], [2.0, 0.0, 6.0, 4.0]])  # class 1, class 2
    box_probe.tally_image(tally, _OneHotBoxes(), torch.zeros(1, 4, 2, 2), image_logits,
                          label=1, regions=regions, proposals=None, img_shape=(8, 8),
                          generator=torch.Generator().manual_seed(0),
                          region_names=['beak', 'tail'])
    return tally.shares()


def test_each_part_alone_is_averaged_with_the_image_by_name():
    shares = beak_and_tail_shares(torch.tensor([1.0, 0.0, 0.0]))
    # beak: (image + [0, 3, 0]) / 2 picks class 1, right; tail picks class 2.
    assert shares['part_alone.beak'] == 100.0 and shares['part_alone.tail'] == 0.0
    # Both regions with the image: [1, 3, 3] / 3, a tie that argmax gives to class 1.
    assert shares['parts.with_image'] == 100.0


def test_each_part_region_is_also_classified_alone_without_the_image():
    # The image alone says class 0, strongly enough to outvote one region.
    shares = beak_and_tail_shares(torch.tensor([5.0, 0.0, 0.0]))
    # Pooled alone the beak region's [0, 3, 0] picks the label; the tail's does not.
    assert shares['part_pooled.beak'] == 100.0 and shares['part_pooled.tail'] == 0.0
    # With the image, (5 + 0) / 2 > 3 / 2: class 0 wins, wrong for both.
    assert shares['part_alone.beak'] == 0.0 and shares['part_alone.tail'] == 0.0


def test_object_mask_against_the_object_box_and_the_parts():
    # 4 x 4 grid on a 32 px image: cell centres at 4, 12, 20, 28 px.
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, 0:2] = True  # centres (4, 4), (12, 4)
    mask[3, 3] = True  # centre (28, 28), off the object
    object_box = np.array([0.0, 0.0, 16.0, 16.0])  # holds the top-left 2 x 2 cells
    # Part centres (6, 6) in cell (0, 0), in the mask; (12, 12) in cell
    # (1, 1), not in the mask.
    regions = np.array([[4.0, 4.0, 8.0, 8.0], [10.0, 10.0, 14.0, 14.0]])
    tally = box_probe.Tally()
    box_probe.tally_object_mask(tally, mask, object_box, regions, (32, 32))
    shares = tally.shares()
    assert shares['object_mask.area'] == pytest.approx(100 * 3 / 16)
    assert shares['object_mask.precision'] == pytest.approx(100 * 2 / 3)
    assert shares['object_mask.recall'] == pytest.approx(100 * 2 / 4)
    assert shares['object_mask.parts_in'] == 50.0


def test_cell_centres_are_row_major_xy():
    centres = box_probe.cell_centres((2, 3), (16, 24))
    np.testing.assert_allclose(centres, [[4, 4], [12, 4], [20, 4],
                                         [4, 12], [12, 12], [20, 12]])


def test_read_object_boxes_converts_xywh_and_names_the_bad_line(tmp_path):
    from benchmarks.common import read_object_boxes
    (tmp_path / 'bounding_boxes.txt').write_text('1 2.0 3.0 10.0 20.0\n2 1 1 1\n')
    with pytest.raises(ValueError, match=r'bounding_boxes.txt:2: expected <image_id> '):
        read_object_boxes(str(tmp_path))
    (tmp_path / 'bounding_boxes.txt').write_text('1 2.0 3.0 10.0 20.0\n')
    boxes = read_object_boxes(str(tmp_path))
    np.testing.assert_allclose(boxes[1], [2.0, 3.0, 12.0, 23.0])
