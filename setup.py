from setuptools import find_packages, setup


def read_requirements(name):
    with open(f'requirements/{name}.txt') as f:
        return [line.strip() for line in f if line.strip() and not line.startswith('#')]


setup(
    name='hgkd_mm',
    version='0.1.0',
    description='H-GKD: heterogeneous generative knowledge distillation (ViT teacher -> sparse CNN) '
    'for OpenMMLab',
    packages=find_packages(include=['hgkd_mm', 'hgkd_mm.*']),
    python_requires='>=3.8',
    # mmengine 0.10.7 resolves `mmpretrain::` config bases with pkg_resources, which newer
    # setuptools (pulled in by torch >= 2.6) no longer ship; numpy < 2 as requirements/
    install_requires=['torch>=2.0', 'mmengine==0.10.7', 'mmcv>=2.0.0,<2.2.0', 'mmpretrain==1.2.0',
                      'setuptools<81', 'numpy<2', 'matplotlib', 'simplejpeg'],
    extras_require={
        # downstream tasks: mmdet Mask R-CNN and mmseg UperNet
        'det': ['mmdet==3.3.0', 'pycocotools'],
        'seg': ['mmsegmentation==1.2.2', 'ftfy', 'regex'],
        # real sparse convolution backend; pick the build that matches your CUDA
        # (hgkd_mm/utils/spconv_build.py; spconv-cu120 stops at 2.3.6)
        'spconv-cpu': ['spconv==2.3.8'],
        'spconv-cu118': ['spconv-cu118==2.3.8'],
        'spconv-cu120': ['spconv-cu120==2.3.6'],
        'spconv-cu121': ['spconv-cu121==2.3.8'],
        'spconv-cu124': ['spconv-cu124==2.3.8'],
        'spconv-cu126': ['spconv-cu126==2.3.8'],
        # mmengine's TensorboardVisBackend and WandbVisBackend (visualizer.vis_backends)
        'tensorboard': ['tensorboard'],
        'wandb': ['wandb'],
        'tests': read_requirements('tests'),
        'all': ['mmdet==3.3.0', 'pycocotools', 'mmsegmentation==1.2.2', 'ftfy', 'regex'] + read_requirements('tests'),
    },
)
