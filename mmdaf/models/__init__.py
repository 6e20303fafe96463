from . import backbones, classifiers, dense_heads, heads, losses, necks, utils  # noqa: F401
