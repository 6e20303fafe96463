from .checkpoint import (
    allow_checkpoint_globals,
    checkpoint_safe_globals,
    register_checkpoint_loader,
)
from .init_weights import init_weights_quietly
from .pretrained import check_local_pretrained, pretrained_init_cfgs

__all__ = ['allow_checkpoint_globals', 'check_local_pretrained', 'checkpoint_safe_globals',
           'init_weights_quietly', 'pretrained_init_cfgs', 'register_checkpoint_loader']
