"""Refuse to evaluate with class embeddings that do not match the dataset."""
from typing import List, Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from densevlm_mm.registry import HOOKS
from densevlm_mm.vocabulary import check_same_classes


def check_class_names(model_names: Optional[List[str]], dataset_names, what: str) -> None:
    """Raise ``ValueError`` naming the first difference between two class lists."""
    check_same_classes(model_names, dataset_names, 'the evaluation text embeddings',
                       f'the {what} dataset',
                       "the rows must follow the dataset's category order: generate them for its "
                       'category list (tools/text_embeddings.py).')


@HOOKS.register_module()
class EvalClassCheckHook(Hook):
    """Before validation/testing, compare ``model.eval_class_names`` with the dataset's
    ``metainfo['classes']`` so a mismatch fails before any image is processed."""

    priority = 'VERY_HIGH'
    #: the model attribute holding the class names of its embedding rows
    names_attr = 'eval_class_names'
    #: ``check(model_names, dataset_names, what)`` raising ``ValueError`` on a mismatch
    check = staticmethod(check_class_names)

    def _check(self, runner, loader, what: str) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        dataset = getattr(loader, 'dataset', None)
        classes = getattr(dataset, 'metainfo', {}).get('classes') if dataset is not None else None
        self.check(getattr(model, self.names_attr, None), classes, what)

    def before_val(self, runner) -> None:
        self._check(runner, runner.val_dataloader, 'validation')

    def before_test(self, runner) -> None:
        self._check(runner, runner.test_dataloader, 'test')
