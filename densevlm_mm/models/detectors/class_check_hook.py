"""Refuse to train or evaluate a detector whose text embeddings do not match the dataset classes."""
from densevlm_mm.engine.hooks.eval_class_check_hook import EvalClassCheckHook
from densevlm_mm.registry import HOOKS
from densevlm_mm.vocabulary import check_same_classes


@HOOKS.register_module()
class DetectorClassCheckHook(EvalClassCheckHook):
    """Compare the detector's ``class_names`` (its embedding file) with each dataset's
    ``metainfo['classes']`` before training / validation / testing; raise ``ValueError`` naming the
    first difference (label ``i`` must be embedding row ``i``)."""

    names_attr = 'class_names'

    @staticmethod
    def check(model_names, dataset_names, what: str) -> None:
        check_same_classes(model_names, dataset_names, "the detector's text embeddings",
                           f'the {what} dataset',
                           "generate the embedding file for the dataset's class list "
                           '(tools/text_embeddings.py) or fix `classes`.')

    def before_train(self, runner) -> None:
        self._check(runner, runner.train_dataloader, 'training')
