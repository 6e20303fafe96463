"""Writing a benchmark's results: always JSON, checked before the run.

mmengine.dump picks the format from the file extension, so ``--out results``
used to run the whole benchmark and then fail with "Unsupported format",
losing the results. These helpers write JSON whatever the name (JSON is also
valid YAML) and check the path when the arguments are parsed.
"""
import argparse
import json
import os
import os.path as osp
from typing import Any, Optional


def check_out_path(parser: argparse.ArgumentParser, path: Optional[str]) -> None:
    """Fail now, through ``parser.error``, if ``path`` cannot be written later.

    Creates the parent folder. Refuses an existing folder and a parent that is
    not writable.
    """
    if not path:
        return
    if osp.isdir(path):
        parser.error(f'--out {path!r} is a folder; give a file name')
    parent = osp.dirname(osp.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as error:
        parser.error(f'--out {path!r}: cannot create {parent!r}: {error}')
    if not os.access(parent, os.W_OK):
        parser.error(f'--out {path!r}: folder {parent!r} is not writable')


def _to_json(value: Any) -> Any:
    """numpy and torch scalars and arrays, sets and tuples -> JSON types."""
    if hasattr(value, 'tolist'):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f'{type(value).__name__} is not JSON serialisable')


def write_json(result: Any, path: Optional[str]) -> None:
    """Write ``result`` as indented JSON to ``path`` (any extension); no-op
    without a path."""
    if not path:
        return
    with open(path, 'w') as handle:
        json.dump(result, handle, indent=2, default=_to_json)
    print(f'wrote {path}')
