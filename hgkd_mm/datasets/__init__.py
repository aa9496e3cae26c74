from .transforms import LoadImageOrRaise

__all__ = ['LoadImageOrRaise']
