"""mmdaf: DAF-net (Dual Attention Fusion) as an OpenMMLab plugin.

Importing this package registers every mmdaf component: necks, heads,
classifiers and losses in mmpretrain's registries, the SPPN dense head and its
losses in mmdet's ``MODELS``. It also allow-lists the few non-tensor objects
that mmengine checkpoints hold, so that resume and ``load_from`` work with
torch's weights-only loading.
"""
from . import apis, datasets, engine, evaluation, models, utils  # noqa: F401
from .utils import allow_checkpoint_globals, register_checkpoint_loader
from .version import __version__

allow_checkpoint_globals()
register_checkpoint_loader()

__all__ = ['__version__']
