"""Give an open-vocabulary segmentor the evaluation dataset's class names before it evaluates."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from densevlm_mm.registry import HOOKS


@HOOKS.register_module()
class EvalClassesFromDatasetHook(Hook):
    """Before validation / testing, call ``model.set_eval_classes(dataset.metainfo['classes'])``
    for models built with ``test_classes='from_dataset'`` (e.g. :class:`CATSeg` on PASCAL-Context-459,
    whose names come from the dataset's ``labels.txt``). Runs before ``EvalClassCheckHook``."""

    priority = 'HIGHEST'

    def _set(self, runner, loader, what: str) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not getattr(model, 'test_classes_from_dataset', False):
            return
        dataset = getattr(loader, 'dataset', None)
        classes = getattr(dataset, 'metainfo', {}).get('classes') if dataset is not None else None
        if not classes:
            raise ValueError(f'the {what} dataset has no metainfo["classes"] to give the model '
                             "built with test_classes='from_dataset'")
        model.set_eval_classes(list(classes))

    def before_val(self, runner) -> None:
        self._set(runner, runner.val_dataloader, 'validation')

    def before_test(self, runner) -> None:
        self._set(runner, runner.test_dataloader, 'test')
