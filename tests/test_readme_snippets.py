"""README's code snippets are the files the test suite runs, word for word."""
import os.path as osp
import re
import runpy

import pytest
from conftest import REPO_ROOT
from mmengine.registry import init_default_scope

SNIPPET = re.compile(r'<!-- snippet: (\S+) -->\n```python\n(.*?)```', re.S)


def readme_snippets():
    with open(osp.join(REPO_ROOT, 'README.md')) as f:
        return SNIPPET.findall(f.read())


def test_readme_has_the_component_snippets():
    paths = [path for path, _ in readme_snippets()]
    assert 'configs/examples/resnet50_paf-bilinear_cub.py' in paths
    assert 'docs/snippets/sppn_standalone.py' in paths


@pytest.mark.parametrize('path, text', readme_snippets())
def test_snippet_matches_its_file(path, text):
    with open(osp.join(REPO_ROOT, path)) as f:
        assert f.read() == text, f'README.md snippet differs from {path}'


def test_sppn_snippet_runs_and_prints_n_boxes(capsys):
    try:
        runpy.run_path(osp.join(REPO_ROOT, 'docs', 'snippets', 'sppn_standalone.py'))
    finally:
        # The snippet switches the process-wide default scope to mmdet.
        init_default_scope('mmpretrain')
    assert capsys.readouterr().out.strip() == 'torch.Size([4, 4]) torch.Size([4])'
