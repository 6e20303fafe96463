from .distributed import (  # noqa: F401
    CPUDistributedDataParallel,
    close_distributed,
    setup_cpu_distributed,
)
from .hooks import (  # noqa: F401
    AtomicCheckpointHook,
    EffectiveBatchHook,
    FiniteLossHook,
    NumClassesCheckHook,
    PartVisualizationHook,
)
