"""The timm references and checkpoint files of the teacher tests (timm_reference.py)."""
from timm_reference import files, images, timm_decoder, timm_vit  # noqa: F401 (fixtures)
