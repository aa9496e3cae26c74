"""Runner pieces: hooks (atomic checkpoints, NaN guard, RNG states), a multi-tensor LAMB,
an optimizer constructor."""
from .checkpoint import (AtomicCheckpointHook, AtomicLocalBackend, CheckpointWriteError,
                         NonFiniteWeightsError)
from .data_hooks import SkippedImagesHook
from .hooks import (DeferredGradNormHook, RankZeroLoggerHook, RNGStateHook, get_rng_states,
                    set_rng_states)
from .nonfinite import NonFiniteGuardHook, NonFiniteLossError
from .optim_constructor import FrozenAwareOptimWrapperConstructor
from .optimizers import ForeachLamb
from .throughput_hook import ThroughputHook
from .visualization_hook import DistillVisualizationHook

__all__ = [
    'AtomicCheckpointHook', 'AtomicLocalBackend', 'CheckpointWriteError', 'NonFiniteWeightsError',
    'NonFiniteGuardHook', 'NonFiniteLossError', 'SkippedImagesHook',
    'DistillVisualizationHook',
    'DeferredGradNormHook', 'ForeachLamb', 'FrozenAwareOptimWrapperConstructor',
    'RankZeroLoggerHook', 'RNGStateHook', 'ThroughputHook',
    'get_rng_states', 'set_rng_states'
]
