from .checkpoint import (
    allow_checkpoint_globals,
    checkpoint_safe_globals,
    register_checkpoint_loader,
)

__all__ = ['allow_checkpoint_globals', 'checkpoint_safe_globals',
           'register_checkpoint_loader']
