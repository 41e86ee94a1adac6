from .clipself_loss import CLIPSelfLoss
from .decoupled_align_loss import MODES, DecoupledAlignLoss
from .logits_kd_loss import LogitsKDLoss
from .region_clip_loss import RegionCLIPLoss

__all__ = ['DecoupledAlignLoss', 'MODES', 'CLIPSelfLoss', 'LogitsKDLoss', 'RegionCLIPLoss']
