from .hgkd import HGKD

__all__ = ['HGKD']
