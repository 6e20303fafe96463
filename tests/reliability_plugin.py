"""Test-only faults for ``tools/train.py`` subprocesses.

Imported through the config's ``custom_imports`` (with ``tests/`` on
``PYTHONPATH``) by tests/test_atomic_checkpoint.py; never by library code.

- ``MMDAF_TEST_STALL_SAVE=<name>``: a file opened for writing whose name
  contains ``<name>`` gets the first half of its bytes written and flushed,
  then the process writes ``<folder>/SAVE_STALLED`` and sleeps, so that the
  test can SIGKILL it in the middle of a checkpoint write.
- ``StallAtIterHook(at_iter)``: before iteration ``at_iter`` (``runner.iter``)
  writes ``<work_dir>/ITER_STALLED`` and sleeps (a kill between saves).
"""
import builtins
import os
import os.path as osp
import time

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

STALL_SECONDS = 300
_real_open = builtins.open


class StallingWriter:
    """A binary file whose first ``write`` stops half-way."""

    def __init__(self, file, path: str):
        self._file = file
        self._path = path

    def write(self, data) -> int:
        half = len(data) // 2
        self._file.write(data[:half])
        self._file.flush()
        os.fsync(self._file.fileno())
        with _real_open(osp.join(osp.dirname(self._path), 'SAVE_STALLED'), 'w') as mark:
            mark.write(self._path)
        time.sleep(STALL_SECONDS)
        self._file.write(data[half:])
        return len(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._file.close()

    def __getattr__(self, name):
        return getattr(self._file, name)


def _open(file, mode='r', *args, **kwargs):
    opened = _real_open(file, mode, *args, **kwargs)
    pattern = os.environ.get('MMDAF_TEST_STALL_SAVE')
    if (pattern and isinstance(file, (str, os.PathLike)) and 'w' in mode
            and 'b' in mode and pattern in osp.basename(str(file))):
        return StallingWriter(opened, str(file))
    return opened


builtins.open = _open


@HOOKS.register_module()
class StallAtIterHook(Hook):

    def __init__(self, at_iter: int):
        self.at_iter = at_iter

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.at_iter:
            with _real_open(osp.join(runner.work_dir, 'ITER_STALLED'), 'w') as mark:
                mark.write(str(runner.iter))
            time.sleep(STALL_SECONDS)
