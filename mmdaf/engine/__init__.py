from .distributed import CPUDistributedDataParallel, setup_cpu_distributed  # noqa: F401
from .hooks import (  # noqa: F401
                          AtomicCheckpointHook,
                          FiniteLossHook,
                          NumClassesCheckHook,
)
from .part_visualization_hook import PartVisualizationHook  # noqa: F401
