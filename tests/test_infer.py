"""tools/infer.py and DAFInferencer on a randomly initialised DAF r18 checkpoint."""
import json
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, config_path
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import save_checkpoint
from mmpretrain.registry import MODELS

from mmdaf.apis import DAFInferencer, list_images
from mmdaf.apis.inferencer import boxes_to_original, update_affine

CLASS_NAMES = ['001.red_beak', '002.yellow_beak', '003.blue_beak', '004.black_beak']


def write_tiny_config(tmp_path) -> str:
    """DAF r18 (synthetic) with 4 classes, as a config file for the tool."""
    path = tmp_path / 'daf_r18_4cls.py'
    path.write_text(
        f"_base_ = [{config_path('daf_r18_synthetic.py')!r}]\n"
        "model = dict(head=dict(num_classes=4), backbone=dict(init_cfg=None),\n"
        "             teacher=dict(head=dict(num_classes=4), backbone=dict(init_cfg=None)),\n"
        "             fusion_head=dict(num_classes=4))\n"
        "data_preprocessor = dict(num_classes=4)\n")
    return str(path)


def tool_env() -> dict:
    """Environment for a tool subprocess: this checkout's mmdaf comes first, not
    whatever copy is installed (a tool's own folder heads its sys.path)."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [REPO_ROOT, env.get('PYTHONPATH')]))
    return env


@pytest.fixture(scope='module')
def daf_checkpoint(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp('infer')
    config = write_tiny_config(tmp_path)
    cfg = Config.fromfile(config)
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    model_cfg = dict(cfg.model, data_preprocessor=cfg.data_preprocessor)
    model = MODELS.build(model_cfg)
    model.init_weights()
    checkpoint = str(tmp_path / 'random_daf.pth')
    save_checkpoint({'meta': {'dataset_meta': {'classes': CLASS_NAMES}},
                     'state_dict': model.state_dict()}, checkpoint)
    return config, checkpoint


def test_infer_tool_writes_sorted_topk_json_and_pictures(daf_checkpoint, tiny_cub_root,
                                                         tmp_path):
    config, checkpoint = daf_checkpoint
    images = list_images(osp.join(tiny_cub_root, 'images'))[:2]
    out_dir = tmp_path / 'out'
    completed = subprocess.run(
        [sys.executable, osp.join(REPO_ROOT, 'tools', 'infer.py'), config, checkpoint,
         *images, '--out-dir', str(out_dir), '--topk', '3', '--min-side', '128'],
        cwd=REPO_ROOT, env=tool_env(), capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]

    records = json.loads((out_dir / 'predictions.json').read_text())
    assert [record['path'] for record in records] == images

    # in-process reference on the same weights
    expected = DAFInferencer(config, checkpoint)(images, topk=4)
    for record, reference in zip(records, expected):
        scores = [item['score'] for item in record['topk']]
        assert len(scores) == 3
        assert scores == sorted(scores, reverse=True)
        assert 0 < sum(scores) <= 1 + 1e-6
        for item in record['topk']:
            assert item['class_name'] == CLASS_NAMES[item['class_index']]
            assert item['score'] == pytest.approx(
                float(reference['pred_score'][item['class_index']]), abs=1e-5)
        assert [item['class_index'] for item in record['topk']] == \
            [item['class_index'] for item in reference['topk'][:3]]
        # the pipeline does not resize: boxes are drawn on the original image
        assert record['boxes_frame'] == 'original'
        assert np.array(record['part_boxes']).shape == (4, 4)
        # in the 64 px image's pixels, not the 2x picture's
        assert np.array(record['part_boxes']).max() <= 64
        assert len(record['part_scores']) == 4
        np.testing.assert_allclose(record['part_boxes'], reference['part_boxes'],
                                   atol=0.01)

        picture = cv2.imread(record['visualization'])
        source = cv2.imread(record['path'])
        assert source.shape == (64, 64, 3)
        assert picture.shape == (128, 128, 3)  # --min-side 128: drawn 2x
        assert not np.array_equal(picture, np.repeat(np.repeat(source, 2, 0), 2, 1))
    assert 'wrote' in completed.stdout and CLASS_NAMES[0][:3] in completed.stdout


def test_resize_and_center_crop_are_inverted(daf_checkpoint, tiny_cub_root):
    config, checkpoint = daf_checkpoint
    # 64 px -> Resize to 96 -> CenterCrop 80: input = 1.5 * original - 8
    pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(96, 96)),
                dict(type='CenterCrop', crop_size=80), dict(type='PackInputs')]
    inferencer = DAFInferencer(
        config, checkpoint,
        cfg_options={'test_dataloader.dataset.pipeline': pipeline})
    image = list_images(tiny_cub_root)[0]
    result = inferencer(image, topk=2)[0]
    assert result['input_to_original'] == (1.5, 1.5, -8.0, -8.0)
    assert result['input_image'].shape == (80, 80, 3)
    assert result['original_image'].shape == (64, 64, 3)
    np.testing.assert_allclose(result['part_boxes_original'],
                               (result['part_boxes'] + 8.0) / 1.5, rtol=1e-6)
    picture = inferencer.visualize(result)
    assert picture.shape == (384, 384, 3)  # the 64 px original, drawn 6x
    assert inferencer.visualize(result, min_side=0).shape == (64, 64, 3)


def test_draw_test_parts_writes_one_picture_per_class_first(daf_checkpoint,
                                                            tiny_cub_root, tmp_path):
    config, checkpoint = daf_checkpoint
    out_dir = tmp_path / 'part_pictures'
    # 4 classes x 2 test images: 5 pictures are one per class, then one more
    completed = subprocess.run(
        [sys.executable, osp.join(REPO_ROOT, 'tools', 'misc', 'draw_test_parts.py'),
         config, checkpoint, '--data-root', tiny_cub_root, '--out-dir', str(out_dir),
         '--num-images', '5'],
        cwd=REPO_ROOT, env=tool_env(), capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]

    lines = completed.stdout.strip().splitlines()
    assert lines[-1] == f'part pictures (5): {out_dir}'
    names = sorted(os.listdir(out_dir))
    assert len(names) == 5
    assert [name[:3] for name in names] == ['00_', '01_', '02_', '03_', '04_']
    # "<picture>: true <class>, predicted <class> (<score>)", one per picture,
    # after mmengine's checkpoint-loading message
    printed = [line.split(': ', 1) for line in lines[-6:-1]]
    assert [name for name, _ in printed] == names
    assert all(text.startswith('true ') for _, text in printed)
    true_classes = [text.split(',')[0][len('true '):] for _, text in printed]
    assert sorted(true_classes[:4]) == CLASS_NAMES
    assert true_classes[4] == true_classes[0]
    for name in names:
        picture = cv2.imread(str(out_dir / name))
        # the 64 px image drawn 6x, under a caption band
        assert picture.shape[1] == 384 and 384 < picture.shape[0] <= 384 + 120


def test_affine_bookkeeping_by_hand():
    affine = update_affine((1.0, 1.0, 0.0, 0.0), 'Resize', (100, 200), (50, 400), False)
    assert affine == (2.0, 0.5, 0.0, 0.0)
    affine = update_affine(affine, 'CenterCrop', (50, 400), (40, 300), False)
    assert affine == (2.0, 0.5, -50.0, -5.0)
    boxes = boxes_to_original(np.array([[50.0, 5.0, 250.0, 25.0]]), affine)
    np.testing.assert_allclose(boxes, [[50.0, 20.0, 150.0, 60.0]])
    assert update_affine(affine, 'RandomResizedCrop', (40, 300), (32, 32),
                         False) is None
    assert update_affine(affine, 'ColorJitter', (40, 300), (40, 300), True) is None


def test_bad_inputs(daf_checkpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match='neither a file nor a folder'):
        list_images([str(tmp_path / 'missing.jpg')])
    with pytest.raises(ValueError, match='no images'):
        list_images([str(tmp_path)])
    config, checkpoint = daf_checkpoint
    with pytest.raises(ValueError, match='topk must be a positive int'):
        DAFInferencer(config, checkpoint)([], topk=0)


def test_inferencer_normalises_like_the_runner(daf_checkpoint, tiny_cub_root):
    """The config's top-level data_preprocessor (mean, std, to_rgb) reaches the
    model: without it every image got the same class with probability 1."""
    config, checkpoint = daf_checkpoint
    inferencer = DAFInferencer(config, checkpoint)
    preprocessor = inferencer.model.data_preprocessor
    torch.testing.assert_close(preprocessor.mean.flatten(),
                               torch.tensor([123.675, 116.28, 103.53]))
    torch.testing.assert_close(preprocessor.std.flatten(),
                               torch.tensor([58.395, 57.12, 57.375]))
    assert preprocessor.to_rgb
