from .atomic_checkpoint_hook import (  # noqa: F401
    AtomicCheckpointHook,
    AtomicLocalBackend,
    atomic_write,
)
from .effective_batch_hook import EffectiveBatchHook  # noqa: F401
from .finite_loss_hook import FiniteLossHook  # noqa: F401
from .num_classes_check_hook import NumClassesCheckHook  # noqa: F401
from .part_loss_warmup_hook import PartLossWarmupHook  # noqa: F401
from .part_visualization_hook import PartVisualizationHook  # noqa: F401
