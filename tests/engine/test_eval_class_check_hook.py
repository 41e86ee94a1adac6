from types import SimpleNamespace

import pytest

from densevlm_mm.engine import EvalClassCheckHook


def _runner(model_names, dataset_names):
    loader = SimpleNamespace(dataset=SimpleNamespace(metainfo=dict(classes=dataset_names)))
    return SimpleNamespace(model=SimpleNamespace(eval_class_names=model_names),
                           val_dataloader=loader, test_dataloader=loader)


def test_matching_classes_pass_and_mismatches_fail_before_inference():
    hook = EvalClassCheckHook()
    hook.before_val(_runner(['cat', 'sky'], ('cat', 'sky')))
    hook.before_test(_runner(None, ('cat', 'sky')))  # no eval embeddings: nothing to check
    with pytest.raises(ValueError, match='2 classes but the test dataset has 3'):
        hook.before_test(_runner(['cat', 'sky'], ['cat', 'sky', 'road']))
    with pytest.raises(ValueError, match="class 1 .* 'sky' but the validation dataset has 'sea'"):
        hook.before_val(_runner(['cat', 'sky'], ['cat', 'sea']))
