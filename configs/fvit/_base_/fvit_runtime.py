# Runtime of the F-ViT configs: the project's runtime plus mmdet's visualiser and the class check.
_base_ = ['../../_base_/default_runtime.py']

# The model and dataset dicts are built under the mmdet scope (`_scope_='mmdet'`: mmdet's parts and
# their defaults by bare name), this package's modules with the `densevlm_mm.` prefix; the detector
# modules, the OV datasets and mmseg's necks are imported here (no registry location needed).
custom_imports = dict(
    imports=['densevlm_mm.models.detectors', 'densevlm_mm.datasets.ov_detection',
             'mmseg.models.necks'],
    allow_failed_imports=False)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3),
    visualization=dict(type='mmdet.DetVisualizationHook'))
# text-embedding classes == dataset classes, checked before training / validation / testing
custom_hooks = [dict(type='DetectorClassCheckHook')]
visualizer = dict(type='mmdet.DetLocalVisualizer', vis_backends=[dict(type='LocalVisBackend')],
                  name='visualizer')
log_processor = dict(window_size=50, by_epoch=True)
env_cfg = dict(cudnn_benchmark=False)
