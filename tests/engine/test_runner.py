"""DenseVLMRunner: start-up dumps go to the log file only, the console stays short."""
import logging

from mmengine.model import BaseModel
from torch import nn

from densevlm_mm.engine.runner import DenseVLMRunner


class _Toy(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Linear(2, 2)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return self.w(inputs)


def test_console_leaves_out_environment_config_and_hook_order(tmp_path, capsys):
    runner = DenseVLMRunner(model=_Toy(), work_dir=str(tmp_path), experiment_name='quiet_runner',
                            cfg=dict(marker_key='visible_in_the_log_file'))
    console = capsys.readouterr().out
    for hidden in ('System environment', 'Config:', 'visible_in_the_log_file',
                   'Hooks will be executed'):
        assert hidden not in console, hidden
    files = [h for h in runner.logger.handlers if isinstance(h, logging.FileHandler)]
    assert len(files) == 1 and f'environment, config and hook order: {files[0].baseFilename}' \
        in console
    files[0].flush()
    with open(files[0].baseFilename) as f:
        text = f.read()
    for shown in ('System environment', 'Config:', 'visible_in_the_log_file',
                  'Hooks will be executed'):
        assert shown in text, shown
    runner.logger.info('loss: 0.5')  # progress still reaches the console
    assert 'loss: 0.5' in capsys.readouterr().out
    runner.logger.info('Saving checkpoint at 3 epochs')  # bookkeeping: log file only
    assert 'Saving checkpoint' not in capsys.readouterr().out
    files[0].flush()
    with open(files[0].baseFilename) as f:
        assert 'Saving checkpoint at 3 epochs' in f.read()
