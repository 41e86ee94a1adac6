"""Stages of the embedded default (``tools/run_tiny_demo.py``) after ``align``.

:data:`DEMO_FILE_ONLY` lists what the demo's console leaves to the log files on top of
:class:`densevlm_mm.engine.DenseVLMRunner`: per-model loading summaries, evaluation progress and
metric lines that the printed tables repeat, so that the console shows stages, losses and results.
"""
DEMO_FILE_ONLY = (
    r'loaded the image tower of ',
    r'DenseVLMBackbone\(.*\): \d+ trainable parameter tensors',
    r'init_weights: ',
    r'optimizer \w+ trains ',
    r'skipped training images so far: 0$',
    r'(Epoch|Iter)\((val|test)\) ?\[',
    r'per class results:',
)


def demo_runner_class():
    """mmengine's Runner with the demo's console (imported lazily: stages load fast)."""
    from mmengine.runner import Runner

    from densevlm_mm.engine import concise_runner_class
    return concise_runner_class(Runner, file_only=DEMO_FILE_ONLY)
