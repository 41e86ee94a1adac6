from .decoupled_align_loss import MODES, DecoupledAlignLoss, retrieve

__all__ = ['DecoupledAlignLoss', 'MODES', 'retrieve']
