"""densevlm-mm: DenseVLM region-language alignment as an OpenMMLab 2.0 plugin."""
import os.path as osp

from setuptools import find_packages, setup


def read_requirements(name: str) -> list:
    """Non-comment lines of ``requirements/<name>.txt``."""
    path = osp.join(osp.dirname(__file__), 'requirements', f'{name}.txt')
    with open(path) as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.startswith('#')]


setup(
    name='densevlm_mm',
    version='0.1.0',
    description='DenseVLM (decoupled region-language alignment of CLIP) for mmdet/mmseg/mmpretrain',
    packages=find_packages(include=['densevlm_mm', 'densevlm_mm.*']),
    package_data={'densevlm_mm': ['model_configs/*.json', 'vocab_data/*.json']},
    python_requires='>=3.10',
    install_requires=(read_requirements('torch') + read_requirements('runtime')
                      + read_requirements('mm')),
    extras_require={'tests': read_requirements('tests')},
)
