from .sparse_cnns import (HGKDSparseConvNeXt, HGKDSparseMobileNetV2, HGKDSparseResNetMasked,
                          HGKDSparseResNetV1c, HGKDSparseResNetV1d, HGKDSparseResNeXt)
from .sparse_resnet import HGKDSparseResNet

__all__ = ['HGKDSparseResNet', 'HGKDSparseConvNeXt', 'HGKDSparseMobileNetV2',
           'HGKDSparseResNetMasked', 'HGKDSparseResNetV1c', 'HGKDSparseResNetV1d',
           'HGKDSparseResNeXt']
