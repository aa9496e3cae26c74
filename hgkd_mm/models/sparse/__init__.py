from .masked_ops import (MaskedBatchNorm2d, MaskedSyncBatchNorm2d, MaskPyramid,
                         masked_bn_stats, to_masked_norm)
from .packed_ops import PackedLayout
from .sparsify import SparseCNN
from .spconv_ops import SpconvConv2d, import_spconv

__all__ = ['MaskPyramid', 'MaskedBatchNorm2d', 'MaskedSyncBatchNorm2d', 'masked_bn_stats',
           'to_masked_norm', 'PackedLayout', 'SpconvConv2d', 'import_spconv',
           'SparseCNN']
