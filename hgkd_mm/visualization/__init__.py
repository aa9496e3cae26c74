"""Pictures and curves of a run: what the student predicts next to the teacher's target
(``tools/analysis_tools/visualize_distill.py``, ``DistillVisualizationHook``) and the
logged scalars of runs (``tools/analysis_tools/plot_curves.py``)."""
from .curves import plot_curves, read_scalars
from .distill import (DistillViews, distill_pictures, distill_views, evaluating, image_paths,
                      load_images, load_student_checkpoint, pca_rgb, picture_names,
                      seeded_mask)

__all__ = [
    'DistillViews', 'distill_pictures', 'distill_views', 'evaluating', 'image_paths',
    'load_images', 'load_student_checkpoint', 'pca_rgb', 'picture_names', 'plot_curves',
    'read_scalars', 'seeded_mask'
]
