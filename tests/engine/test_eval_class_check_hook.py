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
    with pytest.raises(ValueError, match=r"class 2 is missing in the evaluation text embeddings "
                       r"but 'road' in the test dataset \(2 classes in the evaluation text "
                       r"embeddings, 3 in the test dataset\); the rows must follow"):
        hook.before_test(_runner(['cat', 'sky'], ['cat', 'sky', 'road']))
    with pytest.raises(ValueError, match="class 1 is 'sky' in the evaluation text embeddings but "
                                         "'sea' in the validation dataset"):
        hook.before_val(_runner(['cat', 'sky'], ['cat', 'sea']))
