"""Dense joint-space features from stock open_clip image towers (spec §1).

:class:`DenseVLMBackbone` keeps only the image tower (``clip.visual``) of a stock open_clip model
and adds the DenseVLM dense paths through a per-family adapter (``vit``, ``eva02``, ``resnet``,
``convnext``). Its state dict is the tower's under ``visual.`` (the open_clip CLIP layout).
"""
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.model.weight_init import initialize
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from densevlm_mm.registry import MODELS


def resample_pos_embed(pos: Tensor, old_grid: Sequence[int], new_grid: Sequence[int],
                       num_prefix: int = 1) -> Tensor:
    """Resize a learned position table on the fly (spec §1.1, §9.2).

    Plain ``F.interpolate(mode='bicubic', align_corners=False)`` without antialias (timm's
    ``resample_abs_pos_embed`` antialiases and differs from the reference); prefix (CLS) rows kept.

    Args:
        pos: ``[num_prefix + Gh*Gw, C]`` (or with a leading 1).
        old_grid: ``(Gh, Gw)`` of the table.
        new_grid: target ``(h, w)``.

    Returns:
        ``[num_prefix + h*w, C]`` (leading 1 kept if given).
    """
    squeeze = pos.dim() == 3
    table = pos[0] if squeeze else pos
    gh, gw = int(old_grid[0]), int(old_grid[1])
    h, w = int(new_grid[0]), int(new_grid[1])
    if table.shape[0] != num_prefix + gh * gw:
        raise ValueError(f'position table of {table.shape[0]} rows does not match grid '
                         f'{gh}x{gw} + {num_prefix} prefix tokens')
    if (gh, gw) != (h, w):
        prefix, grid = table[:num_prefix], table[num_prefix:]
        grid = grid.reshape(1, gh, gw, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid.float(), size=(h, w), mode='bicubic', align_corners=False)
        grid = grid.permute(0, 2, 3, 1).reshape(h * w, -1).to(table.dtype)
        table = torch.cat([prefix, grid], dim=0)
    return table[None] if squeeze else table


def maybe_checkpoint(fn: Callable, *args, enabled: bool = False, **kwargs):
    """``fn(*args, **kwargs)``, through ``torch.utils.checkpoint`` when ``enabled``."""
    if enabled:
        return checkpoint(fn, *args, use_reentrant=False, **kwargs)
    return fn(*args, **kwargs)


def resolve_indices(indices: Sequence[int], n: int, what: str) -> List[int]:
    out = []
    for i in indices:
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise ValueError(f'out_indices entry {i} is out of range for {n} {what}')
        out.append(j)
    return out


class DenseAdapter:
    """Family-specific dense paths. Stateless w.r.t. modules: every method takes ``visual``.

    Subclasses set ``family``, ``stride``, ``embed_dim``, ``width`` and implement the methods.
    """
    family: str = ''
    stride: int = 0
    embed_dim: int = 0
    #: name of the trainable-group unit in messages ('blocks' / 'stages')
    group_unit: str = 'blocks'

    def dense(self, visual: nn.Module, x: Tensor, ckpt: bool) -> Tensor:
        """``[B,3,H,W]`` -> ``[B,D,h,w]`` joint-space map (not normalised)."""
        raise NotImplementedError

    def encode_image(self, visual: nn.Module, x: Tensor, ckpt: bool) -> Tensor:
        """``[B,3,H,W]`` -> ``[B,D]`` stock global embedding."""
        raise NotImplementedError

    def features(self, visual: nn.Module, x: Tensor, indices: Sequence[int],
                 ckpt: bool) -> List[Tensor]:
        """Maps ``[B,C_i,h_i,w_i]`` for the resolved ``indices``."""
        raise NotImplementedError

    def num_features(self, visual: nn.Module) -> int:
        raise NotImplementedError

    def groups(self, visual: nn.Module) -> List[nn.Module]:
        """Unlockable groups, first to last (blocks for ViTs, stem + stages for CNNs)."""
        raise NotImplementedError

    def set_grad_checkpointing(self, visual: nn.Module, enable: bool) -> None:
        pass


def _build_adapter(visual: nn.Module) -> DenseAdapter:
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import VisionTransformer
    if isinstance(visual, VisionTransformer):
        from .vit import ViTAdapter
        return ViTAdapter(visual)
    if isinstance(visual, ModifiedResNet):
        from .modified_resnet import ModifiedResNetAdapter
        return ModifiedResNetAdapter(visual)
    if isinstance(visual, TimmModel):
        from timm.models.convnext import ConvNeXt
        from timm.models.eva import Eva
        if isinstance(visual.trunk, Eva):
            from .eva02 import EVA02Adapter
            return EVA02Adapter(visual)
        if isinstance(visual.trunk, ConvNeXt):
            from .convnext import ConvNeXtAdapter
            return ConvNeXtAdapter(visual)
        raise NotImplementedError(f'no dense adapter for timm trunk {type(visual.trunk).__name__}'
                                  ' (supported: EVA02 `Eva`, `ConvNeXt`)')
    raise NotImplementedError(f'no dense adapter for image tower {type(visual).__name__} '
                              '(supported: VisionTransformer, ModifiedResNet, TimmModel)')


@MODELS.register_module()
class DenseVLMBackbone(BaseModule):
    """Image tower of a stock open_clip model with DenseVLM dense paths.

    Args:
        model_name: open_clip config name (bundled tiny names included) or a label with
            ``model_cfg``.
        pretrained: local checkpoint file (see :func:`create_clip`); ``None``: random init.
        model_cfg: open_clip config dict used instead of the name's.
        unlocked_groups: ``None``: the whole tower trains. ``N``: freeze everything, then unlock
            the last ``N`` transformer blocks (ViT/EVA02; patch embed, pos-embed, CLS, final norm
            and projection stay frozen; ``0`` unlocks nothing) or the last ``N`` of
            ``[stem, stage1..stage4]`` (ModifiedResNet / ConvNeXt; attention pool / head norm and
            projection stay frozen, BatchNorms of frozen groups stay in eval mode).
        out_indices: block (ViT/EVA02, ``[B,width,h,w]``) or stage (ResNet/ConvNeXt) indices
            returned by :meth:`forward`; the last ViT/EVA02 block is the value-only dense block.
        grad_checkpointing: checkpoint transformer blocks / ConvNeXt stages while training
            (not supported for ModifiedResNet: BatchNorm stats would update twice).
        init_cfg: mmengine init config (e.g. ``Pretrained`` of a saved backbone); without it
            :meth:`init_weights` keeps the weights from construction.
        visual: an already-built open_clip image tower (used by :meth:`from_open_clip`).

    Attributes:
        embed_dim: joint (text) space dim ``D``.
        stride: input pixels per feature cell (patch size; 32 for ResNet/ConvNeXt).
        family: ``'vit' | 'eva02' | 'resnet' | 'convnext'``.
        model_name: the name given.

    Notes:
        Position tables are resized per call (any ``H x W``); no module state changes. Dense paths
        never drop patches (open_clip's patch dropout applies in ViT :meth:`encode_image` only). In
        the value-only last ViT/EVA02 block, q/k projections get no (EVA02) or zero (ViT fused
        ``in_proj`` rows) gradients from dense losses.
    """

    def __init__(self,
                 model_name: str,
                 pretrained: Optional[str] = None,
                 model_cfg: Optional[dict] = None,
                 unlocked_groups: Optional[int] = None,
                 out_indices: Sequence[int] = (-1, ),
                 grad_checkpointing: bool = False,
                 init_cfg: Optional[dict] = None,
                 visual: Optional[nn.Module] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if visual is None:
            from ..clip_factory import create_clip
            clip, _ = create_clip(model_name, pretrained=pretrained, model_cfg=model_cfg)
            visual = clip.visual  # the text tower is dropped here
            del clip
        self.visual = visual
        self.model_name = model_name
        self._adapter = _build_adapter(visual)
        self.family: str = self._adapter.family
        self.stride: int = self._adapter.stride
        self.embed_dim: int = self._adapter.embed_dim
        self.out_indices = tuple(out_indices)
        self.grad_checkpointing = grad_checkpointing
        self.unlocked_groups = unlocked_groups
        self._frozen_groups: List[nn.Module] = []
        self._adapter.set_grad_checkpointing(visual, grad_checkpointing)
        self._apply_lock(unlocked_groups)

    @classmethod
    def from_open_clip(cls, clip_model: nn.Module, model_name: str = 'open_clip',
                       **kwargs) -> 'DenseVLMBackbone':
        """Wrap a built open_clip model (or its ``.visual``); shares its modules."""
        visual = getattr(clip_model, 'visual', clip_model)
        return cls(model_name=model_name, visual=visual, **kwargs)

    # ------------------------------------------------------------------ trainable-part control
    def _apply_lock(self, unlocked_groups: Optional[int]) -> None:
        if unlocked_groups is None:
            return
        groups = self._adapter.groups(self.visual)
        if not 0 <= unlocked_groups <= len(groups):
            raise ValueError(f'unlocked_groups={unlocked_groups} must be in 0..{len(groups)} '
                             f'({len(groups)} {self._adapter.group_unit} in {self.family})')
        self.visual.requires_grad_(False)
        cut = len(groups) - unlocked_groups
        for group in groups[cut:]:
            group.requires_grad_(True)
        self._frozen_groups = list(groups[:cut])
        self.train(self.training)

    def train(self, mode: bool = True) -> 'DenseVLMBackbone':
        """Set train/eval; BatchNorms of frozen groups always stay in eval mode."""
        super().train(mode)
        if mode and self.unlocked_groups is not None:
            for group in self._frozen_groups:
                for m in group.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self

    def init_weights(self) -> None:
        """Weights come from construction (random / ``pretrained``); apply ``init_cfg`` only."""
        if self.init_cfg:
            initialize(self, self.init_cfg)
        self._is_init = True

    # ----------------------------------------------------------------------------- forwards
    def _check(self, images: Tensor) -> Tensor:
        if not isinstance(images, Tensor):
            raise ValueError(f'images must be a Tensor [B,3,H,W], got {type(images).__name__}')
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f'images must be [B, 3, H, W], got shape {tuple(images.shape)}')
        if images.shape[2] < self.stride or images.shape[3] < self.stride:
            raise ValueError(f'images of size {tuple(images.shape[2:])} are smaller than the '
                             f'stride {self.stride}')
        dtype = next(m.weight.dtype for m in self.visual.modules() if isinstance(m, nn.Conv2d))
        return images if images.dtype == dtype else images.to(dtype)  # patch-embed / stem dtype

    @property
    def _ckpt(self) -> bool:
        return self.grad_checkpointing and self.training and torch.is_grad_enabled()

    def dense_features(self, images: Tensor, normalize: bool = False) -> Tensor:
        """Dense joint-space map (spec §1.1-1.4).

        Args:
            images: ``[B,3,H,W]``; ``h, w = H // stride, W // stride`` (floor, like the conv).
            normalize: L2-normalise each location.

        Returns:
            ``[B, D, h, w]``.
        """
        dense = self._adapter.dense(self.visual, self._check(images), self._ckpt)
        return F.normalize(dense, dim=1) if normalize else dense

    def encode_image(self, images: Tensor, normalize: bool = False) -> Tensor:
        """Stock global embedding ``[B, D]`` (position tables resized on the fly)."""
        out = self._adapter.encode_image(self.visual, self._check(images), self._ckpt)
        return F.normalize(out, dim=-1) if normalize else out

    def forward(self, images: Tensor) -> Tuple[Tensor, ...]:
        """Feature maps for necks, one per ``out_indices`` entry, ``[B, C_i, h_i, w_i]``."""
        return tuple(self._adapter.features(self.visual, self._check(images), self.out_indices,
                                            self._ckpt))

    @property
    def num_features(self) -> int:
        """Channels of the transformer width / last stage."""
        return self._adapter.num_features(self.visual)

    # ------------------------------------------------------------------------------ pooling
    def roi_features(self, dense: Tensor, boxes: Sequence[Tensor]) -> Tensor:
        """RoIAlign 1x1 over the per-location L2-normalised map (spec §1.0, §10.11 fix).

        Args:
            dense: ``[B, D, h, w]`` from :meth:`dense_features`.
            boxes: per image ``[K_i, 4]`` xyxy in input pixels (mapped by ``1/stride``).

        Returns:
            ``[ΣK_i, D]`` pooled (not re-normalised) vectors, image by image, at least fp32.
        """
        from torchvision.ops import roi_align
        if len(boxes) != dense.shape[0]:
            raise ValueError(f'boxes has {len(boxes)} entries for a batch of {dense.shape[0]}')
        dtype = torch.promote_types(dense.dtype, torch.float32)
        rois = []
        for i, b in enumerate(boxes):
            b = torch.as_tensor(b, device=dense.device, dtype=dtype).reshape(-1, 4)
            rois.append(torch.cat([b.new_full((b.shape[0], 1), i), b], dim=1))
        rois = torch.cat(rois) if rois else dense.new_zeros((0, 5), dtype=dtype)
        if rois.shape[0] == 0:
            return dense.new_zeros((0, dense.shape[1]), dtype=dtype)
        normed = F.normalize(dense.to(dtype), dim=1)
        pooled = roi_align(normed, rois, output_size=(1, 1), spatial_scale=1.0 / self.stride,
                           sampling_ratio=-1, aligned=True)
        return pooled[:, :, 0, 0]

    def mask_features(self, dense: Tensor, masks: Sequence[Tensor],
                      in_pixels: Optional[bool] = None) -> Tensor:
        """Mask-weighted mean of the per-location L2-normalised map.

        ``feature = Σ(map·w) / (Σw + 1e-12)``. Masks on another grid become exact area-coverage
        weights ``w ∈ [0,1]`` per feature cell (equal to ``F.interpolate(mode='area')`` /
        ``adaptive_avg_pool2d`` when the size is a multiple of the grid; exact for any size). The
        reference instead resizes bicubically and thresholds ``> 0`` (spec §10.18).

        Args:
            dense: ``[B, D, h, w]``.
            masks: per image ``[K_i, h', w']`` bool or float weights.
            in_pixels: mask pixel ``y`` spans feature rows ``[y/stride, (y+1)/stride)`` (input-pixel
                masks; pixels past ``h*stride`` are dropped, like the conv drops them) when True;
                the mask spans the grid proportionally when False. ``None``: True iff
                ``h'//stride == h`` and ``w'//stride == w`` and the size differs from ``(h, w)``.

        Returns:
            ``[ΣK_i, D]``, at least fp32.
        """
        if len(masks) != dense.shape[0]:
            raise ValueError(f'masks has {len(masks)} entries for a batch of {dense.shape[0]}')
        dtype = torch.promote_types(dense.dtype, torch.float32)
        normed = F.normalize(dense.to(dtype), dim=1)
        h, w = dense.shape[-2:]
        out = []
        for i, m in enumerate(masks):
            m = torch.as_tensor(m, device=dense.device)
            if m.dim() != 3:
                raise ValueError(f'masks[{i}] must be [K, h, w], got shape {tuple(m.shape)}')
            if m.shape[0] == 0:
                continue
            weights = self.mask_weights(m, (h, w), in_pixels).to(dtype)  # [K, h, w]
            num = torch.einsum('khw,dhw->kd', weights, normed[i])
            out.append(num / (weights.sum(dim=(1, 2))[:, None] + 1e-12))
        if not out:
            return dense.new_zeros((0, dense.shape[1]), dtype=dtype)
        return torch.cat(out)

    def mask_weights(self, masks: Tensor, grid: Sequence[int],
                     in_pixels: Optional[bool] = None) -> Tensor:
        """Area-coverage weights ``[K, h, w]`` of masks ``[K, h', w']`` on the feature grid."""
        h, w = int(grid[0]), int(grid[1])
        mh, mw = masks.shape[-2:]
        m = masks.float()
        if (mh, mw) == (h, w):
            return m
        if in_pixels is None:
            in_pixels = mh // self.stride == h and mw // self.stride == w
        sy = 1.0 / self.stride if in_pixels else h / mh
        sx = 1.0 / self.stride if in_pixels else w / mw
        ay = _coverage(h, mh, sy, m.device)  # [h, mh]
        ax = _coverage(w, mw, sx, m.device)  # [w, mw]
        return torch.einsum('iy,kyx,jx->kij', ay, m, ax)


def _coverage(n_cells: int, n_pix: int, scale: float, device) -> Tensor:
    """``A[i, y]`` = length of pixel ``[y*s, (y+1)*s)`` inside cell ``[i, i+1)`` (float64 math)."""
    y = torch.arange(n_pix, device=device, dtype=torch.float64)
    i = torch.arange(n_cells, device=device, dtype=torch.float64)[:, None]
    lo = torch.maximum(i, y * scale)
    hi = torch.minimum(i + 1, (y + 1) * scale)
    return (hi - lo).clamp_min(0).float()
