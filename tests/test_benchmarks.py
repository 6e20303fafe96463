"""benchmarks/speed.py and benchmarks/learning.py and their helper modules:
hand-computed values and a tiny end-to-end speed run whose JSON must be
self-consistent."""
import argparse
import importlib
import json
import os
import os.path as osp
import pathlib
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, config_path


def _import(name: str):
    """``benchmarks/<name>.py`` as the module ``benchmarks.<name>`` (the
    scripts and their helpers import each other from the repository root)."""
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    return importlib.import_module(f'benchmarks.{name}')


common = _import('common')
speed = _import('speed')
speed_flops = _import('speed_flops')
speed_timing = _import('speed_timing')
learning = _import('learning')
learning_eval = _import('learning_eval')
learning_metrics = _import('learning_metrics')
learning_presets = _import('learning_presets')
learning_report = _import('learning_report')
learning_runs = _import('learning_runs')
learning_tables = _import('learning_tables')


# ----------------------------------------------------------------------------
# learning.py: part hit rate, accuracies
# ----------------------------------------------------------------------------
REGIONS = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], dtype=float)


def test_box_centre_hits_hand_made_boxes():
    boxes = np.array([
        [2, 2, 8, 8],        # centre (5, 5): in region 0
        [10, 10, 20, 20],    # centre (15, 15): between the regions
        [5, 5, 15, 15],      # centre (10, 10): on region 0's corner, counts
        [24, 26, 26, 30],    # centre (25, 28): in region 1
        [-10, 0, 10, 10],    # centre (0, 5): on region 0's left edge
        [30, 30, 32, 32],    # centre (31, 31): just outside region 1
    ], dtype=float)
    hits = learning_metrics.box_centre_hits(boxes, REGIONS)
    assert hits.tolist() == [True, False, True, True, True, False]


def test_boxes_containing_a_part_uses_the_part_centres():
    # Part centres: (5, 5) and (25, 25).
    boxes = np.array([
        [0, 0, 40, 40],      # contains both centres, its own centre (20, 20) misses
        [4, 4, 6, 6],        # contains (5, 5)
        [6, 6, 19, 19],      # overlaps region 0 but not its centre
        [25, 25, 30, 30],    # (25, 25) on its corner counts
    ], dtype=float)
    contains = learning_metrics.boxes_containing_a_part(boxes, REGIONS)
    assert contains.tolist() == [True, True, False, True]
    assert learning_metrics.box_centre_hits(boxes[:1], REGIONS).tolist() == [True]  # (20, 20)


def test_hit_rates_proposals_and_random_boxes_of_the_same_size():
    # Image 40 x 40. A 40 x 40 box can only sit at (0, 0): centre (20, 20),
    # which lies in region 1 (boundary included), so its random copies always
    # hit; a 0 x 0 box is a uniformly random point: P(hit) = (100 + 100) / 1600.
    boxes = {1: np.array([[0, 0, 40, 40], [2, 2, 8, 8], [12, 12, 14, 14], [3, 3, 3, 3]],
                         dtype=float)}
    regions = {1: REGIONS}
    shapes = {1: (40, 40)}
    rates = learning_metrics.hit_rates(boxes, regions, shapes, draws=4000, seed=0)
    # Proposals: (20, 20) hit, (5, 5) hit, (13, 13) miss, (3, 3) hit.
    assert rates['hit_rate'] == pytest.approx(3 / 4)
    assert rates['num_boxes'] == 4
    # Random: box 0 always hits (1), box 3 hits with p = 200/1600 = 0.125; boxes
    # 1 (6 x 6) and 2 (2 x 2) have centres uniform on [3, 37]^2 and [1, 39]^2:
    # p1 = (7 * 7 + 10 * 10) / 34**2, p2 = (9 * 9 + 10 * 10) / 38**2.
    expected = (1 + (49 + 100) / 34**2 + (81 + 100) / 38**2 + 200 / 1600) / 4
    assert rates['random_hit_rate'] == pytest.approx(expected, abs=0.01)
    # Part centres (5, 5), (25, 25): box 0 holds both, box 1 holds (5, 5),
    # boxes 2 and 3 hold none. A random 40 x 40 box always holds both, a 0 x 0
    # one never; a 6 x 6 one at x1 ~ U(0, 34) holds (5, 5) when x1 in [0, 5] on
    # both axes, (25, 25) when x1 in [19, 25]; a 2 x 2 one at x1 ~ U(0, 38)
    # when x1 in [3, 5] or [23, 25].
    assert rates['part_in_box_rate'] == pytest.approx(2 / 4)
    expected_in = (1 + (5**2 + 6**2) / 34**2 + 2 * (2 / 38)**2) / 4
    assert rates['random_part_in_box_rate'] == pytest.approx(expected_in, abs=0.01)


def test_random_boxes_keep_size_and_stay_inside():
    rng = np.random.default_rng(0)
    boxes = np.array([[5, 5, 25, 15], [0, 0, 50, 60]], dtype=float)  # second too wide
    random_boxes = learning_metrics.random_boxes_like(boxes, (40, 30), draws=50, rng=rng)
    assert random_boxes.shape == (50, 2, 4)
    widths = random_boxes[..., 2] - random_boxes[..., 0]
    heights = random_boxes[..., 3] - random_boxes[..., 1]
    assert np.allclose(widths[:, 0], 20) and np.allclose(heights[:, 0], 10)
    assert np.allclose(widths[:, 1], 30) and np.allclose(heights[:, 1], 40)  # clipped
    assert (random_boxes[..., :2] >= 0).all()
    assert (random_boxes[..., 2] <= 30).all() and (random_boxes[..., 3] <= 40).all()


def test_hit_rates_rejects_no_proposals():
    with pytest.raises(ValueError, match='boxes_per_image is empty'):
        learning_metrics.hit_rates({}, {}, {})


def test_accuracies_top1_and_mean_per_class():
    # class 0: 1 of 1 right; class 1: 3 of 4 right; class 2 absent from gt.
    result = learning_metrics.accuracies([0, 0, 1, 1, 1], [0, 1, 1, 1, 1], num_classes=3)
    assert result['top1'] == pytest.approx(0.8)
    assert result['mean_class_acc'] == pytest.approx((1.0 + 0.75) / 2)


class _PredictsClassZero(torch.nn.Module):
    """Stand-in classifier: predicts class 0 (student stream: class 1) and
    counts the images it saw."""

    def __init__(self):
        super().__init__()
        from mmpretrain.models import ClsDataPreprocessor
        self.data_preprocessor = ClsDataPreprocessor(num_classes=4)
        self.seen_paths = []

    def forward(self, inputs, data_samples, mode):
        assert mode == 'predict'
        for sample in data_samples:
            self.seen_paths.append(sample.img_path)
            sample.set_pred_label(torch.tensor([0]))
            sample.set_field(torch.tensor([0.1, 0.9, 0.0, 0.0]), 'student_score',
                             field_type='data')
        return data_samples


def test_train_split_accuracy_reads_the_training_images(tmp_path):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmdaf.datasets import make_synthetic_fgvc
    init_default_scope('mmpretrain')
    data_root = str(tmp_path / 'set')
    make_synthetic_fgvc(data_root, num_classes=4, train_per_class=3, test_per_class=1,
                        img_size=32, seed=0)
    cfg = Config.fromfile(config_path('_base_/datasets/synthetic_fgvc.py'))
    model = _PredictsClassZero()
    result = learning_eval.train_split_accuracy(cfg, model, data_root, num_classes=4)
    # 12 training images, 3 per class: class 0 is 1/4 of them, class 1 too.
    assert len(model.seen_paths) == 12
    assert result == dict(train_top1=pytest.approx(0.25),
                          student_train_top1=pytest.approx(0.25))


def test_summarise_mean_and_sample_std():
    stats = learning_tables.summarise([0.5, 0.7, 0.9])
    assert stats['mean'] == pytest.approx(0.7)
    assert stats['std'] == pytest.approx(0.2)
    assert (stats['min'], stats['max'], stats['n']) == (0.5, 0.9, 3)
    assert learning_tables.summarise([0.4])['std'] is None


def test_read_part_boxes(tmp_path):
    (tmp_path / 'parts').mkdir()
    (tmp_path / 'parts' / 'part_boxes.txt').write_text(
        '1 1 1.0 2.0 3.0 4.0\n1 2 5 6 7 8\n2 1 0 0 1 1\n')
    regions = common.read_part_boxes(str(tmp_path))
    assert sorted(regions) == [1, 2]
    assert regions[1].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    (tmp_path / 'parts' / 'part_boxes.txt').write_text('1 1 1 2 3\n')
    with pytest.raises(ValueError, match='part_boxes.txt:1'):
        common.read_part_boxes(str(tmp_path))


def test_cfg_options_follow_the_switched_on_parts():
    student = dict(o.split('=', 1) for o in learning_runs.cfg_options(
        config_path('ablation', 'r18_sppn_synthetic.py'), '/data', 4, 128, 3, 1,
        extra=['model.rank_target.crop=32']))
    assert student['model.head.num_classes'] == '4'
    assert 'model.teacher.head.num_classes' not in student  # teacher=None there
    # Anchors sized for 64 px scale with the image.
    assert student['model.sppn_head.anchor_generator.octave_base_scale'] == '2.5'
    assert student['train_cfg.max_epochs'] == '3' and student['param_scheduler.T_max'] == '3'
    assert student['model.rank_target.crop'] == '32'  # extra options reach DAF rows
    daf = dict(o.split('=', 1) for o in learning_runs.cfg_options(
        config_path('daf_r18_synthetic.py'), '/data', 4, 64, 3, 1, pretrained=False))
    assert daf['model.teacher.head.num_classes'] == '4'
    assert daf['model.fusion_head.num_classes'] == '4'
    assert daf['model.backbone.init_cfg'] == 'None'
    assert daf['model.teacher.backbone.init_cfg'] == 'None'
    assert 'model.sppn_head.anchor_generator.octave_base_scale' not in daf
    baseline = dict(o.split('=', 1) for o in learning_runs.cfg_options(
        config_path('ablation', 'r18_baseline_synthetic.py'), '/data', 4, 64, 3, 1,
        extra=['model.rank_target.crop=32']))
    assert 'model.rank_target.crop' not in baseline  # not a DAF model: extras do not apply
    assert 'model.backbone.init_cfg' not in baseline  # keeps its Pretrained init


def test_touches_border_within_tolerance():
    boxes = np.array([[0.3, 10, 20, 20], [5, 5, 63.6, 30], [5, 5, 20, 20],
                      [1, 1, 63, 63]], dtype=float)
    np.testing.assert_array_equal(learning_metrics.touches_border(boxes, (64, 64)),
                                  [True, True, False, False])


def test_two_run_ensemble_averages_softmax_scores(tmp_path):
    labels = np.array([0, 1, 1])
    # Run A is wrong on image 1, run B on image 0; their mean is right on all.
    run_a = np.array([[0.6, 0.4], [0.6, 0.4], [0.2, 0.8]])
    run_b = np.array([[0.45, 0.55], [0.1, 0.9], [0.4, 0.6]])
    paths = []
    for seed, scores in enumerate((run_a, run_b, run_a)):
        paths.append(str(tmp_path / f'seed{seed}.npz'))
        np.savez_compressed(paths[-1], scores=scores, labels=labels)
    assert learning_tables.ensemble_top1(paths[:1]) == pytest.approx(2 / 3)
    assert learning_tables.ensemble_top1(paths[:2]) == 1.0
    records = [dict(seed=seed, scores_file=path, train_s=10.0 + seed)
               for seed, path in enumerate(paths)]
    pairs = learning_tables.pairwise_ensembles(records[::-1])
    assert [(p['seed'], p['top1']) for p in pairs] == \
        [('0+1', 1.0), ('0+2', pytest.approx(2 / 3)), ('1+2', 1.0)]
    assert pairs[0]['train_s'] == 21.0
    np.savez_compressed(paths[2], scores=run_a, labels=np.array([0, 1, 0]))
    with pytest.raises(ValueError, match='seed2.npz: its test labels differ'):
        learning_tables.ensemble_top1(paths[1:])


def test_loss_curve_averages_each_logged_loss_per_epoch(tmp_path):
    log = tmp_path / 'run' / '20260101_000000' / 'vis_data'
    log.mkdir(parents=True)
    (log / 'scalars.json').write_text('\n'.join([
        '{"lr": 0.02, "loss": 3.0, "loss_pred": 2.0, "distill_kept": 0.25, "epoch": 1}',
        '{"loss": 2.0, "loss_pred": 1.0, "distill_kept": 0.75, "epoch": 1}',
        '{"loss": 1.0, "loss_pred": 0.5, "distill_kept": 1.0, "epoch": 2}',
        '{"accuracy/top1": 50.0, "step": 2}']))
    assert learning_runs.loss_curve(str(tmp_path / 'run')) == dict(
        loss_pred=[1.5, 0.5], distill_kept=[0.5, 1.0])
    assert learning_runs.final_train_loss(str(tmp_path / 'run')) == 1.0
    # A plain classifier logs only its cross entropy, as ``loss``.
    (log / 'scalars.json').write_text('{"loss": 2.5, "epoch": 1}')
    assert learning_runs.loss_curve(str(tmp_path / 'run')) == dict(loss_pred=[2.5])


def test_presets_fill_what_the_flags_leave_open():
    args = learning.parse_args(['--preset', 'c10_tr120', '--test-per-class', '5'])
    assert (args.num_classes, args.train_per_class, args.test_per_class,
            args.part_scale, args.data_seed) == (10, 120, 5, 1.6, 2)
    args = learning.parse_args([])
    assert (args.num_classes, args.data_seed, args.part_scale) == (8, 0, 1.6)
    assert learning.parse_args(['--preset', 'val']).data_seed == 1
    with pytest.raises(SystemExit):
        learning.parse_args(['--preset', 'cub'])
    assert args.clutter == 'parts'
    plain = learning.parse_args(['--preset', 'plain_clutter'])
    assert (plain.clutter, plain.data_seed, plain.num_classes) == ('plain', 4, 8)
    assert learning.parse_args(['--clutter', 'plain']).clutter == 'plain'


def test_plain_clutter_data_has_its_own_folder(tmp_path, monkeypatch):
    written = {}

    def fake_make(data_root, **kwargs):
        written[data_root] = kwargs['part_like_clutter']
        return dict(num_images=0, elapsed_s=0.0)

    monkeypatch.setattr('mmdaf.datasets.make_synthetic_fgvc', fake_make)
    for preset in ('val', 'plain_clutter'):
        args = learning.parse_args(['--preset', preset, '--work-dir', str(tmp_path)])
        learning_presets.prepare_data(args)
    assert written == {
        str(tmp_path / 'data' / 'synthetic_c8_tr60_te100_s64_p1.6_seed1'): True,
        str(tmp_path / 'data' / 'synthetic_c8_tr60_te100_s64_p1.6_seed4_plain'): False}


def test_every_named_row_is_a_config_and_the_default_rows_have_the_controls():
    for name, path in learning_presets.CONFIGS.items():
        assert os.path.isfile(os.path.join(REPO_ROOT, path)), name
    assert learning.parse_args([]).configs == [
        'baseline', 'sppn', 'sppn_lhm', 'sppn_lhm_random_pool', 'daf', 'daf_distill',
        'daf_no_attention']


def test_out_without_an_extension_is_written_as_json(tmp_path):
    path = tmp_path / 'new_folder' / 'results'
    parser = argparse.ArgumentParser()
    common.check_out_path(parser, str(path))  # creates the folder now
    assert path.parent.is_dir()
    result = dict(top1=np.float32(0.5), counts=np.array([1, 2]), keys={'b', 'a'},
                  ratio=torch.tensor(1.25))
    common.write_json(result, str(path))
    assert json.loads(path.read_text()) == dict(top1=0.5, counts=[1, 2],
                                                keys=['a', 'b'], ratio=1.25)


@pytest.mark.parametrize('name, argv', [
    ('learning', []),
    ('speed', ['--quick']),
    ('anchor_ranking', ['cfg.py', 'ckpt.pth', '--data-root', 'data']),
    ('box_probe', ['run_dir', '--data-root', 'data']),
])
def test_every_benchmark_checks_out_before_the_run(name, argv, tmp_path, capsys):
    module = _import(name)
    out = tmp_path / 'results'
    assert module.parse_args(argv + ['--out', str(out)]).out == str(out)
    with pytest.raises(SystemExit):
        module.parse_args(argv + ['--out', str(tmp_path)])
    assert f'--out {str(tmp_path)!r} is a folder' in capsys.readouterr().err


def test_grad_norms_checks_out_before_the_run(tmp_path, capsys):
    grad_norms = _import('grad_norms')
    with pytest.raises(SystemExit):
        grad_norms.main(['cfg.py', '--data-root', 'data', '--out', str(tmp_path)])
    assert 'is a folder' in capsys.readouterr().err


def test_grad_norms_finds_the_hint_regressor_inside_the_distiller():
    grad_norms = _import('grad_norms')
    model = torch.nn.Module()
    model.backbone = torch.nn.Linear(2, 2)
    model.teacher = None  # switched off: no group
    model.distill = torch.nn.Module()
    model.distill.hint_regressor = torch.nn.Conv2d(2, 3, 1)
    groups = grad_norms.group_parameters(model)
    assert list(groups) == ['backbone', 'hint_reg']
    assert sum(p.numel() for p in groups['hint_reg']) == 2 * 3 + 3


# ----------------------------------------------------------------------------
# speed.py: pass counting, memory peaks, ratios, and one tiny run
# ----------------------------------------------------------------------------
def test_backbone_pass_equivalents():
    assert speed_flops.backbone_pass_equivalents(4, 1.0, True, True) == 6.0
    assert speed_flops.backbone_pass_equivalents(4, 0.5, True, True, 1.2) == pytest.approx(3.2)
    assert speed_flops.backbone_pass_equivalents(4, 1.0, False, False) == 1.0
    assert speed_flops.backbone_pass_equivalents(2, 1.0, True, False) == 3.0
    assert speed_flops.backbone_pass_equivalents(3, 1.0, True, True,
                                           parts_forward_only=True) == pytest.approx(3.0)
    with pytest.raises(ValueError, match='part_scale'):
        speed_flops.backbone_pass_equivalents(4, 0.0, True, True)


def test_peak_from_memory_events_sorts_by_time():
    # Running sum in time order: 100, 150, 50, 130, 0 -> peak 150.
    events = [(3, 80), (0, 100), (2, -100), (1, 50), (4, -130)]
    assert speed_timing.peak_from_memory_events(events) == 150
    assert speed_timing.peak_from_memory_events([(0, -10)]) == 0


def test_median_ratio_is_taken_round_by_round():
    # Rounds: 2/(2*1) = 1, 4/(2*1) = 2, 6/(2*2) = 1.5.
    assert speed_timing.median_ratio([2, 4, 6], [1, 1, 2], scale=2) == pytest.approx(1.5)
    with pytest.raises(ValueError, match='equally long'):
        speed_timing.median_ratio([1, 2], [1])


def test_peak_memory_bytes_cpu_sees_a_temporary_tensor():
    def allocate():
        big = torch.ones(1000, 1000)  # 4 MB held, then freed
        del big

    assert speed_timing.peak_memory_bytes(allocate, 'cpu') >= 4_000_000


def test_tiny_speed_run_writes_consistent_json():
    threads_before = torch.get_num_threads()
    # One thread: on a loaded 2-core machine two threads make this 5x slower.
    result = speed.run_benchmark(config_path('daf_r18_synthetic.py'), size=64, batch=1,
                                 repeats=1, warmup=0, memory=False, threads=1,
                                 log=lambda _: None)
    assert torch.get_num_threads() == threads_before  # restored
    for name in ('backbone_train', 'daf_train', 'teacher_backbone_train',
                 'backbone_predict', 'daf_predict'):
        assert result['times_s'][name] > 0, name
    assert result['num_parts'] == 4 and result['part_scale'] == 1.0
    # The shipped synthetic config skips the part pass (no loss_con, the
    # proposals ranked by their windows): P is the student and the teacher.
    assert result['part_pass_share'] == 0.0
    assert 'parts_backbone_train' not in result['times_s']
    assert result['passes_train'] == pytest.approx(1 + result['teacher_factor'])
    assert result['passes_train_nominal'] == pytest.approx(2)
    times = result['times_s']
    assert result['train_ratio'] == pytest.approx(
        times['daf_train'] / (result['passes_train'] * times['backbone_train']))
    assert result['infer_ratio'] == pytest.approx(
        times['daf_predict'] / (2 * times['backbone_predict']))
    assert result['train_overhead'] == pytest.approx(result['train_ratio'] - 1)
    # The stages cover the whole step: their FLOPs add up to the DAF step's.
    assert result['breakdown_flops_sum'] == pytest.approx(result['flops']['daf_train'],
                                                          rel=1e-6)
    # DAF does at least the teacher pass on top of the student's.
    assert result['flops']['daf_train'] > 2 * result['flops']['backbone_train']
    assert result['flops_train_ratio'] > 1.0
    stages = {row['stage'] for row in result['breakdown']}
    assert 'SPPN (FPN, head, propose incl. NMS)' in stages
    assert 'PAF-bilinear neck + teacher head' in stages
    assert 'part backbone pass (B*N)' not in stages
    # The object-mask pooling of the student is a stage of its own.
    assert 'pooled cross entropy (part_pool)' in stages
    # The printed P says that no step runs the part pass (share 0).
    speed_report = _import('speed_report')
    p_line = next(line for line in speed_report.format_table(result).splitlines()
                  if line.startswith('P = '))
    assert f"= 1 + 4*1^2*0.333*0 + {result['teacher_factor']:.3f}" in p_line
    assert f"= {result['passes_train']:.3f}" in p_line


# A dict over the config's None needs _delete_ (mmengine merges dicts).
WITH_CON = {'model.loss_concentrate': dict(_delete_=True, type='ConcentrateLoss', top_m=3)}
# The paper's ranking target in place of the synthetic configs' windows.
PART_IMAGE_TARGET = {'model.rank_target': dict(_delete_=True, type='PartImageRankTarget')}


def test_part_pass_counts_in_p_on_the_steps_that_run_it():
    speed_model = _import('speed_model')
    con = speed.flops_only(config_path('daf_r18_synthetic.py'), size=64, batch=1,
                           cfg_options=WITH_CON)
    plain = speed.flops_only(config_path('daf_r18_synthetic.py'), size=64, batch=1)
    part_stage = 'part backbone pass (B*N)'
    assert part_stage in con['stage_gflops'] and part_stage not in plain['stage_gflops']
    # The 4 forward-only part passes are what the concentrate loss adds.
    added = (con['flops']['daf_train'] - plain['flops']['daf_train']) / 1e9
    assert added == pytest.approx(con['stage_gflops'][part_stage]
                                  + con['stage_gflops']['part images (compose, resize)'],
                                  rel=1e-6)
    # Without L_con, rank_interval k ranks (by windows) on 1 step of k, and
    # the k - 1 steps that rank nothing run neither windows nor part pass.
    every_third = speed.flops_only(config_path('daf_r18_synthetic.py'), size=64, batch=1,
                                   cfg_options={'model.sppn_head.rank_interval': 3})
    assert part_stage not in every_third['stage_gflops']
    rank_stage = 'ranked anchor samples (B*K, forward only)'
    assert every_third['stage_gflops'][rank_stage] == pytest.approx(
        plain['stage_gflops'][rank_stage] / 3, rel=1e-6)
    model = speed_model.build_daf_model(config_path('daf_r18_synthetic.py'), 'cpu',
                                        {'model.sppn_head.rank_interval': 4})
    assert speed_model.part_pass_share(model) == 0.0
    model_con = speed_model.build_daf_model(config_path('daf_r18_synthetic.py'), 'cpu',
                                            {'model.sppn_head.rank_interval': 4, **WITH_CON})
    assert speed_model.part_pass_share(model_con) == 1.0
    # No sampled anchors at all: every step ranks the proposals, by their
    # windows (WindowRankTarget), so still no part pass; by their part images
    # (PartImageRankTarget, the paper's) on every step.
    unsampled = speed_model.build_daf_model(config_path('daf_r18_synthetic.py'), 'cpu',
                                            {'model.sppn_head.rank_samples': 0})
    assert speed_model.part_pass_share(unsampled) == 0.0
    paper_target = speed_model.build_daf_model(
        config_path('daf_r18_synthetic.py'), 'cpu',
        {'model.sppn_head.rank_samples': 0, **PART_IMAGE_TARGET})
    assert speed_model.part_pass_share(paper_target) == 1.0
    # With samples every k-th step ranks: the part pass runs on those only.
    paper_every_fourth = speed_model.build_daf_model(
        config_path('daf_r18_synthetic.py'), 'cpu',
        {'model.sppn_head.rank_interval': 4, **PART_IMAGE_TARGET})
    assert speed_model.part_pass_share(paper_every_fourth) == 0.25


def test_rank_stage_times_what_the_ranking_target_runs():
    speed_model = _import('speed_model')
    speed_stages = _import('speed_stages')
    config = config_path('daf_r18_synthetic.py')
    rank_stage = 'ranked anchor samples (B*K, forward only)'

    def rank_gflops(options):
        result = speed.flops_only(config, size=64, batch=1, cfg_options=options)
        # Every stage of the step is timed, and nothing else.
        assert sum(result['stage_gflops'].values()) == pytest.approx(
            result['flops']['daf_train'] / 1e9, rel=1e-6)
        return result['stage_gflops'][rank_stage], result

    # WindowRankTarget: one pass over the 4 proposals' and K samples' windows
    # (plus one blur of the image); without samples it still ranks the 4
    # proposals by their windows.
    twelve, _ = rank_gflops({})
    eight, _ = rank_gflops({'model.sppn_head.rank_samples': 4})
    four, _ = rank_gflops({'model.sppn_head.rank_samples': 0})
    window = (twelve - four) / 8
    assert window > 0 and eight - four == pytest.approx(4 * window, rel=1e-6)
    blur = four - 4 * window
    assert 0 <= blur < window
    # PartImageRankTarget: the 8 samples' whole single-box part images, one
    # student forward pass each after the same blur; the proposals' targets
    # are the part pass's.
    paper, result = rank_gflops({**WITH_CON, **PART_IMAGE_TARGET})
    assert paper == pytest.approx(
        8 * result['flops']['backbone_predict'] / 1e9 + blur, rel=1e-6)
    # ... and nothing of its own without samples.
    paper_unsampled = speed_model.build_daf_model(
        config, 'cpu', {'model.sppn_head.rank_samples': 0, **PART_IMAGE_TARGET})
    assert not speed_stages.rank_target_runs_passes(paper_unsampled)


def test_make_batch_puts_inputs_labels_and_samples_on_the_device():
    # The GPU check failed with the samples' labels left on the CPU.
    speed_model = _import('speed_model')

    class Model:
        head = argparse.Namespace(num_classes=5)

    inputs, labels, samples = speed_model.make_batch(Model(), 2, 8, 'meta')
    assert inputs.shape == (2, 3, 8, 8) and inputs.device.type == 'meta'
    assert labels.device.type == 'meta'
    assert [sample.gt_label.device.type for sample in samples] == ['meta', 'meta']


def test_rank_interval_counts_the_ranked_samples_once_per_k_steps():
    # With L_con every step runs the part pass, so only the samples differ.
    every_step = speed.flops_only(config_path('daf_r18_synthetic.py'), size=64, batch=1,
                                  cfg_options=WITH_CON)
    every_third = speed.flops_only(config_path('daf_r18_synthetic.py'), size=64, batch=1,
                                   cfg_options={**WITH_CON,
                                                'model.sppn_head.rank_interval': 3})
    stage = 'ranked anchor samples (B*K, forward only)'
    rank_gflops = every_step['stage_gflops'][stage]
    assert rank_gflops > 0
    assert every_third['stage_gflops'][stage] == pytest.approx(rank_gflops / 3, rel=1e-6)
    # daf_train runs one whole cycle (1 ranking step, 2 without) per call and
    # is counted per step: 2/3 of the samples' FLOPs fewer.
    saved = (every_step['flops']['daf_train'] - every_third['flops']['daf_train']) / 1e9
    assert saved == pytest.approx(2 / 3 * rank_gflops, rel=1e-6)
    assert every_third['flops']['backbone_train'] == every_step['flops']['backbone_train']


# ----------------------------------------------------------------------------
# anchor_ranking.py: rank statistics per anchor shape
# ----------------------------------------------------------------------------
anchor_ranking = _import('anchor_ranking')


def test_rank_auc_counts_pairs_and_half_ties():
    # Pairs (pos, neg): (3,1) win, (3,2) win, (2,1) win, (2,2) tie -> 3.5 / 4.
    assert anchor_ranking.rank_auc(np.array([3., 2.]), np.array([1., 2.])) == 0.875
    assert anchor_ranking.rank_auc(np.array([0.]), np.array([1.])) == 0.0
    assert np.isnan(anchor_ranking.rank_auc(np.array([]), np.array([1.])))


def test_summarise_shapes_random_oracle_and_sppn_shares():
    # One image, 6 anchors of shape 'a' and 2 of shape 'b'. Shape a: anchors 0-2
    # contain a part. The 4 lowest cross entropies are anchors 0, 1, 2, 3 (3 hits);
    # the 4 best scores are anchors 5, 4, 3, 0 (1 hit).
    record = dict(shape=np.array(['a'] * 6 + ['b'] * 2),
                  hit=np.array([1, 1, 1, 0, 0, 0, 1, 0], dtype=bool),
                  ce=np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.0, 2.0]),
                  score=np.array([3., 0., 1., 4., 5., 6., 0., 1.]))
    summary = anchor_ranking.summarise_shapes([record])
    assert list(summary) == ['a', 'b']
    a = summary['a']
    assert a['random'] == 0.5 and a['oracle4'] == 0.75 and a['sppn4'] == 0.25
    assert a['auc_ce'] == 1.0  # every hit has a lower cross entropy
    # Scores of hits 3, 0, 1 against misses 4, 5, 6: no hit wins a pair.
    assert a['auc_score'] == 0.0
    assert a['mean_ce'] == pytest.approx(0.35)
    assert summary['b']['oracle4'] == 0.5 and summary['b']['auc_score'] == 0.0
    # Population std of shape b's scores 0 and 1.
    assert summary['b']['score_std'] == 0.5


def test_a_finished_run_is_reused_only_with_the_same_config(tmp_path, capsys):
    config = tmp_path / 'cfg.py'
    config.write_text("model = dict(part_backbone_grad_scale=1.0)\n")
    before = learning_runs.config_fingerprint(str(config))
    config.write_text("model = dict(part_backbone_grad_scale=0.0)\n")
    after = learning_runs.config_fingerprint(str(config))
    assert len(before) == 12 and before != after
    assert learning_runs.config_unchanged(dict(config_sha1=after), after, 'run')
    assert not learning_runs.config_unchanged(dict(config_sha1=before), after, 'run')
    assert f'run: the config changed since this run was trained ({before} -> ' \
        f'{after}); training it again' in capsys.readouterr().out
    # Recorded before fingerprints were kept: trained again, not trusted.
    assert not learning_runs.config_unchanged(dict(), after, 'run')


def test_each_row_gets_its_own_generic_pretraining_and_ensemble_row(monkeypatch):
    calls = []
    monkeypatch.setattr(learning_presets.subprocess, 'run',
                        lambda cmd, **kwargs: calls.append(cmd[2:]))
    learning_presets.ensure_pretrained(['baseline', 'daf', 'convnext_baseline', 'convnext_daf'])
    assert calls == [
        ['--config', 'configs/pretrain/r18-w32_synthetic-generic.py',
         '--work-dir', 'work_dirs/pretrain_synthetic'],
        ['--config', 'configs/pretrain/convnext-w32_synthetic-generic.py',
         '--work-dir', 'work_dirs/pretrain_synthetic_convnext-w32_synthetic-generic'],
    ]
    assert learning_tables.ensemble_row_name('baseline') == 'two_baselines'
    assert learning_tables.ensemble_row_name('convnext_baseline') == 'two_convnext_baselines'
    assert learning_tables.ensemble_row_name('convnext_daf') is None


def test_pretrained_checkpoints_are_hashed_once_missing_ones_are_none(tmp_path, monkeypatch):
    import hashlib
    (tmp_path / 'ckpt').mkdir()
    (tmp_path / 'ckpt' / 'a.pth').write_bytes(b'weights')
    config = tmp_path / 'two_backbones.py'
    config.write_text(
        "model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='ckpt/a.pth')),\n"
        "             teacher=dict(backbone=dict(init_cfg=dict(\n"
        "                 type='Pretrained', checkpoint='ckpt/a.pth'))),\n"
        "             extra=[dict(init_cfg=dict(type='Pretrained', checkpoint='ckpt/gone.pth')),\n"
        "                    dict(init_cfg=dict(type='Pretrained',\n"
        "                                       checkpoint='https://example.org/b.pth'))])\n")
    monkeypatch.setattr(learning_presets, 'REPO_ROOT', str(tmp_path))
    hashes = learning_presets.pretrained_checkpoint_hashes([str(config)])
    assert hashes == {'ckpt/a.pth': hashlib.sha256(b'weights').hexdigest(),
                      'ckpt/gone.pth': None}


def test_a_run_folder_stays_inside_the_work_dir():
    assert learning_runs.run_dir('wd', 'daf', 2) == osp.join('wd', 'daf_seed2')
    assert learning_runs.run_dir('wd', 'work_dirs/exp/x.py', 0) == osp.join(
        'wd', 'work_dirs/exp/x.py_seed0')
    assert learning_runs.run_dir('wd', '/abs/cfgs/x.py', 1) == osp.join('wd', 'x.py_seed1')
    assert learning_runs.run_dir('wd', '../other/x.py', 1) == osp.join('wd', 'x.py_seed1')


def test_an_evaluation_older_than_its_checkpoint_is_not_reused(tmp_path):
    checkpoint, eval_out = tmp_path / 'epoch_8.pth', tmp_path / 'final_epoch_eval.json'
    checkpoint.write_text('weights')
    assert not learning_runs.evaluation_is_current(str(eval_out), str(checkpoint))
    eval_out.write_text('{}')
    os.utime(eval_out, (1000, 1000))
    os.utime(checkpoint, (2000, 2000))  # trained again after that evaluation
    assert not learning_runs.evaluation_is_current(str(eval_out), str(checkpoint))
    os.utime(eval_out, (3000, 3000))
    assert learning_runs.evaluation_is_current(str(eval_out), str(checkpoint))


# ----------------------------------------------------------------------------
# learning.py --curves: per-epoch checkpoints, their accuracies, reuse
# ----------------------------------------------------------------------------
def _options(options):
    return dict(o.split('=', 1) for o in options)


def test_curves_keep_every_epochs_checkpoint_and_nothing_else_changes():
    config = config_path('daf_r18_synthetic.py')
    plain = learning_runs.cfg_options(config, '/data', 4, 64, 8, 1)
    curves = learning_runs.cfg_options(config, '/data', 4, 64, 8, 1, curves=True)
    assert _options(plain)['default_hooks.checkpoint.interval'] == '8'
    assert _options(plain)['default_hooks.checkpoint.max_keep_ckpts'] == '1'
    assert _options(curves)['default_hooks.checkpoint.interval'] == '1'
    assert _options(curves)['default_hooks.checkpoint.max_keep_ckpts'] == '8'
    # What the run learns is the same: only the checkpoint hook's options differ.
    assert learning_runs.training_options(plain) == learning_runs.training_options(curves)
    assert {o for o in plain if o not in curves} == {
        'default_hooks.checkpoint.interval=8', 'default_hooks.checkpoint.max_keep_ckpts=1'}
    assert not learning.parse_args([]).curves and learning.parse_args(['--curves']).curves


def test_mean_curves_average_each_epoch_over_seeds():
    records = [
        dict(config='baseline', seed=0, epoch_curves=dict(
            top1=[0.25, 0.5, 0.75], train_top1=[0.5, 0.75, 1.0],
            student_top1=None, student_train_top1=None)),
        dict(config='baseline', seed=1, epoch_curves=dict(
            top1=[0.5, 0.5, 0.625], train_top1=[0.25, 0.75, 0.875],
            student_top1=None, student_train_top1=None)),
        dict(config='daf', seed=0, epoch_curves=dict(
            top1=[0.375, 0.625], train_top1=[0.5, 1.0],
            student_top1=[0.25, 0.5], student_train_top1=[0.5, 0.75])),
        dict(config='daf', seed=1),  # a run without curves does not count
        dict(config='sppn', seed=0),
    ]
    means = learning_tables.mean_curves(records, ['baseline', 'daf', 'sppn'])
    assert means == dict(
        baseline=dict(top1=[0.375, 0.5, 0.6875], train_top1=[0.375, 0.75, 0.9375],
                      student_top1=None, student_train_top1=None),
        daf=dict(top1=[0.375, 0.625], train_top1=[0.5, 1.0],
                 student_top1=[0.25, 0.5], student_train_top1=[0.5, 0.75]))
    text = learning_report.format_accuracy_curves(dict(epoch_curves=means),
                                                  'test top-1 %', 'top1')
    assert text.splitlines() == ['test top-1 % per epoch, mean over seeds',
                                 f"{'baseline':<18}   37.5   50.0   68.8",
                                 f"{'daf':<18}   37.5   62.5"]
    # The student line has only the rows with a student stream.
    text = learning_report.format_accuracy_curves(dict(epoch_curves=means),
                                                  'student test top-1 %', 'student_top1')
    assert text.splitlines()[1:] == [f"{'daf':<18}   25.0   50.0"]
    assert learning_report.format_accuracy_curves({}, 'test top-1 %', 'top1') == ''


class _StandIn(torch.nn.Module):
    """Stand-in classifier: predicts the ground truth (``right``) or class 0,
    with a student stream that predicts class 1 or none."""

    def __init__(self, right: bool, student: bool):
        super().__init__()
        from mmpretrain.models import ClsDataPreprocessor
        self.data_preprocessor = ClsDataPreprocessor(num_classes=4)
        self.right, self.student = right, student

    def forward(self, inputs, data_samples, mode):
        for sample in data_samples:
            label = int(sample.gt_label) if self.right else 0
            sample.set_pred_label(torch.tensor([label]))
            sample.set_pred_score(torch.nn.functional.one_hot(torch.tensor(label), 4).float())
            if self.student:
                sample.set_field(torch.tensor([0.1, 0.9, 0.0, 0.0]), 'student_score',
                                 field_type='data')
        return data_samples


@pytest.mark.parametrize('student', [True, False])
def test_epoch_curves_measure_each_checkpoint(student, tmp_path, monkeypatch):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmdaf.datasets import make_synthetic_fgvc
    init_default_scope('mmpretrain')
    data_root = str(tmp_path / 'set')
    make_synthetic_fgvc(data_root, num_classes=4, train_per_class=3, test_per_class=1,
                        img_size=32, seed=0)
    cfg = Config.fromfile(config_path('_base_/datasets/synthetic_fgvc.py'))
    loaded = []

    def load(config_file, checkpoint):
        loaded.append((config_file, checkpoint))
        return cfg, _StandIn(right=checkpoint.endswith('epoch_2.pth'), student=student)

    monkeypatch.setattr(learning_eval, 'load_trained_model', load)
    checkpoints = [str(tmp_path / 'run' / f'epoch_{e}.pth') for e in (1, 2)]
    curves = learning_eval.evaluate_epoch_curves('run/cfg.py', checkpoints, data_root, 4)
    assert loaded == [('run/cfg.py', checkpoints[0]), ('run/cfg.py', checkpoints[1])]
    assert curves['epochs'] == [1, 2] and curves['checkpoints'] == checkpoints
    # Epoch 1 predicts class 0 (1 in 4), epoch 2 the right class, on both splits.
    assert curves['top1'] == [0.25, 1.0] and curves['train_top1'] == [0.25, 1.0]
    if student:  # the student stream always says class 1
        assert curves['student_top1'] == [0.25, 0.25]
        assert curves['student_train_top1'] == [0.25, 0.25]
    else:
        assert curves['student_top1'] is None and curves['student_train_top1'] is None


def _write_run(work_dir, options, epochs):
    """A finished run as train_run leaves it: its record and the checkpoints
    its options keep."""
    work_dir.mkdir(exist_ok=True)
    (work_dir / 'run_record.json').write_text(json.dumps(dict(train_options=options)))
    interval = int(_options(options)['default_hooks.checkpoint.interval'])
    for epoch in range(1, epochs + 1):
        if epoch % interval == 0:
            (work_dir / f'epoch_{epoch}.pth').write_text('weights')


def test_curves_plan_reuses_current_curves_and_retrains_a_plain_run(tmp_path, capsys):
    config = config_path('ablation', 'r18_baseline_synthetic.py')
    plain = learning_runs.cfg_options(config, '/data', 4, 64, 3, 0)
    curves = learning_runs.cfg_options(config, '/data', 4, 64, 3, 0, curves=True)
    run = tmp_path / 'baseline_seed0'
    final = str(run / 'epoch_3.pth')
    plan = learning_runs.curves_plan
    assert plan(None, str(run), 3, eval_only=False) == 'train'
    # A plain run kept only its final checkpoint: trained again, and says so.
    _write_run(run, plain, 3)
    record = learning_runs.reusable_record(str(run), final, curves, None, True, False)
    assert record['train_options'] == plain  # the options match but for the checkpoints
    assert plan(record, str(run), 3, eval_only=False) == 'train'
    assert f'{run}: trained without --curves, only its final checkpoint is kept; ' \
        'training it again' in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match='kept only its final one'):
        plan(record, str(run), 3, eval_only=True)
    # Checkpoints left over from an earlier --curves training do not count.
    for epoch in (1, 2):
        (run / f'epoch_{epoch}.pth').write_text('old weights')
    assert plan(record, str(run), 3, eval_only=False) == 'train'
    # A --curves run: its checkpoints are evaluated, then the curves reused
    # until the final checkpoint is newer than them.
    _write_run(run, curves, 3)
    record = learning_runs.reusable_record(str(run), final, plain, None, True, False)
    assert plan(record, str(run), 3, eval_only=False) == 'evaluate'
    curves_out = run / 'epoch_curves.json'
    curves_out.write_text('{}')
    os.utime(final, (2000, 2000))
    os.utime(curves_out, (3000, 3000))
    assert plan(record, str(run), 3, eval_only=False) == 'reuse'
    assert plan(record, str(run), 3, eval_only=True) == 'evaluate'
    os.utime(curves_out, (1000, 1000))  # trained again after those curves
    assert plan(record, str(run), 3, eval_only=False) == 'evaluate'
    # Any other option than the checkpoint hook's still refuses the run.
    other = learning_runs.cfg_options(config, '/data', 4, 64, 3, 1, curves=True)
    with pytest.raises(ValueError, match='trained with other options'):
        learning_runs.reusable_record(str(run), final, other, None, True, False)


def test_curves_reuse_rule_across_benchmarks(tmp_path, monkeypatch, capsys):
    calls = []

    def train_run(name, seed, config, work_dir, options, fingerprint, env, start):
        calls.append('train')
        epochs = int(_options(options)['train_cfg.max_epochs'])
        _write_run(pathlib.Path(work_dir), options, epochs)
        record = dict(config=name, seed=seed, train_options=options,
                      config_sha1=fingerprint, train_s=1.0)
        (pathlib.Path(work_dir) / 'run_record.json').write_text(json.dumps(record))
        return record

    def evaluate_run(config, work_dir, checkpoint, eval_out, data_root, args, env,
                     curve_checkpoints=None):
        calls.append('curves' if curve_checkpoints else 'eval')
        result = (dict(top1=[0.5] * len(curve_checkpoints)) if curve_checkpoints
                  else dict(top1=0.75))
        with open(eval_out, 'w') as f:
            json.dump(result, f)

    monkeypatch.setattr(learning_runs, 'train_run', train_run)
    monkeypatch.setattr(learning_runs, 'evaluate_run', evaluate_run)

    def run(*flags):
        calls.clear()
        args = learning.parse_args(['--configs', 'baseline', '--epochs', '2',
                                    '--work-dir', str(tmp_path), *flags])
        record = learning_runs.train_and_evaluate('baseline', 0, args, '/data')
        return list(calls), record

    calls_done, record = run()
    assert calls_done == ['train', 'eval'] and 'epoch_curves' not in record
    assert sorted(os.listdir(tmp_path / 'baseline_seed0')) == [
        'epoch_2.pth', 'final_epoch_eval.json', 'run_record.json']
    assert run()[0] == []  # a plain benchmark reuses it
    # Asked for curves, the plain run is trained again, keeping every epoch.
    calls_done, record = run('--curves')
    assert calls_done == ['train', 'eval', 'curves']
    assert 'trained without --curves' in capsys.readouterr().out
    assert record['epoch_curves'] == dict(top1=[0.5, 0.5]) and record['top1'] == 0.75
    # Then everything is reused, with and without --curves.
    calls_done, record = run('--curves')
    assert calls_done == [] and record['epoch_curves'] == dict(top1=[0.5, 0.5])
    calls_done, record = run()
    assert calls_done == [] and 'epoch_curves' not in record and record['reused']



def test_curves_are_evaluated_by_the_scripts_internal_mode(tmp_path, monkeypatch):
    commands = []
    monkeypatch.setattr(learning_runs.subprocess, 'run',
                        lambda cmd, **kwargs: commands.append(cmd))
    args = learning.parse_args(['--epochs', '2'])
    checkpoints = learning_runs.epoch_checkpoints(str(tmp_path), 2)
    assert checkpoints == [str(tmp_path / 'epoch_1.pth'), str(tmp_path / 'epoch_2.pth')]
    learning_runs.evaluate_run('cfgs/x.py', str(tmp_path), checkpoints[-1], 'curves.json',
                               '/data', args, {}, curve_checkpoints=checkpoints)
    learning_runs.evaluate_run('cfgs/x.py', str(tmp_path), checkpoints[-1], 'eval.json',
                               '/data', args, {})
    curves_cmd, eval_cmd = commands
    assert curves_cmd[curves_cmd.index('--curve-checkpoints') + 1:] == checkpoints
    assert '--scores-out' not in curves_cmd and '--curve-checkpoints' not in eval_cmd
    assert (tmp_path / 'curves_stdout.log').is_file()
    assert (tmp_path / 'eval_stdout.log').is_file()
    # The internal mode: only the per-epoch accuracies, written to --out.
    seen = []
    monkeypatch.setattr(learning, 'evaluate_epoch_curves',
                        lambda *a: seen.append(a) or dict(top1=[0.5, 1.0]))
    out = tmp_path / 'out.json'
    result = learning.main(curves_cmd[2:curves_cmd.index('--out')] + [
        '--out', str(out), *curves_cmd[curves_cmd.index('--curve-checkpoints'):]])
    assert seen == [(str(tmp_path / 'x.py'), checkpoints, '/data', 8)]
    assert result == json.loads(out.read_text()) == dict(top1=[0.5, 1.0])

@pytest.mark.parametrize('name', ['speed', 'learning', 'anchor_ranking', 'grad_norms',
                                  'box_probe'])
def test_every_benchmark_runs_as_a_script_from_any_folder(name, tmp_path):
    # The scripts put the repository root on sys.path for their helper modules.
    import subprocess
    script = os.path.join(REPO_ROOT, 'benchmarks', f'{name}.py')
    run = subprocess.run([sys.executable, script, '--help'], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith('usage: ')


def test_rank_targets_compare_proposals_with_samples_per_image():
    # Image 0: proposal CE 1 and 3 against samples 2 and 3 -> pairs (1<2, 1<3,
    # 3>2, 3=3 tie) = 2.5 / 4. Image 1: proposals 0 and 0 below sample 5 -> 1.
    proposal = np.array([[1., 3.], [0., 0.]])
    sample = np.array([[2., 3.], [5., 5.]])
    assert anchor_ranking.proposal_above_sample(proposal, sample) == pytest.approx(
        (2.5 / 4 + 1.0) / 2)
    summary = anchor_ranking.summarise_rank_targets(dict(
        proposal_whole=proposal, proposal_window=proposal - 1.0,
        sample_whole=sample, sample_window=sample))
    assert summary['mean_proposal_window'] == pytest.approx(0.0)
    assert summary['above_whole'] == summary['above_mixed'] == pytest.approx(0.8125)
    # Windows 1 lower for the proposals only: image 0 pairs (0<2, 0<3, 2<2? no
    # -> tie at 2=2, 2<3) = 3.5 / 4.
    assert summary['above_window'] == pytest.approx((3.5 / 4 + 1.0) / 2)


def test_student_image_top1_switches_the_pooled_prediction_off(monkeypatch):
    from types import SimpleNamespace

    from mmpretrain.structures import DataSample

    model = SimpleNamespace(predict_part_top_m=0,
                            part_pool=SimpleNamespace(top_m=3, predict=True))
    seen = []

    def fake_predicted_samples(model, loader):
        seen.append(model.part_pool.predict)
        # From the image alone the model says class 1 for every image.
        return [DataSample(student_score=torch.tensor([0.0, 1.0])) for _ in range(4)]

    monkeypatch.setattr(learning_eval, 'predicted_samples', fake_predicted_samples)
    top1 = learning_eval.student_image_top1(model, None, [1, 1, 0, 0], 2, student_top1=0.9)
    assert top1 == 0.5 and seen == [False]
    assert model.part_pool.predict is True  # restored
    # Without a pooled or part prediction the student's top-1 is the image's.
    model.part_pool.predict = False
    assert learning_eval.student_image_top1(model, None, [1], 2, student_top1=0.9) == 0.9
    assert seen == [False]


# ----------------------------------------------------------------------------
# learning.py: part coverage of the top-4 proposals (PartCoverage)
# ----------------------------------------------------------------------------
def _coverage_record(config, seed, top1, **coverage):
    return dict(config=config, seed=seed, top1=top1, mean_class_acc=top1,
                train_s=10.0, **coverage)


# Three seeds of a row with proposals, a baseline without, and a row whose
# runs were evaluated before the coverage existed (their num_parts is the
# proposals per image, 4) or partly so.
COVERAGE_RECORDS = [
    _coverage_record('baseline', 0, 0.5, hit_rate=None, parts_covered=None,
                     parts_covered_random=None, num_parts=None),
    _coverage_record('sppn', 0, 0.6, hit_rate=0.4, num_parts=4),
    _coverage_record('sppn', 1, 0.7, hit_rate=0.5, num_parts=4),
    _coverage_record('daf', 0, 0.70, hit_rate=0.4, parts_covered=1.0,
                     parts_covered_random=0.5, num_parts=4.5, proposals_per_image=4),
    _coverage_record('daf', 1, 0.75, hit_rate=0.5, parts_covered=1.5,
                     parts_covered_random=0.5, num_parts=4.5, proposals_per_image=4),
    _coverage_record('daf', 2, 0.80, hit_rate=0.6, parts_covered=2.5,
                     parts_covered_random=0.8, num_parts=4.5, proposals_per_image=4),
    _coverage_record('daf_old', 0, 0.7, hit_rate=0.4, num_parts=4),
    _coverage_record('daf_old', 1, 0.8, hit_rate=0.5, parts_covered=2.0,
                     parts_covered_random=1.0, num_parts=5.0),
]


def test_summary_carries_the_part_coverage_mean_and_std_over_seeds():
    summary = learning_tables.aggregate(COVERAGE_RECORDS,
                                        ['baseline', 'sppn', 'daf', 'daf_old'])
    daf = summary['daf']
    # (1.0, 1.5, 2.5): mean 5/3, squared deviations 4/9 + 1/36 + 25/36 = 7/6.
    assert daf['parts_covered']['mean'] == pytest.approx(5 / 3)
    assert daf['parts_covered']['std'] == pytest.approx((7 / 12) ** 0.5)
    assert (daf['parts_covered']['min'], daf['parts_covered']['max'],
            daf['parts_covered']['n']) == (1.0, 2.5, 3)
    # (0.5, 0.5, 0.8): mean 0.6, squared deviations 0.01 + 0.01 + 0.04.
    assert daf['parts_covered_random']['mean'] == pytest.approx(0.6)
    assert daf['parts_covered_random']['std'] == pytest.approx(0.03 ** 0.5)
    assert daf['num_parts']['mean'] == 4.5 and daf['num_parts']['std'] == 0.0
    # No proposals, and old evaluations: no values; their num_parts (the
    # proposals per image) is not taken for the annotated parts.
    for row in ('baseline', 'sppn'):
        for key in ('parts_covered', 'parts_covered_random', 'num_parts'):
            assert summary[row][key] == dict(mean=None, std=None, min=None, max=None,
                                             n=0), (row, key)
    assert summary['sppn']['hit_rate']['mean'] == pytest.approx(0.45)
    # One old run and one new: the new one alone.
    assert summary['daf_old']['parts_covered'] == dict(mean=2.0, std=None, min=2.0,
                                                       max=2.0, n=1)
    assert summary['daf_old']['num_parts']['mean'] == 5.0


def _table_cells(text):
    """Rows of a printed table -> their 13-character cells after the name."""
    return {line[:18].strip(): [line[i:i + 13].strip() for i in range(18, len(line), 13)]
            for line in text.splitlines()}


def test_report_prints_the_coverage_columns_and_dashes_without_them():
    summary = learning_tables.aggregate(COVERAGE_RECORDS,
                                        ['baseline', 'sppn', 'daf', 'daf_old'])
    cells = _table_cells(learning_report.format_table(dict(summary=summary)))
    titles = cells['config']
    parts, random = titles.index('parts'), titles.index('parts') + 1
    assert titles[random] == 'random' and titles[-1] == 'train s'
    assert (cells['daf'][parts], cells['daf'][random]) == ('1.67 ± 0.76', '0.60 ± 0.17')
    assert (cells['daf_old'][parts], cells['daf_old'][random]) == ('2.00', '1.00')
    for row in ('baseline', 'sppn'):
        assert (cells[row][parts], cells[row][random]) == ('-', '-'), row
    # The other columns are as before: top-1, hit rate and train s.
    assert cells['daf'][titles.index('top-1 %')] == '75.0 ± 5.0'
    assert cells['daf'][titles.index('hit %')] == '50.0 ± 10.0'
    assert cells['daf'][-1] == '10.0 ± 0.0'
    assert cells['sppn'][titles.index('hit %')] == '45.0 ± 7.1'
    # A summary written before the coverage existed has no such keys at all.
    old_summary = {'daf': {key: value for key, value in summary['daf'].items()
                           if key not in ('parts_covered', 'parts_covered_random',
                                          'num_parts')}}
    old_cells = _table_cells(learning_report.format_table(dict(summary=old_summary)))
    assert (old_cells['daf'][parts], old_cells['daf'][random]) == ('-', '-')
    assert old_cells['daf'][titles.index('top-1 %')] == '75.0 ± 5.0'
    # The note under the table gives the ceilings (here 4.5 and 5 parts).
    assert learning_report.format_coverage_note(dict(summary=summary)) == (
        'parts: different annotated parts among the top 4 proposals of a test '
        'image, mean (random: boxes of the same sizes), of 4.50 / 5.00 visible '
        'parts per image')
    assert learning_report.format_coverage_note(dict(summary=old_summary)) == ''


def test_learning_json_carries_the_coverage_and_old_runs_print_dashes(
        tmp_path, monkeypatch, capsys):
    records = [dict(r, loadavg_end=[0.0] * 3) for r in COVERAGE_RECORDS
               if r['config'] in ('baseline', 'sppn', 'daf')]
    monkeypatch.setattr(learning, 'prepare_data', lambda args: '/data')
    monkeypatch.setattr(learning, 'run_all', lambda args, data_root: records)
    out = tmp_path / 'result.json'
    learning.main(['--configs', 'baseline', 'sppn', 'daf', '--no-pretrain',
                   '--work-dir', str(tmp_path), '--out', str(out)])
    summary = json.loads(out.read_text())['summary']
    assert summary['daf']['parts_covered']['mean'] == pytest.approx(5 / 3)
    assert summary['daf']['parts_covered']['std'] == pytest.approx((7 / 12) ** 0.5)
    assert summary['daf']['parts_covered_random']['mean'] == pytest.approx(0.6)
    assert summary['daf']['num_parts']['mean'] == 4.5
    assert summary['sppn']['parts_covered']['mean'] is None
    assert summary['baseline']['num_parts']['mean'] is None
    cells = _table_cells(capsys.readouterr().out.split('\nparts:')[0])
    parts = cells['config'].index('parts')
    assert cells['daf'][parts:parts + 2] == ['1.67 ± 0.76', '0.60 ± 0.17']
    assert cells['sppn'][parts:parts + 2] == ['-', '-']
    assert cells['baseline'][parts:parts + 2] == ['-', '-']


def _visible_part_centres(data_root):
    """image id -> (P, 2) centres of its visible parts' regions, read by hand
    from parts/part_locs.txt and parts/part_boxes.txt."""
    visible = {}
    for line in (pathlib.Path(data_root) / 'parts' / 'part_locs.txt').read_text().split('\n'):
        if line.strip():
            image_id, part_id, _, _, shown = line.split()
            visible[(int(image_id), int(part_id))] = shown == '1'
    centres = {}
    for line in (pathlib.Path(data_root) / 'parts' / 'part_boxes.txt').read_text().split('\n'):
        if line.strip():
            image_id, part_id, x1, y1, x2, y2 = line.split()
            if visible[(int(image_id), int(part_id))]:
                centres.setdefault(int(image_id), []).append(
                    ((float(x1) + float(x2)) / 2, (float(y1) + float(y2)) / 2))
    return {image_id: np.array(points) for image_id, points in centres.items()}


class _Proposes(torch.nn.Module):
    """Stand-in DAF model: predicts the ground truth, with 5 proposals per
    image: tiny boxes on its first and second visible part, the first again,
    then ``fourth`` (a tiny box on the first part, or the whole image), and
    the whole image fifth (beyond the top 4)."""

    def __init__(self, data_root, fourth):
        super().__init__()
        from mmpretrain.models import ClsDataPreprocessor
        self.data_preprocessor = ClsDataPreprocessor(num_classes=4)
        self.image_ids = common.read_image_ids(data_root)
        self.images_dir = osp.join(data_root, 'images')
        self.centres = _visible_part_centres(data_root)
        self.fourth = fourth

    def forward(self, inputs, data_samples, mode):
        for sample in data_samples:
            label = int(sample.gt_label)
            sample.set_pred_label(torch.tensor([label]))
            sample.set_pred_score(torch.nn.functional.one_hot(torch.tensor(label), 4).float())
            image_id = self.image_ids[osp.relpath(sample.img_path, self.images_dir)]
            # (A training image may show fewer than 2 parts: any points then.)
            points = self.centres.get(image_id, np.zeros((0, 2)))
            first, second = points[:2] if len(points) >= 2 else ((1.0, 1.0), (2.0, 2.0))
            height, width = sample.img_shape
            whole = [0.0, 0.0, float(width), float(height)]

            def tiny(c):
                return [c[0] - 0.01, c[1] - 0.01, c[0] + 0.01, c[1] + 0.01]

            fourth = tiny(first) if self.fourth == 'tiny' else whole
            boxes = [tiny(first), tiny(second), tiny(first), fourth, whole]
            sample.set_field(torch.tensor(boxes), 'part_boxes', field_type='data')
            sample.set_field(torch.tensor([4., 3., 2., 1., 0.]), 'part_scores',
                             field_type='data')
        return data_samples


@pytest.mark.parametrize('fourth', ['tiny', 'whole'])
def test_evaluation_counts_the_parts_the_top_4_proposals_cover(fourth, tmp_path,
                                                               monkeypatch):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import mmdaf.evaluation
    from mmdaf.datasets import make_synthetic_fgvc
    init_default_scope('mmpretrain')
    data_root = str(tmp_path / 'set')
    make_synthetic_fgvc(data_root, num_classes=4, train_per_class=1, test_per_class=2,
                        img_size=32, seed=0)
    cfg = Config.fromfile(config_path('_base_/datasets/synthetic_fgvc.py'))
    monkeypatch.setattr(learning_eval, 'load_trained_model',
                        lambda config_file, checkpoint: (cfg, _Proposes(data_root, fourth)))
    built = []

    class Spy(mmdaf.evaluation.PartCoverage):
        def __init__(self, *args, **kwargs):
            built.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(mmdaf.evaluation, 'PartCoverage', Spy)
    result = learning_eval.evaluate_checkpoint('run/cfg.py', 'epoch_8.pth', data_root,
                                               num_classes=4, random_draws=3)
    assert built == [dict(top_n=4, mode='regions', random_draws=3, seed=0)]
    assert result['num_test'] == 8 and result['top1'] == 1.0
    # The test images (ids listed in train_test_split.txt with 0) and their
    # visible parts, all inside the 32 px image.
    split = dict(line.split() for line in
                 (tmp_path / 'set' / 'train_test_split.txt').read_text().splitlines())
    test_ids = [int(image_id) for image_id, is_train in split.items() if is_train == '0']
    centres = _visible_part_centres(data_root)
    assert len(test_ids) == 8
    for image_id in test_ids:
        points = centres.get(image_id, np.zeros((0, 2)))
        assert len(points) >= 2 and np.ptp(points[:2], axis=0).max() > 0.02
        assert ((points >= 0) & (points <= 32)).all()
    num_parts = np.mean([len(centres[image_id]) for image_id in test_ids])
    assert 2 < num_parts < 5  # some parts are hidden
    assert result['num_parts'] == pytest.approx(num_parts)
    assert result['proposals_per_image'] == 5
    if fourth == 'tiny':
        # Two different parts (the first counts once); the whole image fifth
        # is not among the top 4. Random boxes of 0.02 px cover nothing.
        assert result['parts_covered'] == 2.0
        assert result['parts_covered_random'] < 0.01
    else:
        # The whole image as fourth box covers every part, wherever it is drawn.
        assert result['parts_covered'] == pytest.approx(num_parts)
        assert result['parts_covered_random'] == pytest.approx(num_parts)
    # The hit rate still counts all 5 boxes: the tiny ones hit their part.
    assert result['hit_rate'] >= (4 if fourth == 'tiny' else 3) / 5
