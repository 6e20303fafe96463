"""Checkpoints that a kill cannot leave half-written.

mmengine 0.10.7 writes a checkpoint in place (``LocalBackend.put`` opens the
final path with ``'wb'``), deletes the oldest checkpoint beyond
``max_keep_ckpts`` *before* writing the new one, and rewrites
``last_checkpoint`` in place. A process killed during a save can therefore
leave a truncated ``iter_N.pth``, no complete checkpoint at all (with
``max_keep_ckpts=1``), or an empty ``last_checkpoint``.

:class:`AtomicCheckpointHook` fixes the three:

- files are written through :class:`AtomicLocalBackend`: to
  ``<name>.partial`` in the same folder, flushed and fsynced, then renamed
  over the final name with ``os.replace`` (atomic on POSIX and Windows), so a
  checkpoint path either holds a complete file or does not exist;
- ``last_checkpoint`` is written the same way, after the checkpoint it names
  is complete;
- checkpoints beyond ``max_keep_ckpts`` are deleted only after that.
"""
import os
import os.path as osp
from pathlib import Path
from typing import Union

import mmengine
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

PARTIAL_SUFFIX = '.partial'
ATOMIC_BACKEND = 'atomic_local'


def atomic_write(data: bytes, filepath: Union[str, Path]) -> None:
    """Write ``data`` to ``filepath`` so that readers see all or nothing.

    The bytes go to ``<filepath>.partial`` in the same folder, are flushed to
    disk, and the file is renamed over ``filepath``.

    Args:
        data (bytes): the file's content.
        filepath (str | Path): destination; its folder is created if needed.
    """
    filepath = str(filepath)
    folder = osp.dirname(osp.abspath(filepath))
    mmengine.mkdir_or_exist(folder)
    partial = filepath + PARTIAL_SUFFIX
    with open(partial, 'wb') as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, filepath)
    _fsync_folder(folder)


def _fsync_folder(folder: str) -> None:
    """Persist the rename itself (POSIX); not possible on Windows."""
    if not hasattr(os, 'O_DIRECTORY'):
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend with all-or-nothing :meth:`put`.

    Registered as the file backend ``'atomic_local'``; select it with
    ``backend_args=dict(backend='atomic_local')``.
    """

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        atomic_write(obj, filepath)

    def put_text(self, obj: str, filepath: Union[str, Path],
                 encoding: str = 'utf-8') -> None:
        atomic_write(obj.encode(encoding), filepath)


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)


def _is_local_path(path) -> bool:
    return path is None or '://' not in str(path)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` whose local saves survive a kill at any moment.

    Same arguments as mmengine's ``CheckpointHook``. For a local ``out_dir``
    (the default: the work dir) with no ``backend_args`` of its own, files are
    written through :class:`AtomicLocalBackend`; ``last_checkpoint`` is
    replaced atomically once the checkpoint it names is complete; checkpoints
    beyond ``max_keep_ckpts`` are deleted after that, never before. Leftover
    ``*.partial`` files of a killed run are removed at the start of training.

    For remote ``out_dir`` / ``backend_args`` it behaves exactly like
    ``CheckpointHook``.
    """

    def __init__(self, *args, **kwargs) -> None:
        if (kwargs.get('backend_args') is None
                and kwargs.get('file_client_args') is None
                and _is_local_path(kwargs.get('out_dir'))):
            kwargs['backend_args'] = dict(backend=ATOMIC_BACKEND)
        super().__init__(*args, **kwargs)

    @property
    def _atomic(self) -> bool:
        return isinstance(getattr(self, 'file_backend', None), AtomicLocalBackend)

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if not (self._atomic and is_main_process() and osp.isdir(self.out_dir)):
            return
        for name in sorted(os.listdir(self.out_dir)):
            if name.endswith(PARTIAL_SUFFIX):
                os.remove(osp.join(self.out_dir, name))
                print_log(f'AtomicCheckpointHook: removed {name}, an unfinished '
                          'save of an earlier run', logger='current')

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        if not self._atomic:
            super()._save_checkpoint_with_step(runner, step, meta)
            return
        expired_steps = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                            and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                expired_steps.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir,
            ckpt_filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        if not is_main_process():
            return

        atomic_write(self.last_ckpt.encode('utf-8'),
                     osp.join(runner.work_dir, 'last_checkpoint'))
        for expired_step in expired_steps:
            path = osp.join(self.out_dir, self.filename_tmpl.format(expired_step))
            if osp.isfile(path):
                os.remove(path)
