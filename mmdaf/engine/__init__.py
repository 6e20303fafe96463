from .distributed import CPUDistributedDataParallel, setup_cpu_distributed  # noqa: F401
from .hooks import (  # noqa: F401
    AtomicCheckpointHook,
    EffectiveBatchHook,
    FiniteLossHook,
    NumClassesCheckHook,
    PartVisualizationHook,
)
