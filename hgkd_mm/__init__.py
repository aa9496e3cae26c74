"""H-GKD for OpenMMLab: a frozen MIM ViT teacher distilled into a sparse CNN student.

Importing this package registers its modules in mmpretrain's registries
(``custom_imports=dict(imports=['hgkd_mm'])``).
"""
from . import datasets, engine, models, utils  # noqa: F401

__version__ = '0.1.0'
