"""Runner pieces: hooks and a multi-tensor LAMB."""
from .hooks import RNGStateHook, get_rng_states, set_rng_states
from .optimizers import ForeachLamb

__all__ = ['ForeachLamb', 'RNGStateHook', 'get_rng_states', 'set_rng_states']
