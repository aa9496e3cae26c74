"""Runner pieces: hooks."""
from .hooks import RNGStateHook, get_rng_states, set_rng_states

__all__ = ['RNGStateHook', 'get_rng_states', 'set_rng_states']
