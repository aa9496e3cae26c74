from .masked_ops import (MaskedBatchNorm2d, MaskedSyncBatchNorm2d, MaskPyramid,
                         masked_bn_stats, to_masked_norm)
from .spconv_ops import SpconvConv2d, import_spconv

__all__ = ['MaskPyramid', 'MaskedBatchNorm2d', 'MaskedSyncBatchNorm2d', 'masked_bn_stats',
           'to_masked_norm', 'SpconvConv2d', 'import_spconv']
