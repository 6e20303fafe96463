"""``init_weights`` without mmengine's INFO paragraph for every parameter."""
import torch.nn as nn
from mmengine.logging import MMLogger


def init_weights_quietly(model: nn.Module) -> None:
    """``model.init_weights()`` with the current logger at WARNING meanwhile."""
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('WARNING')
    try:
        model.init_weights()
    finally:
        logger.setLevel(level)
