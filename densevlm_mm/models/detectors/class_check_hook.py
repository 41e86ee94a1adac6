"""Refuse to train or evaluate a detector whose text embeddings do not match the dataset classes."""
from densevlm_mm.engine.hooks.eval_class_check_hook import EvalClassCheckHook
from densevlm_mm.registry import HOOKS


@HOOKS.register_module()
class DetectorClassCheckHook(EvalClassCheckHook):
    """Compare the detector's ``class_names`` (its embedding file) with each dataset's
    ``metainfo['classes']`` before training / validation / testing; raise ``ValueError`` naming the
    first difference (label ``i`` must be embedding row ``i``)."""

    names_attr = 'class_names'

    @staticmethod
    def check(model_names, dataset_names, what: str) -> None:
        if model_names is None or dataset_names is None:
            return
        model_names, dataset_names = list(model_names), list(dataset_names)
        if model_names == dataset_names:
            return
        i = next((k for k, (a, b) in enumerate(zip(model_names, dataset_names)) if a != b),
                 min(len(model_names), len(dataset_names)))
        raise ValueError(
            f'the detector\'s text embeddings ({len(model_names)} classes) do not match the {what} '
            f'dataset ({len(dataset_names)} classes): first difference at label {i} '
            f'({model_names[i] if i < len(model_names) else None!r} vs '
            f'{dataset_names[i] if i < len(dataset_names) else None!r}). Generate the embedding '
            'file for the dataset\'s class list (tools/text_embeddings.py) or fix `classes`.')

    def before_train(self, runner) -> None:
        self._check(runner, runner.train_dataloader, 'training')
