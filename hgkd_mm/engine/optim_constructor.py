"""mmengine's default optimizer constructor, quiet about frozen modules.

``DefaultOptimWrapperConstructor`` logs a warning for every parameter that does not
require grad: some 150 lines for a ViT-B teacher on every start. Frozen modules give no
parameter to the optimizer either way; this constructor skips them without a word.
"""
from mmengine.optim import DefaultOptimWrapperConstructor
from mmpretrain.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class FrozenAwareOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` that passes over modules with no trainable
    parameter (the frozen teacher); the parameter groups are the same."""

    def add_params(self, params, module: nn.Module, prefix: str = '', **kwargs) -> None:
        if not any(p.requires_grad for p in module.parameters()):
            return
        super().add_params(params, module, prefix=prefix, **kwargs)
