from .checkpoint import load_checkpoint_file, load_state_dict_reported
from .setup_env import register_all_modules

__all__ = ['register_all_modules', 'load_checkpoint_file', 'load_state_dict_reported']
