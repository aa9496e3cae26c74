"""Frozen teachers that produce H-GKD's distillation targets."""
from .checkpoint import (convert_mae_decoder, convert_timm_vit, load_state_dict_strict,
                         load_teacher_checkpoint, safe_load)
from .patch_grid import teacher_grid, visible_patches
from .vit_backbone import TeacherViT
from .vit_teacher import FrozenViTTeacher

__all__ = [
    'FrozenViTTeacher', 'load_teacher_checkpoint', 'load_state_dict_strict', 'safe_load',
    'convert_timm_vit', 'convert_mae_decoder', 'TeacherViT', 'teacher_grid', 'visible_patches'
]
