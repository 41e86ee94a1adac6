"""Common behaviour of frozen teachers (the P-VLM retriever, the CLIPSelf crop teacher)."""
from typing import Optional, Union

from mmengine.model import BaseModule
from torch import nn

from densevlm_mm.registry import MODELS


class FrozenTeacher(BaseModule):
    """A teacher wrapping a :class:`DenseVLMBackbone` that never trains.

    Its parameters have ``requires_grad=False``, it stays in eval mode, keeps the weights of its
    own checkpoint (``init_weights`` does nothing) and is left out of the algorithm's checkpoints:
    ``state_dict`` drops its keys and loading fills them from the live weights, so a student-only
    checkpoint loads strictly.
    """

    def __init__(self, backbone: Union[dict, nn.Module], init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        # nothing of a teacher trains: no probe for parameters that training would leave unused
        self.backbone = backbone if isinstance(backbone, nn.Module) else MODELS.build(
            backbone, default_args=dict(freeze_unused=False))
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self._keep_in_state_dict = False
        self._register_state_dict_hook(_drop_teacher_keys)
        self._register_load_state_dict_pre_hook(self._fill_teacher_keys)

    def train(self, mode: bool = True) -> 'FrozenTeacher':
        """Always in eval mode."""
        return super().train(False)

    def init_weights(self) -> None:
        """The weights come from the teacher's checkpoint; nothing to initialise."""

    def _fill_teacher_keys(self, state_dict: dict, prefix: str, *args) -> None:
        self._keep_in_state_dict = True
        try:
            own = super().state_dict(prefix=prefix)
        finally:
            self._keep_in_state_dict = False
        for name, value in own.items():
            state_dict.setdefault(name, value)


def _drop_teacher_keys(module: FrozenTeacher, state_dict: dict, prefix: str,
                       local_metadata) -> None:
    if module._keep_in_state_dict:
        return
    for key in [k for k in state_dict if k.startswith(prefix)]:
        del state_dict[key]
