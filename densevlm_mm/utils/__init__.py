from .checkpoint import (allow_mmengine_checkpoint_meta, load_checkpoint_file,
                         load_state_dict_reported)
from .checks import check_bool, check_choice, check_number
from .setup_env import register_all_modules

__all__ = [
    'register_all_modules', 'allow_mmengine_checkpoint_meta', 'load_checkpoint_file',
    'load_state_dict_reported', 'check_number', 'check_bool', 'check_choice'
]
