from .distill_head import HGKDDistillHead

__all__ = ['HGKDDistillHead']
