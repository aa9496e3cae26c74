"""Runner pieces: hooks, a multi-tensor LAMB, an optimizer constructor."""
from .hooks import (DeferredGradNormHook, RankZeroLoggerHook, RNGStateHook, get_rng_states,
                    set_rng_states)
from .optim_constructor import FrozenAwareOptimWrapperConstructor
from .optimizers import ForeachLamb

__all__ = [
    'DeferredGradNormHook', 'ForeachLamb', 'FrozenAwareOptimWrapperConstructor',
    'RankZeroLoggerHook', 'RNGStateHook',
    'get_rng_states', 'set_rng_states'
]
