"""Train several configs one after the other in ONE set of DDP processes.

Started by ``tests/test_ddp_configs.py`` under torchrun, the launcher that
``tools/dist_train.sh`` uses::

    python -m torch.distributed.run --nproc_per_node 2 tests/ddp_worker.py JOBS OUT_DIR

``JOBS`` is a JSON file with a list of ``{"name": str, "argv": [CONFIG,
train.py arguments...]}``. For each job the Runner is made by
``tools/train.py``'s own functions (config file, flags, ``--cfg-options``,
dataset checks, CPU DDP setup) and trained; then every rank writes
``OUT_DIR/<name>/rank<r>.json``:

- ``iters``: iterations trained; ``losses``: the loss terms of the last one;
- ``wrapper`` and ``find_unused_parameters``: the DDP wrapper in use;
- ``digests``: SHA-1 of every parameter's bytes after training, so that the
  test can compare the ranks exactly;
- ``unchanged``: names of the parameters that training did not change,
  ``nonzero``: names of the parameters that are not all zero, and
  ``frozen``: names of the parameters with ``requires_grad=False``.

Sharing the processes saves the start-up (imports, process group) of one
torchrun per config. A job that raises writes its traceback in place of the
results and stops the run: the other rank may be waiting in a collective.
"""
import gc
import hashlib
import importlib.util
import json
import os
import os.path as osp
import sys
import traceback
from typing import Dict, List

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load_train_tool():
    """tools/train.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        'mmdaf_train_tool', osp.join(REPO_ROOT, 'tools', 'train.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def amp_to_fp32_without_cuda(cfg) -> None:
    """mmengine's AmpOptimWrapper refuses to start without a GPU: keep the
    optimizer and clipping of an AMP config, in fp32 (the model, with_cp
    included, is unchanged)."""
    wrapper = cfg.get('optim_wrapper', None) or {}
    if wrapper.get('type') == 'AmpOptimWrapper' and not torch.cuda.is_available():
        cfg.optim_wrapper = {key: value for key, value in wrapper.items()
                             if key in ('optimizer', 'clip_grad', 'accumulative_counts')}
        cfg.optim_wrapper['type'] = 'OptimWrapper'


class ProbeHook(Hook):
    """Records the weights before training, the last losses, and the state
    after training."""

    priority = 'LOWEST'

    def __init__(self) -> None:
        self.before: Dict[str, torch.Tensor] = {}
        self.losses: Dict[str, float] = {}

    @staticmethod
    def _model(runner):
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def before_train(self, runner) -> None:
        self.before = {name: param.detach().clone()
                       for name, param in self._model(runner).named_parameters()}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.losses = {name: float(value) for name, value in (outputs or {}).items()
                       if 'loss' in name}

    def result(self, runner) -> dict:
        params = dict(self._model(runner).named_parameters())
        return dict(
            iters=runner.iter,
            losses=self.losses,
            wrapper=type(runner.model).__name__,
            find_unused_parameters=bool(
                getattr(runner.model, 'find_unused_parameters', False)),
            digests={name: hashlib.sha1(
                param.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
                for name, param in params.items()},
            unchanged=sorted(name for name, param in params.items()
                             if torch.equal(param.detach(), self.before[name])),
            nonzero=sorted(name for name, param in params.items() if param.detach().any()),
            frozen=sorted(name for name, param in params.items() if not param.requires_grad),
        )


def write_json(path: str, data: dict) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as file:
        json.dump(data, file)


def run_jobs(jobs: List[dict], out_dir: str) -> int:
    train_tool = load_train_tool()
    rank = int(os.environ['RANK'])
    for job in jobs:
        path = osp.join(out_dir, job['name'], f'rank{rank}.json')
        try:
            cfg = train_tool.load_config(train_tool.parse_args(job['argv']))
            amp_to_fp32_without_cuda(cfg)
            runner = train_tool.build_runner(cfg)
            probe = ProbeHook()
            runner.register_hook(probe)
            runner.train()
            write_json(path, probe.result(runner))
            # The next job builds its own model: free this one's memory now.
            del runner, probe
            gc.collect()
        except Exception:  # noqa: BLE001  (reported to the test, then stop)
            write_json(path, dict(error=traceback.format_exc()))
            return 1
    return 0


def main() -> None:
    jobs_file, out_dir = sys.argv[1:3]
    with open(jobs_file) as file:
        jobs = json.load(file)
    sys.exit(run_jobs(jobs, out_dir))


if __name__ == '__main__':
    main()
