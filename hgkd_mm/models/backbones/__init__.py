from .sparse_resnet import HGKDSparseResNet

__all__ = ['HGKDSparseResNet']
