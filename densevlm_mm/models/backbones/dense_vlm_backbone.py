"""Dense joint-space features from stock open_clip image towers (spec §1).

:class:`DenseVLMBackbone` keeps only the image tower (``clip.visual``) of a stock open_clip model
and adds the DenseVLM dense paths through a per-family adapter (``vit``, ``eva02``, ``resnet``,
``convnext``). Its state dict is the tower's under ``visual.`` (the open_clip CLIP layout).
"""
import logging
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.model.weight_init import initialize
from torch import Tensor, nn

from densevlm_mm.registry import MODELS

from .base import DenseAdapter, resample_pos_embed, resolve_indices  # noqa: F401 (re-export)
from .convnext import ConvNeXtAdapter
from .eva02 import EVA02Adapter
from .factory import build_clip_model, check_local_checkpoint
from .modified_resnet import ModifiedResNetAdapter
from .vit import ViTAdapter
from .weights import load_image_tower


def _build_adapter(visual: nn.Module) -> DenseAdapter:
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.timm_model import TimmModel
    from open_clip.transformer import VisionTransformer
    from timm.models.convnext import ConvNeXt
    from timm.models.eva import Eva
    if isinstance(visual, VisionTransformer):
        return ViTAdapter(visual)
    if isinstance(visual, ModifiedResNet):
        return ModifiedResNetAdapter(visual)
    if isinstance(visual, TimmModel):
        if isinstance(visual.trunk, Eva):
            return EVA02Adapter(visual)
        if isinstance(visual.trunk, ConvNeXt):
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
        pretrained: local checkpoint file whose image tower is loaded strictly: an open_clip
            checkpoint (full CLIP or image tower), an EVA-CLIP release, or a work-dir checkpoint
            of this project (DenseVLM / CLIPSelf / RegionCLIP: the student ``backbone.visual.*``;
            everything else is ignored and reported). ``None``: random init.
        model_cfg: open_clip config dict used instead of the name's.
        unlocked_groups: ``None``: the whole tower trains. ``N``: freeze everything, then unlock
            the last ``N`` transformer blocks (ViT/EVA02; patch embed, pos-embed, CLS, final norm
            and projection stay frozen) or the last ``N`` of ``[stem, stage1..stage4]``
            (ModifiedResNet / ConvNeXt; attention pool / head norm and projection stay frozen,
            BatchNorms of frozen groups stay in eval mode). ``0``: everything frozen, and the
            backbone stays in eval mode under ``.train()``.
        out_indices: levels returned by :meth:`forward`: blocks (ViT/EVA02, ``[B, width, h, w]``;
            index ``L-1`` / ``-1`` is the value-only last block of the dense path, spec §8.1) or
            stages (ResNet/ConvNeXt, ``[B, C_i, H/4..H/32]``).
        with_dense: :meth:`forward` also returns, last, the joint-space dense map ``[B, D, h, w]``
            (not normalised) from the same pass, equal to :meth:`dense_features`.
        freeze_unused: after locking, freeze trainable parameters that neither :meth:`forward`
            (with its ``out_indices`` / ``with_dense``) nor :meth:`dense_features` reach (e.g.
            q/k of the value-only last EVA02 block, q/k of ModifiedResNet's attention pool), so
            any model built on the backbone trains under DDP without
            ``find_unused_parameters``. Their names are in :attr:`frozen_unused`.
        grad_checkpointing: checkpoint transformer blocks / ConvNeXt stages while training
            (not supported for ModifiedResNet: BatchNorm stats would update twice).
        init_cfg: mmengine init config; ``dict(type='Pretrained', checkpoint=..., prefix=None)``
            loads any checkpoint ``pretrained`` accepts, strictly, in :meth:`init_weights`.
        visual: an already-built open_clip image tower (used by :meth:`from_open_clip`).

    Attributes:
        embed_dim: joint (text) space dim ``D``.
        stride: input pixels per feature cell of the dense map (patch size; 32 for
            ResNet/ConvNeXt).
        family: ``'vit' | 'eva02' | 'resnet' | 'convnext'``.
        model_name: the name given.
        frozen_unused: names of the parameters frozen by ``freeze_unused``.

    Notes:
        Position tables are resized per call (any ``H x W``); no module state changes. Dense paths
        never drop patches (open_clip's patch dropout applies in ViT :meth:`encode_image` only). In
        the value-only last ViT/EVA02 block, q/k projections get no (EVA02, frozen by
        ``freeze_unused``) or zero (ViT: rows of the fused ``in_proj``, which stays trainable)
        gradients from the dense path.
    """

    def __init__(self,
                 model_name: str,
                 pretrained: Optional[str] = None,
                 model_cfg: Optional[dict] = None,
                 unlocked_groups: Optional[int] = None,
                 out_indices: Sequence[int] = (-1, ),
                 with_dense: bool = False,
                 freeze_unused: bool = True,
                 grad_checkpointing: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None,
                 visual: Optional[nn.Module] = None) -> None:
        if pretrained is not None and init_cfg is not None:
            raise ValueError('DenseVLMBackbone: give the checkpoint either as pretrained= or as '
                             "init_cfg=dict(type='Pretrained', checkpoint=...), not both")
        super().__init__(init_cfg=init_cfg)
        check_local_checkpoint(pretrained, model_name, model_cfg)
        if visual is None:
            visual = build_clip_model(model_name, model_cfg=model_cfg).visual  # text tower dropped
        self.visual = visual
        self.model_name = model_name
        self._adapter = _build_adapter(visual)
        self.family: str = self._adapter.family
        self.stride: int = self._adapter.stride
        self.embed_dim: int = self._adapter.embed_dim
        self.out_indices = tuple(out_indices)
        self._levels()  # validate now, and again per call (out_indices may be reassigned)
        self.with_dense = with_dense
        self.grad_checkpointing = grad_checkpointing
        self.unlocked_groups = unlocked_groups
        self.pretrained = pretrained
        self._frozen_groups: List[nn.Module] = []
        self.frozen_unused: List[str] = []
        if pretrained is not None:
            self.load_pretrained(pretrained)
        self._adapter.set_grad_checkpointing(visual, grad_checkpointing)
        self._apply_lock(unlocked_groups)
        if freeze_unused:
            self.freeze_unused_parameters()

    @classmethod
    def from_open_clip(cls, clip_model: nn.Module, model_name: str = 'open_clip',
                       **kwargs) -> 'DenseVLMBackbone':
        """Wrap a built open_clip model (or its ``.visual``).

        The modules are shared, so locking and ``freeze_unused`` also change the
        ``requires_grad`` of ``clip_model.visual``'s parameters (deep-copy it to keep it apart).
        """
        visual = getattr(clip_model, 'visual', clip_model)
        return cls(model_name=model_name, visual=visual, **kwargs)

    # ------------------------------------------------------------------------------- weights
    def load_pretrained(self, checkpoint: str, prefix: Optional[str] = None) -> dict:
        """Load the image tower of ``checkpoint`` strictly (see ``pretrained``).

        Args:
            checkpoint: checkpoint file.
            prefix: key prefix before ``visual.`` (``'backbone.'`` for this project's work
                dirs); ``None``: found automatically.

        Returns:
            ``dict(source=..., ignored=[...])``.
        """
        return load_image_tower(self.visual, checkpoint, model_name=self.model_name,
                                prefix=prefix)

    def init_weights(self) -> None:
        """Weights come from construction (random / ``pretrained``); then ``init_cfg``.

        ``Pretrained`` entries are loaded strictly by :meth:`load_pretrained` (mmengine's own
        loader is not strict and knows none of the formats above); other entries go to mmengine.
        """
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg]
        for cfg in cfgs:
            if not cfg:
                continue
            if cfg.get('type') == 'Pretrained':
                self.load_pretrained(cfg['checkpoint'], prefix=cfg.get('prefix'))
            else:
                initialize(self, cfg)
        self._is_init = True

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

    def freeze_unused_parameters(self) -> List[str]:
        """Probe once; freeze trainable parameters neither :meth:`forward` nor the dense map reach.

        Run at construction with ``freeze_unused=True``; a model that changes which parameters
        train afterwards (CAT-Seg's q/v fine-tuning) calls it again. Adds the names to
        :attr:`frozen_unused` and returns those frozen by this call.

        One pass with the backbone's ``out_indices`` and the dense map on a zero image of
        ``4 x stride`` pixels (eval mode: no BatchNorm update); a parameter left with ``grad is
        None`` is unreachable. Rows of a fused ViT ``in_proj`` get a (zero) gradient and stay
        trainable, as in the reference.
        """
        trainable = {n: p for n, p in self.named_parameters() if p.requires_grad}
        if not trainable:
            return []
        was_training = self.training
        self.train(False)
        param = next(iter(trainable.values()))
        size = 4 * self.stride
        probe = torch.zeros(1, 3, size, size, device=param.device, dtype=param.dtype)
        saved = {n: p.grad for n, p in trainable.items()}
        for p in trainable.values():
            p.grad = None
        try:
            with torch.enable_grad():
                maps, dense = self._adapter.run(self.visual, probe, self._levels(), True, False)
                total = dense.float().sum() + sum(m.float().sum() for m in maps)
                total.backward()
            unused = [n for n, p in trainable.items() if p.grad is None]
        finally:
            for n, p in trainable.items():
                p.grad = saved[n]
            self.train(was_training)
        for n in unused:
            trainable[n].requires_grad_(False)
        kept = len(trainable) - len(unused)
        msg = (f'{type(self).__name__}({self.model_name}): {kept} trainable parameter tensors '
               f'({sum(p.numel() for n, p in trainable.items() if n not in unused):,} values)')
        if unused:
            msg += (f'; froze {len(unused)} that forward / dense_features never reach '
                    f'(first: {unused[:4]})')
        print_log(msg, logger='current', level=logging.INFO)
        self.frozen_unused += unused
        return unused

    def train(self, mode: bool = True) -> 'DenseVLMBackbone':
        """Set train/eval; a fully frozen backbone (``unlocked_groups=0``) stays in eval mode,
        and BatchNorms of frozen groups always do."""
        if self.unlocked_groups == 0:
            return super().train(False)
        super().train(mode)
        if mode and self.unlocked_groups is not None:
            for group in self._frozen_groups:
                for m in group.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self

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

    def _levels(self) -> List[int]:
        return resolve_indices(self.out_indices, self._adapter.num_levels(self.visual),
                               self._adapter.index_unit)

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
        dense = self._adapter.run(self.visual, self._check(images), (), True, self._ckpt)[1]
        return F.normalize(dense, dim=1) if normalize else dense

    def encode_image(self, images: Tensor, normalize: bool = False) -> Tensor:
        """Stock global embedding ``[B, D]`` (position tables resized on the fly)."""
        out = self._adapter.encode_image(self.visual, self._check(images), self._ckpt)
        return F.normalize(out, dim=-1) if normalize else out

    def forward(self, images: Tensor) -> Tuple[Tensor, ...]:
        """Maps for necks from one pass of the trunk.

        Args:
            images: ``[B,3,H,W]``.

        Returns:
            One ``[B, C_i, h_i, w_i]`` map per ``out_indices`` entry, then (``with_dense``) the
            joint-space dense map ``[B, D, h, w]`` (not normalised; equal to
            :meth:`dense_features`). Every block / stage runs at most once.
        """
        maps, dense = self._adapter.run(self.visual, self._check(images), self._levels(),
                                        self.with_dense, self._ckpt)
        return tuple(maps) + ((dense, ) if self.with_dense else ())

    @property
    def num_features(self) -> int:
        """Channels of the transformer width / last stage."""
        return self._adapter.num_features(self.visual)

    # ------------------------------------------------------------------------------ pooling
    def roi_features(self, dense: Tensor, boxes: Sequence[Tensor],
                     image_size: Optional[Sequence[int]] = None, clip: bool = False) -> Tensor:
        """RoIAlign 1x1 over the per-location L2-normalised map (spec §1.0, §10.11 fix).

        Args:
            dense: ``[B, D, h, w]`` from :meth:`dense_features`.
            boxes: per image ``[K_i, 4]`` xyxy in input pixels (mapped by ``1/stride``), with
                ``0 <= x1 < x2 <= W`` and ``0 <= y1 < y2 <= H``.
            image_size: input ``(H, W)``; ``None``: the largest input giving this grid,
                ``(h*stride + stride-1, w*stride + stride-1)`` (the conv drops the remainder).
            clip: clip boxes to the image first (otherwise a box outside raises).

        Returns:
            ``[ΣK_i, D]`` pooled (not re-normalised) vectors, image by image, at least fp32.

        Raises:
            ValueError: wrong count or shape, a non-finite, negative, outside, inverted or
                zero-area box (naming the image index and the box).
        """
        from torchvision.ops import roi_align
        if len(boxes) != dense.shape[0]:
            raise ValueError(f'boxes has {len(boxes)} entries for a batch of {dense.shape[0]}')
        if image_size is None:
            image_size = tuple(n * self.stride + self.stride - 1 for n in dense.shape[-2:])
        dtype = torch.promote_types(dense.dtype, torch.float32)
        rois = []
        for i, b in enumerate(boxes):
            b = torch.as_tensor(b, device=dense.device, dtype=dtype)
            b = check_boxes(b, image_size, index=i, clip=clip)
            rois.append(torch.cat([b.new_full((b.shape[0], 1), i), b], dim=1))
        rois = torch.cat(rois) if rois else dense.new_zeros((0, 5), dtype=dtype)
        if rois.shape[0] == 0:
            return dense.new_zeros((0, dense.shape[1]), dtype=dtype)
        normed = F.normalize(dense.to(dtype), dim=1)
        # Boxes are mapped to feature units here, not through ``spatial_scale=1/stride``: in float32
        # 28 * (1/14) = 2.0000002, and torchvision's adaptive sample count (ceil) then takes one
        # more row / column whenever a box edge falls on a patch boundary (patch 14).
        rois = torch.cat([rois[:, :1], rois[:, 1:] / self.stride], dim=1)
        pooled = roi_align(normed, rois, output_size=(1, 1), spatial_scale=1.0, sampling_ratio=-1,
                           aligned=True)
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
            if m.dim() != 3 or 0 in m.shape[1:]:
                raise ValueError(f'masks[{i}] must be [K, h, w] with h, w > 0, got shape '
                                 f'{tuple(m.shape)}')
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


def check_boxes(boxes: Tensor, image_size: Sequence[int], index: int = 0,
                clip: bool = False) -> Tensor:
    """Validate (optionally clip) one image's boxes ``[K, 4]`` xyxy in input pixels.

    Args:
        boxes: ``[K, 4]``.
        image_size: ``(H, W)``; valid boxes have ``0 <= x1 < x2 <= W``, ``0 <= y1 < y2 <= H``.
        index: image index, for messages.
        clip: clip to the image before the checks (a box entirely outside then has zero area).

    Returns:
        The (clipped) boxes.

    Raises:
        ValueError: naming the image index, the first bad box and the fix.
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        if boxes.numel() == 0 and boxes.dim() <= 2:
            return boxes.reshape(0, 4)
        raise ValueError(f'boxes[{index}] must be [K, 4] xyxy in input pixels, got shape '
                         f'{tuple(boxes.shape)} (drop batch-index / score columns)')
    if boxes.shape[0] == 0:
        return boxes
    height, width = float(image_size[0]), float(image_size[1])

    def bad(mask: Tensor, what: str, fix: str) -> None:
        if bool(mask.any()):
            k = int(mask.nonzero()[0, 0])
            raise ValueError(f'boxes[{index}][{k}] = {boxes[k].tolist()} {what} (image '
                             f'{int(height)}x{int(width)}); {fix}')

    bad(~torch.isfinite(boxes).all(dim=1), 'is not finite', 'remove NaN / inf boxes')
    if clip:
        boxes = torch.stack([boxes[:, 0].clamp(0, width), boxes[:, 1].clamp(0, height),
                             boxes[:, 2].clamp(0, width), boxes[:, 3].clamp(0, height)], dim=1)
    fix = 'pass clip=True to clip boxes to the image'
    bad((boxes[:, :2] < 0).any(dim=1), 'has a negative coordinate', fix)
    bad((boxes[:, 2] > width) | (boxes[:, 3] > height), 'reaches outside the image', fix)
    bad((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]), 'is inverted (x2 < x1 or '
        'y2 < y1)', 'boxes are x1, y1, x2, y2')
    bad((boxes[:, 2] == boxes[:, 0]) | (boxes[:, 3] == boxes[:, 1]), 'has zero area',
        'drop empty boxes')
    return boxes
