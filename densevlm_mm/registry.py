"""Registries of the ``densevlm_mm`` scope.

Each registry is a child of the mmengine root registry of the same name, so a config with
``default_scope = 'densevlm_mm'`` builds our modules by bare name and mmengine's own by fallback to the
root. Modules of other OpenMMLab scopes are reached by prefix (``'mmdet.FPN'``, ``'mmseg.SAN'``,
``'mmpretrain.ClsDataPreprocessor'``). ``locations`` lets a registry import the package that fills it
on first use, so configs need no ``custom_imports``.
"""
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import EVALUATOR as MMENGINE_EVALUATOR
from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import INFERENCERS as MMENGINE_INFERENCERS
from mmengine.registry import LOG_PROCESSORS as MMENGINE_LOG_PROCESSORS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import RUNNER_CONSTRUCTORS as MMENGINE_RUNNER_CONSTRUCTORS
from mmengine.registry import RUNNERS as MMENGINE_RUNNERS
from mmengine.registry import TASK_UTILS as MMENGINE_TASK_UTILS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISBACKENDS as MMENGINE_VISBACKENDS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import WEIGHT_INITIALIZERS as MMENGINE_WEIGHT_INITIALIZERS
from mmengine.registry import Registry

SCOPE = 'densevlm_mm'


def _child(name: str, parent: Registry, *locations: str) -> Registry:
    return Registry(name, parent=parent, scope=SCOPE, locations=list(locations))


RUNNERS = _child('runner', MMENGINE_RUNNERS, 'densevlm_mm.engine')
RUNNER_CONSTRUCTORS = _child('runner constructor', MMENGINE_RUNNER_CONSTRUCTORS, 'densevlm_mm.engine')
LOOPS = _child('loop', MMENGINE_LOOPS, 'densevlm_mm.engine')
HOOKS = _child('hook', MMENGINE_HOOKS, 'densevlm_mm.engine')
LOG_PROCESSORS = _child('log processor', MMENGINE_LOG_PROCESSORS, 'densevlm_mm.engine')
OPTIMIZERS = _child('optimizer', MMENGINE_OPTIMIZERS, 'densevlm_mm.engine')
OPTIM_WRAPPERS = _child('optim wrapper', MMENGINE_OPTIM_WRAPPERS, 'densevlm_mm.engine')
OPTIM_WRAPPER_CONSTRUCTORS = _child('optimizer wrapper constructor',
                                    MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS, 'densevlm_mm.engine')
PARAM_SCHEDULERS = _child('parameter scheduler', MMENGINE_PARAM_SCHEDULERS, 'densevlm_mm.engine')
DATASETS = _child('dataset', MMENGINE_DATASETS, 'densevlm_mm.datasets')
DATA_SAMPLERS = _child('data sampler', MMENGINE_DATA_SAMPLERS, 'densevlm_mm.datasets')
TRANSFORMS = _child('transform', MMENGINE_TRANSFORMS, 'densevlm_mm.datasets')
MODELS = _child('model', MMENGINE_MODELS, 'densevlm_mm.models', 'densevlm_mm.models.algorithms')
MODEL_WRAPPERS = _child('model wrapper', MMENGINE_MODEL_WRAPPERS, 'densevlm_mm.models')
WEIGHT_INITIALIZERS = _child('weight initializer', MMENGINE_WEIGHT_INITIALIZERS, 'densevlm_mm.models')
TASK_UTILS = _child('task util', MMENGINE_TASK_UTILS, 'densevlm_mm.models')
METRICS = _child('metric', MMENGINE_METRICS, 'densevlm_mm.evaluation')
EVALUATOR = _child('evaluator', MMENGINE_EVALUATOR, 'densevlm_mm.evaluation')
VISUALIZERS = _child('visualizer', MMENGINE_VISUALIZERS, 'densevlm_mm.visualization')
VISBACKENDS = _child('vis_backend', MMENGINE_VISBACKENDS, 'densevlm_mm.visualization')
INFERENCERS = _child('inferencer', MMENGINE_INFERENCERS, 'densevlm_mm.engine')
FUNCTIONS = _child('function', MMENGINE_FUNCTIONS, 'densevlm_mm.datasets')

__all__ = [
    'SCOPE', 'RUNNERS', 'RUNNER_CONSTRUCTORS', 'LOOPS', 'HOOKS', 'LOG_PROCESSORS', 'OPTIMIZERS',
    'OPTIM_WRAPPERS', 'OPTIM_WRAPPER_CONSTRUCTORS', 'PARAM_SCHEDULERS', 'DATASETS', 'DATA_SAMPLERS',
    'TRANSFORMS', 'MODELS', 'MODEL_WRAPPERS', 'WEIGHT_INITIALIZERS', 'TASK_UTILS', 'METRICS',
    'EVALUATOR', 'VISUALIZERS', 'VISBACKENDS', 'INFERENCERS', 'FUNCTIONS'
]
