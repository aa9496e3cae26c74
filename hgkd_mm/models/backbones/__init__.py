from .sparse_cnns import (HGKDSparseConvNeXt, HGKDSparseMobileNetV2, HGKDSparseResNetMasked,
                          HGKDSparseResNetV1c, HGKDSparseResNetV1d, HGKDSparseResNeXt,
                          student_stages)
from .sparse_resnet import HGKDSparseResNet

__all__ = ['HGKDSparseResNet', 'HGKDSparseConvNeXt', 'HGKDSparseMobileNetV2',
           'HGKDSparseResNetMasked', 'HGKDSparseResNetV1c', 'HGKDSparseResNetV1d',
           'HGKDSparseResNeXt', 'student_stages']
