"""Speed, memory and FLOP use of a config's training step or region-classification pass (issue 14).

    python tools/analysis/benchmark.py CONFIG [--mode train|eval] [--iters 10] [--warmup 2]
        [--batch-size B] [--amp bf16|fp16|none] [--compile] [--device cpu|cuda]
        [--data synthetic|config] [--random-weights] [--image-size S] [--compare-reference]
        [--compare-config OTHER_CONFIG [--compare-amp ..] [--compare-cfg-options ..]]
        [--compare-cached exact|compact [--run-images N] [--run-epochs E]]
        [--cfg-options k=v ...]

Builds the model (and, with ``--data config``, the dataloader) from the config and times, after
``--warmup`` iterations, each phase of an iteration separately:

* train: data (loader + data preprocessor), teacher forward (the P-VLM retrieval), student
  forward (dense map, RoI pooling, loss), backward, optimizer step;
* eval: data (with ``--data config``: the panoptic loading), region classification (one dense
  forward per image, box RoI pooling and mask pooling, ranking).

It prints images/s (median, min-max and inter-quartile range over the timed iterations), peak
memory (CUDA ``max_memory_allocated``; on CPU the process's peak RSS), the FLOPs of one iteration
counted by ``torch.utils.flop_counter.FlopCounterMode``, the achieved TFLOP/s, and that as a
fraction of this machine's dense matmul rate measured in the same run (a plain GEMM of the
iteration's dominant matmul shape and dtype, timed between the iterations so that both see the
same machine load).

``--data synthetic`` (default) feeds random images of the config's input size with grid boxes
drawn like the config's ``SampleGridRegions`` (train) or random region boxes and masks (eval), so
no dataset is needed. ``--random-weights`` replaces the config's checkpoints and class-embedding
files by random ones of the right shapes (speed does not depend on the weights), so the real
recipes (EVA02-L/14-336 → B/16 at 512²) run without any file. The tiny demo config
(``configs/densevlm/densevlm_tiny_demo.py``) has its files created under ``--demo-root`` first.

``--compare-reference`` (train) also runs, interleaved with ours on the same weights and batches,
a plain implementation of the reference's per-step computation (spec §3.2: boxes normalised to
the padded input, per-image box denormalisation, the retrieval redone inside the loss, thing and
stuff KL in separate ``batchmean`` calls, unfused fp32 AdamW) and prints both step times, their
ratio and both losses (equal in fp32 when the input size is a multiple of both patch sizes).
``--compare-config`` does the same with another config (e.g. a ``*_fast.py`` config against its
plain parent). ``--compile`` compiles both towers' dense paths (``--compile-backend``).

``--compare-cached exact|compact`` (train, synthetic data) first runs the region cache pass
(issue 20) over the run's batches (timed per image), then times, interleaved with the online step,
the step that reads the P-VLM logits from that cache instead of running the P-VLM (the cache read
counted in its teacher phase), and prints the per-step ratio and the whole-run estimate of
``--run-epochs`` epochs over ``--run-images`` images, cache pass included.
"""
import argparse
import copy
import os
import os.path as osp
import resource
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

PHASES = dict(train=('data', 'teacher', 'student_fwd', 'backward', 'optimizer'),
              eval=('data', 'forward'))
AMP_DTYPES = dict(bf16=torch.bfloat16, fp16=torch.float16)
GEMM_OPS = ('mm', 'addmm', 'bmm', 'baddbmm')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('--mode', choices=['train', 'eval'], default='train')
    parser.add_argument('--iters', type=int, default=10, help='timed iterations')
    parser.add_argument('--warmup', type=int, default=2, help='untimed iterations first')
    parser.add_argument('--batch-size', type=int, default=None,
                        help='images per iteration (default: the config dataloader\'s)')
    parser.add_argument('--amp', choices=['none', 'bf16', 'fp16'], default='none',
                        help='autocast of the student / eval forward (the teacher keeps its '
                        'config precision: model.target_generator.precision)')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile the dense paths of the student and the teacher')
    parser.add_argument('--compile-backend', default='inductor',
                        help='torch.compile backend (inductor; eager only checks tracing)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        choices=['cpu', 'cuda'])
    parser.add_argument('--data', choices=['synthetic', 'config'], default='synthetic')
    parser.add_argument('--image-size', type=int, default=None,
                        help='synthetic input size (default: the config pipeline\'s '
                        'ResizeLongestPad size)')
    parser.add_argument('--regions', type=int, default=20,
                        help='eval, synthetic: regions (boxes + masks) per image')
    parser.add_argument('--random-weights', action='store_true',
                        help='random backbones and class embeddings instead of the config files')
    parser.add_argument('--demo-root', default=None,
                        help='tiny demo config: where its files are (created when missing)')
    parser.add_argument('--compare-reference', action='store_true',
                        help='train: also time the reference per-step computation (spec §3.2)')
    parser.add_argument('--compare-config', default=None,
                        help='train: also time this config (e.g. the plain one of a fast config), '
                        'interleaved, on the same batches')
    parser.add_argument('--compare-amp', choices=['none', 'bf16', 'fp16'], default='none',
                        help='autocast of the --compare-config student')
    parser.add_argument('--compare-cfg-options', nargs='+', action=DictAction,
                        help='overrides of the --compare-config config (after --cfg-options)')
    parser.add_argument('--compare-cached', choices=['exact', 'compact'], default=None,
                        help='train, synthetic: also time the step that reads the P-VLM logits '
                        'from a region cache built over the run\'s batches (issue 20)')
    parser.add_argument('--cache-topk', type=int, default=32,
                        help='--compare-cached compact: classes kept per cell')
    parser.add_argument('--run-images', type=int, default=118287,
                        help='--compare-cached: images of the whole-run estimate (COCO train2017)')
    parser.add_argument('--run-epochs', type=int, default=6,
                        help='--compare-cached: epochs of the whole-run estimate')
    parser.add_argument('--gemm-reps', type=int, default=3,
                        help='GEMMs timed after each iteration for the machine matmul rate')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=None, help='torch.set_num_threads')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, as in tools/train.py')
    args = parser.parse_args(argv)
    for name in ('iters', 'batch_size', 'regions', 'gemm_reps'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1, got {value}')
    if args.warmup < 0:
        parser.error(f'--warmup must be >= 0, got {args.warmup}')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device here; use --device cpu')
    if args.compare_cached and (args.mode != 'train' or args.data != 'synthetic'):
        parser.error('--compare-cached times training steps on synthetic batches: use --mode '
                     'train --data synthetic')
    if (args.compare_reference or args.compare_config) and args.mode != 'train':
        parser.error('--compare-reference / --compare-config compare training steps: use '
                     '--mode train')
    return args


# ----------------------------------------------------------------------------------- config
def load_config(args: argparse.Namespace, path: Optional[str] = None):
    """The config with ``--cfg-options``, the tiny demo files and ``--random-weights`` applied."""
    from mmengine.config import Config
    path = path or args.config
    cfg = Config.fromfile(path)
    if 'demo_root' in cfg:
        from densevlm_mm.apis.tiny_demo import load_tiny_demo_config, prepare_tiny_demo
        root = args.demo_root or cfg.demo_root
        cfg = load_tiny_demo_config(root, path)
        if not args.random_weights:
            prepare_tiny_demo(root)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.random_weights:
        randomise_weights(cfg, tempfile.mkdtemp(prefix='benchmark_text_'))
    return cfg


def _embed_dim(model_name: str) -> int:
    import open_clip

    from densevlm_mm.models.backbones.factory import register_bundled_configs
    register_bundled_configs()
    model_cfg = open_clip.get_model_config(model_name)
    if model_cfg is None:
        raise ValueError(f'--random-weights: unknown open_clip model {model_name!r}')
    return int(model_cfg['embed_dim'])


def randomise_weights(cfg, tmp: str) -> None:
    """Backbones without checkpoint; random unit class embeddings of the right vocabulary/dim."""
    from densevlm_mm.text_embeddings import TextEmbeddings
    from densevlm_mm.vocabulary import load_vocabulary
    model = cfg.model
    gen = torch.Generator().manual_seed(0)

    def fake(name: str, model_name: str, vocabulary) -> str:
        vocab = load_vocabulary(vocabulary) if vocabulary is not None else None
        names = vocab.names if vocab else [f'class{i}' for i in range(316)]
        is_thing = vocab.is_thing if vocab else torch.arange(316) < 204
        path = osp.join(tmp, f'{name}.pt')
        emb = F.normalize(torch.randn(len(names), _embed_dim(model_name), generator=gen), dim=-1)
        TextEmbeddings(emb, list(names), is_thing, model_name=model_name).save(path)
        return path

    def strip(backbone) -> None:
        if isinstance(backbone, dict):
            backbone['pretrained'] = None
            backbone.pop('init_cfg', None)

    strip(model.get('backbone'))
    student = model.backbone.model_name
    vocab = None
    head = model.get('head')
    if isinstance(head, dict) and 'text_embeddings' in head:
        vocab = head.get('vocabulary')
        head['text_embeddings'] = fake('student', student, vocab)
    tg = model.get('target_generator')
    if isinstance(tg, dict):
        strip(tg.get('backbone'))
        if 'text_embeddings' in tg:
            tg['text_embeddings'] = fake('teacher', tg.backbone.model_name,
                                         tg.get('vocabulary', vocab))
    if model.get('eval_text_embeddings'):
        eval_vocab = None
        for key in ('test_dataloader', 'val_dataloader'):
            dataset = (cfg.get(key) or {}).get('dataset', {})
            eval_vocab = eval_vocab or dataset.get('vocabulary')
        model['eval_text_embeddings'] = fake('eval', student, eval_vocab or vocab)


def _pipeline_transform(cfg, key: str, type_name: str) -> Optional[dict]:
    loader = cfg.get(key) or {}
    dataset = loader.get('dataset', {})
    for t in dataset.get('pipeline', cfg.get(key.replace('dataloader', 'pipeline'), [])) or []:
        if t.get('type') == type_name:
            return t
    return None


# ------------------------------------------------------------------------------------ data
class SyntheticData:
    """Random uint8 images of the config's size with grid boxes (train) or regions (eval)."""

    def __init__(self, cfg, mode: str, batch_size: int, image_size: Optional[int],
                 regions: int, seed: int) -> None:
        from densevlm_mm.datasets.transforms.region_sampler import GridRegionSampler
        key = 'train_dataloader' if mode == 'train' else 'test_dataloader'
        resize = _pipeline_transform(cfg, key, 'ResizeLongestPad')
        self.size = image_size or (resize or {}).get('size', 512)
        grid = _pipeline_transform(cfg, 'train_dataloader', 'SampleGridRegions') or {}
        self.sampler = GridRegionSampler(grid.get('max_split', 6), grid.get('max_regions', 36),
                                         grid.get('pairs', 'paper'))
        self.mode, self.batch_size, self.regions = mode, batch_size, regions
        self.gen = torch.Generator().manual_seed(seed)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        from mmpretrain.structures import DataSample
        s, gen = self.size, self.gen
        inputs, samples = [], []
        for _ in range(self.batch_size):
            inputs.append(torch.randint(0, 256, (3, s, s), dtype=torch.uint8, generator=gen))
            sample = DataSample()
            sample.set_metainfo(dict(img_shape=(s, s), valid_hw=(s, s)))
            if self.mode == 'train':
                sample.grid_boxes, pair, cells = self.sampler.sample_cells((s, s), gen)
                sample.set_metainfo(dict(grid_pair=pair, grid_cells=cells))
            else:
                xy = torch.rand(self.regions, 2, generator=gen) * s * 0.6
                wh = torch.rand(self.regions, 2, generator=gen) * s * 0.35 + s * 0.05
                boxes = torch.cat([xy, xy + wh], dim=1).clamp(max=s)
                ys = torch.arange(s)[None, :, None]
                xs = torch.arange(s)[None, None, :]
                masks = ((ys >= boxes[:, 1, None, None]) & (ys < boxes[:, 3, None, None])
                         & (xs >= boxes[:, 0, None, None]) & (xs < boxes[:, 2, None, None]))
                sample.region_boxes = boxes
                sample.region_masks = masks
                sample.region_labels = torch.randint(0, 2, (self.regions, ), generator=gen)
            samples.append(sample)
        return dict(inputs=inputs, data_samples=samples)


def build_data(cfg, args: argparse.Namespace, batch_size: int):
    """An endless iterator of un-preprocessed batches (``dict(inputs, data_samples)``)."""
    if args.data == 'synthetic':
        return SyntheticData(cfg, args.mode, batch_size, args.image_size, args.regions, args.seed)
    from mmengine.runner import Runner
    key = 'train_dataloader' if args.mode == 'train' else 'test_dataloader'
    loader_cfg = copy.deepcopy(cfg.get(key))
    if loader_cfg is None:
        raise ValueError(f'--data config: the config has no {key}; use --data synthetic')
    loader_cfg['batch_size'] = batch_size
    loader = Runner.build_dataloader(loader_cfg, seed=args.seed)

    def endless():
        while True:
            yield from loader

    return endless()


# ------------------------------------------------------------------------------ FLOP count
class GemmRecorder(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the (m, k, n, dtype) of every matmul and its FLOPs (2·m·k·n per product)."""

    def __init__(self) -> None:
        super().__init__()
        self.flops: Dict[Tuple, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name in GEMM_OPS:
            a, b = (args[0], args[1]) if name in ('mm', 'bmm') else (args[1], args[2])
            batch = a.shape[0] if a.dim() == 3 else 1
            m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
            key = (batch, m, k, n, a.dtype)
            self.flops[key] = self.flops.get(key, 0) + 2 * batch * m * k * n
        return out

    def dominant(self) -> Optional[Tuple]:
        return max(self.flops, key=self.flops.get) if self.flops else None


def flop_counter():
    """``FlopCounterMode`` that also counts CPU flash attention (not registered in torch)."""
    from torch.utils import flop_counter as fc
    aten = torch.ops.aten
    mapping = {}
    if hasattr(aten, '_scaled_dot_product_flash_attention_for_cpu'):
        def forward(q, k, v, *args, out_shape=None, **kwargs) -> int:
            return fc.sdpa_flop_count(q, k, v)

        def backward(grad, q, k, v, *args, out_shape=None, **kwargs) -> int:
            return fc.sdpa_backward_flop_count(grad, q, k, v)

        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = forward
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = backward
    return fc.FlopCounterMode(display=False, custom_mapping=mapping)


class GemmRate:
    """The machine's dense matmul rate for one shape and dtype, sampled between iterations."""

    def __init__(self, shape: Tuple, device: str, reps: int) -> None:
        batch, m, k, n, dtype = shape
        self.flops = 2 * batch * m * k * n
        gen = torch.Generator(device='cpu').manual_seed(0)
        lead = (batch, ) if batch > 1 else ()
        self.a = torch.randn(*lead, m, k, generator=gen).to(device, dtype)
        self.b = torch.randn(*lead, k, n, generator=gen).to(device, dtype)
        self.device, self.reps, self.rates, self.inner = device, reps, [], 1
        self.sample()  # warm-up, not recorded
        # small shapes: repeat inside one timed sample so that it lasts >= ~5 ms
        self.inner = int(min(1000, max(1, 5e-3 * min(self.rates) / self.flops)))
        self.rates.clear()

    def sample(self) -> None:
        mm = torch.bmm if self.a.dim() == 3 else torch.mm
        for _ in range(self.reps):
            _sync(self.device)
            start = time.perf_counter()
            for _ in range(self.inner):
                mm(self.a, self.b)
            _sync(self.device)
            self.rates.append(self.inner * self.flops / (time.perf_counter() - start))

    def median(self) -> float:
        return statistics.median(self.rates)


# ----------------------------------------------------------------------------------- steps
def _sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


class Timer:
    """Wall time of the phases of one iteration (device-synchronised)."""

    def __init__(self, device: str) -> None:
        self.device, self.times = device, {}

    def __call__(self, phase: str):
        timer = self

        class _Phase:
            def __enter__(self):
                _sync(timer.device)
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                _sync(timer.device)
                timer.times[phase] = timer.times.get(phase, 0.0) + time.perf_counter() - self.start

        return _Phase()


def _autocast(device: str, amp: str):
    if amp == 'none':
        return nullcontext()
    return torch.autocast(device, dtype=AMP_DTYPES[amp])


class OurTrainStep:
    """One training iteration of the built model, phase by phase (= ``model.loss`` + update).

    For :class:`DenseVLM` the phases are timed apart (teacher, student forward + loss, backward,
    optimizer); other algorithms time ``model.loss`` as one forward phase.
    """

    def __init__(self, model, optim_wrapper, device: str, amp: str) -> None:
        self.model, self.optim_wrapper, self.device, self.amp = model, optim_wrapper, device, amp

    def forward(self, batch: dict, timer: Timer):
        model = self.model
        inputs, samples = batch['inputs'], batch['data_samples']
        if hasattr(model, 'target_generator') and hasattr(model, 'head') and \
                hasattr(model.head, 'loss') and hasattr(model.backbone, 'roi_features') and \
                all('grid_boxes' in s for s in samples):
            boxes = [s.grid_boxes for s in samples]
            with timer('teacher'):
                targets = self.teacher(inputs, boxes, samples)
            with timer('student_fwd'), self.optim_wrapper.optim_context(model), \
                    _autocast(self.device, self.amp):
                dense = model.backbone.dense_features(inputs)
                student = model.backbone.roi_features(dense, boxes)
                losses = model.head.loss(student, targets)
                loss, log = model.parse_losses(losses)
        else:
            with timer('student_fwd'), self.optim_wrapper.optim_context(model), \
                    _autocast(self.device, self.amp):
                loss, log = model.parse_losses(model.loss(inputs, samples))
        return loss

    def teacher(self, inputs, boxes, samples) -> dict:
        """The P-VLM's retrieval of the batch's regions."""
        return self.model.target_generator(inputs, boxes)

    def __call__(self, batch: dict, timer: Timer) -> float:
        loss = self.forward(batch, timer)
        with timer('backward'):
            self.optim_wrapper.backward(loss)
        with timer('optimizer'):
            self.optim_wrapper.step()
            self.optim_wrapper.zero_grad()
        return float(loss.detach())


class ReferenceTrainStep:
    """The reference's per-step computation (spec §3.2), straightforward and unfused, in fp32.

    Same student / P-VLM towers and class embeddings as ours (deep copies, so both start from the
    same weights), but: boxes normalised to the padded input as a padded ``[B, 36, 5]`` tensor with
    a valid column, per-image denormalisation to feature units, the P-VLM retrieval done in the loss
    (softmax for confidence, then again per group), thing and stuff KL as separate
    ``F.kl_div(..., 'batchmean')`` calls, and the default (for-loop) AdamW on CPU.
    The text rows are taken as the retriever's ``normalize_text`` setting has them, and the thing
    split is the retriever's ``class_is_thing``, so that the loss equals ours in fp32.
    """

    def __init__(self, model, optimizer_param_groups: List[dict], device: str) -> None:
        from densevlm_mm.models.losses.decoupled_align_loss import DecoupledAlignLoss
        loss_module = model.head.loss_module
        if not isinstance(loss_module, DecoupledAlignLoss) or loss_module.mode != 'densevlm' or \
                loss_module.reduction != 'reference':
            raise ValueError('--compare-reference needs the DenseVLM loss of the reference: '
                             "DecoupledAlignLoss(mode='densevlm', reduction='reference')")
        self.student = copy.deepcopy(model.backbone)
        self.teacher = copy.deepcopy(model.target_generator.backbone)
        tg = model.target_generator
        t_p, t_l = tg.text.float(), model.head.text.float()
        if tg.normalize_text:
            t_p, t_l = F.normalize(t_p, dim=-1), F.normalize(t_l, dim=-1)
        self.t_p, self.t_l = t_p, t_l
        self.thing = tg.class_is_thing.bool()
        self.scale, self.theta = 1.0 / tg.tau, loss_module.theta
        self.device = device
        params = dict(self.student.named_parameters())
        ours = dict(model.backbone.named_parameters())
        by_id = {id(p): n for n, p in ours.items()}
        groups = []
        for g in optimizer_param_groups:
            names = [by_id[id(p)] for p in g['params'] if id(p) in by_id]
            if names:
                hyper = {k: v for k, v in g.items() if k in ('lr', 'betas', 'eps',
                                                             'weight_decay')}
                groups.append(dict(params=[params[n] for n in names], **hyper))
        self.optimizer = torch.optim.AdamW(groups)

    @staticmethod
    def encode_pseudo_boxes(tower, images, rois: List) -> torch.Tensor:
        """Reference ``encode_pseudo_boxes``: dense map, L2 per location, per-image boxes to
        feature units, RoIAlign 1×1 (spatial_scale 1, aligned)."""
        from torchvision.ops import roi_align
        dense = F.normalize(tower.dense_features(images), dim=1)
        h, w = dense.shape[-2:]
        feature_boxes = []
        for b in rois:  # _denormalize_boxes: one Python iteration per image
            b = b.clone()
            b[:, [0, 2]] *= w
            b[:, [1, 3]] *= h
            feature_boxes.append(b)
        return roi_align(dense, feature_boxes, (1, 1), 1.0, -1, True)[:, :, 0, 0]

    def forward(self, images, boxes: torch.Tensor, timer: Timer):
        rois = [b[b[:, 4] > 0.5, :4] for b in boxes]  # §3.2.1
        with timer('teacher'), torch.no_grad():  # §3.2.2
            f_p = F.normalize(self.encode_pseudo_boxes(self.teacher, images, rois), dim=-1)
            conf, _ = (self.scale * f_p @ self.t_p.t()).softmax(dim=-1).max(dim=-1)
        with timer('student_fwd'):
            keep = conf > self.theta  # §3.2.3
            f_p = f_p[keep]
            label = (self.scale * f_p @ self.t_p.t()).softmax(dim=-1).argmax(dim=-1)
            is_thing = self.thing[label]
            f_l = F.normalize(self.encode_pseudo_boxes(self.student, images, rois)[keep], dim=-1)

            def kl(rows, cols):  # §3.2.5, forward KL(p_teacher || q_student), batchmean
                z_p = self.scale * f_p[rows] @ self.t_p[cols].t()
                z_l = self.scale * f_l[rows] @ self.t_l[cols].t()
                return F.kl_div(z_l.log_softmax(dim=-1), z_p.softmax(dim=-1),
                                reduction='batchmean')

            every = torch.ones_like(self.thing)
            if is_thing.any():
                loss = kl(is_thing, self.thing)
                if (~is_thing).any():
                    loss = loss + kl(~is_thing, every)
            else:
                loss = kl(torch.ones_like(is_thing), every)
        return loss

    def __call__(self, images, boxes: torch.Tensor, timer: Timer) -> float:
        loss = self.forward(images, boxes, timer)
        with timer('backward'):
            loss.backward()
        with timer('optimizer'):
            self.optimizer.step()
            self.optimizer.zero_grad()
        return float(loss.detach())


def reference_boxes(samples, size: Tuple[int, int], max_regions: int = 36) -> torch.Tensor:
    """Per-image pixel boxes -> the reference's padded ``[B, max_regions, 5]`` normalised boxes."""
    out = torch.zeros(len(samples), max_regions, 5)
    h, w = size
    for i, s in enumerate(samples):
        b = s.grid_boxes.float().cpu()
        out[i, :len(b), :4] = b / torch.tensor([w, h, w, h], dtype=torch.float32)
        out[i, :len(b), 4] = 1.0
    return out


# ------------------------------------------------------------------- region cache (issue 20)
class CachedTrainStep(OurTrainStep):
    """:class:`OurTrainStep` of a model whose P-VLM outputs come from the region cache: the teacher
    phase is the cache read of the drawn cells (done by dataloader workers in training) and the
    retrieval built from them."""

    def __init__(self, model, optim_wrapper, device: str, amp: str, reader) -> None:
        super().__init__(model, optim_wrapper, device, amp)
        self.reader = reader

    def teacher(self, inputs, boxes, samples) -> dict:
        for s in samples:
            m, n = s.metainfo['grid_pair']
            cells = torch.as_tensor(s.metainfo['grid_cells']).numpy()
            s.teacher_logits = torch.from_numpy(
                self.reader.rows(s.metainfo['image_key'], m, n, cells))
        return self.model.target_generator(samples)


def setup_cached_comparison(model, cfg, args: argparse.Namespace, data, batch_size: int):
    """Draw the run's synthetic batches, run the cache pass over them (timed) and build the model
    that reads the cache (same student weights as ``model``).

    Returns:
        the batches as the run's data iterator, the cached step, and the pass figures.
    """
    from densevlm_mm.apis.region_cache import online_retriever_cfg, teacher_cell_logits
    from densevlm_mm.models.cached_retrieval import teacher_cache_key
    from densevlm_mm.region_cache import (RegionCacheReader, RegionCacheWriter,
                                          cache_grid_pairs, make_meta, write_meta)
    from densevlm_mm.registry import MODELS
    batches = [next(data) for _ in range(1 + max(args.warmup - 1, 0) + args.iters)]
    for b, batch in enumerate(batches):
        for j, sample in enumerate(batch['data_samples']):
            sample.set_metainfo(dict(image_key=f'synthetic/{b}/{j}'))
    root = tempfile.mkdtemp(prefix='benchmark_region_cache_')
    retriever_cfg = online_retriever_cfg(cfg)
    grid = _pipeline_transform(cfg, 'train_dataloader', 'SampleGridRegions') or {}
    pairs = cache_grid_pairs(grid.get('max_split', 6))
    teacher, text = teacher_cache_key(retriever_cfg)
    size = list(batches[0]['inputs'][0].shape[-2:])
    write_meta(root, make_meta(teacher, text, dict(size=size), pairs, mode=args.compare_cached,
                               topk=args.cache_topk))
    writer, timer = RegionCacheWriter(root, 'rank-0000'), Timer(args.device)
    for batch in batches:
        with timer('pass'):
            prepared = model.data_preprocessor(batch, True)
            samples = prepared['data_samples']
            logits = teacher_cell_logits(model.target_generator, prepared['inputs'],
                                         [s.metainfo['valid_hw'] for s in samples], pairs)
            writer.put_many((s.metainfo['image_key'], x.numpy()) for s, x in zip(samples, logits))
    writer.close()
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg['target_generator'] = dict(retriever_cfg, type='CachedRegionRetriever', cache=root)
    cached = MODELS.build(model_cfg).to(args.device)
    cached.train()
    cached.backbone.load_state_dict(model.backbone.state_dict())
    reader = RegionCacheReader(root)
    step = CachedTrainStep(cached, _build_optim_wrapper(cached, cfg, args.device), args.device,
                           args.amp, reader)
    info = dict(pass_seconds_per_image=timer.times['pass'] / (len(batches) * batch_size),
                value_bytes=reader.codec.nbytes, cells=reader.codec.cells, root=root)
    return iter(batches), step, info


def refuse_cached_config(cfg, path: str) -> None:
    """A ``_cached`` config trains from a cache of real images: benchmark its online parent."""
    tg = cfg.model.get('target_generator') or {}
    if str(tg.get('type', '')).endswith('CachedRegionRetriever'):
        raise SystemExit(f'benchmark.py: {path} reads the P-VLM region cache; benchmark its online '
                         'config with --compare-cached exact|compact (the cache pass runs on the '
                         'benchmark\'s batches)')


def whole_run_estimate(result: dict, info: dict, args: argparse.Namespace) -> dict:
    """Online vs cached time of ``--run-epochs`` epochs over ``--run-images`` images at the
    measured medians (compute per step, without data loading), the cache pass included."""
    b = result['batch_size']
    online = b / result['compute_images_per_s']['median']
    cached = b / result['compared']['cached']['images_per_s']['median']
    steps = args.run_epochs * (args.run_images // b)
    cache_pass = args.run_images * info['pass_seconds_per_image']
    out = dict(online_step_s=online, cached_step_s=cached, step_ratio=online / cached,
               steps=steps, online_run_h=steps * online / 3600,
               cache_pass_h=cache_pass / 3600, cached_run_h=(cache_pass + steps * cached) / 3600)
    out['run_ratio'] = out['online_run_h'] / out['cached_run_h']
    saved_per_epoch = (args.run_images // b) * (online - cached)
    out['break_even_epochs'] = cache_pass / saved_per_epoch if saved_per_epoch > 0 else \
        float('inf')
    return out


def print_cached(r: dict, info: dict, args: argparse.Namespace) -> None:
    e = r['cached_run']
    print(f'-- region cache ({args.compare_cached}{f" top-{args.cache_topk}" if args.compare_cached == "compact" else ""}): '
          f'{info["cells"]} cells, {info["value_bytes"] / 1024:.1f} KiB per image; cache pass '
          f'{info["pass_seconds_per_image"]:.3f} s per image')
    print(f'cached step   median {e["cached_step_s"]:.3f} s vs online {e["online_step_s"]:.3f} s '
          f'(without data): online / cached = {e["step_ratio"]:.2f}x per step')
    print(f'whole run     {args.run_epochs} epochs x {args.run_images} images, batch '
          f'{r["batch_size"]} ({e["steps"]} steps): online {e["online_run_h"]:.1f} h; cached '
          f'{e["cached_run_h"]:.1f} h (cache pass {e["cache_pass_h"]:.1f} h + training) = '
          f'{e["run_ratio"]:.2f}x; the cache pays after {e["break_even_epochs"]:.2f} epochs')


# ----------------------------------------------------------------------------------- stats
def _stats(values: List[float]) -> Dict[str, float]:
    values = sorted(values)
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return dict(median=statistics.median(values), min=values[0], max=values[-1],
                q1=q[0], q3=q[2])


def _peak_memory(device: str) -> str:
    if device == 'cuda':
        return f'{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB (CUDA max_memory_allocated)'
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return f'{rss:.2f} GiB (peak RSS of the process)'


def compile_towers(model, backend: str = 'inductor') -> None:
    """``torch.compile`` the dense paths (``dense_features``) of the student and the teacher."""
    towers = [model.backbone]
    if getattr(model, 'target_generator', None) is not None:
        towers.append(model.target_generator.backbone)
    for tower in towers:
        tower.dense_features = torch.compile(tower.dense_features, backend=backend)


def run(argv: Optional[Sequence[str]] = None) -> dict:
    """Run the benchmark, print the table and return the figures."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from densevlm_mm.registry import MODELS
    from densevlm_mm.utils import register_all_modules
    register_all_modules()
    torch.manual_seed(args.seed)
    cfg = load_config(args)
    refuse_cached_config(cfg, args.config)
    key = 'train_dataloader' if args.mode == 'train' else 'test_dataloader'
    batch_size = args.batch_size or (cfg.get(key) or {}).get('batch_size', 2)
    model = MODELS.build(cfg.model).to(args.device)
    model.train(args.mode == 'train')
    data = build_data(cfg, args, batch_size)
    optim_wrapper = None
    if args.mode == 'train':
        optim_wrapper = _build_optim_wrapper(model, cfg, args.device)
    others = []  # (label, step(batch, timer) -> loss), timed interleaved with ours
    if args.compare_reference:
        reference = ReferenceTrainStep(model, optim_wrapper.optimizer.param_groups, args.device)
        others.append(('reference', lambda b, t: _reference_iteration(reference, b, t)))
    if args.compare_config:
        other_cfg = load_config(args, args.compare_config)
        if args.compare_cfg_options:
            other_cfg.merge_from_dict(args.compare_cfg_options)
        torch.manual_seed(args.seed)
        other = MODELS.build(other_cfg.model).to(args.device)
        other.train()
        other_step = OurTrainStep(other, _build_optim_wrapper(other, other_cfg, args.device),
                                  args.device, args.compare_amp)
        others.append((osp.basename(args.compare_config), other_step))
    cached_info = None
    if args.compare_cached:
        data, cached_step, cached_info = setup_cached_comparison(model, cfg, args, data,
                                                                 batch_size)
        others.append(('cached', cached_step))
    if args.compile:
        compile_towers(model, args.compile_backend)
    step = OurTrainStep(model, optim_wrapper, args.device, args.amp) if optim_wrapper else None

    def prepared(timer: Timer) -> dict:
        with timer('data'):
            batch = next(data)
            batch = model.data_preprocessor(batch, args.mode == 'train')
        return batch

    def iteration(batch: dict, timer: Timer) -> float:
        if args.mode == 'train':
            return step(batch, timer)
        with timer('forward'), torch.no_grad(), _autocast(args.device, args.amp):
            model.predict(batch['inputs'], batch['data_samples'])
        return float('nan')

    # --- FLOPs and the dominant matmul of one iteration (untimed, also a warm-up)
    counter, recorder = flop_counter(), GemmRecorder()
    batch = prepared(Timer(args.device))
    with counter, recorder:
        first_loss = iteration(batch, Timer(args.device))
    # same weights and batch: the losses must agree (in fp32)
    first_other = [fn(batch, Timer(args.device)) for _, fn in others]
    flops = counter.get_total_flops()
    dominant = recorder.dominant()
    gemm = GemmRate(dominant, args.device, args.gemm_reps) if dominant else None

    for _ in range(max(args.warmup - 1, 0)):
        batch = prepared(Timer(args.device))
        iteration(batch, Timer(args.device))
        for _, fn in others:
            fn(batch, Timer(args.device))
    if args.device == 'cuda':
        torch.cuda.reset_peak_memory_stats()

    phase_times = {p: [] for p in PHASES[args.mode]}
    totals, compute, losses = [], [], []
    other_phase = [{p: [] for p in PHASES['train'][1:]} for _ in others]
    other_totals, other_losses = [[] for _ in others], [[] for _ in others]
    for _ in range(args.iters):
        timer = Timer(args.device)
        batch = prepared(timer)
        losses.append(iteration(batch, timer))
        for p in phase_times:
            phase_times[p].append(timer.times.get(p, 0.0))
        totals.append(sum(timer.times.values()))
        compute.append(sum(v for k, v in timer.times.items() if k != 'data'))
        for i, (_, fn) in enumerate(others):
            otimer = Timer(args.device)
            other_losses[i].append(fn(batch, otimer))
            for p in other_phase[i]:
                other_phase[i][p].append(otimer.times.get(p, 0.0))
            other_totals[i].append(sum(otimer.times.values()))
        if gemm is not None:
            gemm.sample()

    result = dict(mode=args.mode, batch_size=batch_size, device=args.device, amp=args.amp,
                  flops_per_iter=flops, peak_memory=_peak_memory(args.device),
                  images_per_s=_stats([batch_size / t for t in totals]),
                  compute_images_per_s=_stats([batch_size / t for t in compute]),
                  phases={p: _stats(v) for p, v in phase_times.items()}, losses=losses)
    med_compute = statistics.median(compute)
    result['achieved_tflops'] = flops / med_compute / 1e12
    if gemm is not None:
        result['gemm'] = dict(shape=dominant[:4], dtype=str(dominant[4]).replace('torch.', ''),
                              tflops=gemm.median() / 1e12)
        result['fraction_of_gemm'] = result['achieved_tflops'] / result['gemm']['tflops']
    result['compared'] = {}
    for i, (label, _) in enumerate(others):
        result['compared'][label] = dict(
            images_per_s=_stats([batch_size / t for t in other_totals[i]]),
            phases={p: _stats(v) for p, v in other_phase[i].items()}, losses=other_losses[i],
            first_step_losses=(first_loss, first_other[i]),
            speedup=statistics.median(other_totals[i]) / med_compute)
    if args.compare_reference:
        result['reference'] = result['compared']['reference']
        result['speedup_vs_reference'] = result['reference']['speedup']
        strides = {model.backbone.stride, model.target_generator.backbone.stride}
        size = tuple(batch['inputs'].shape[-2:])
        if any(n % st for n in size for st in strides):
            result['reference_note'] = (
                f'input {size[0]}x{size[1]} is not a multiple of the patch sizes '
                f'{sorted(strides)}: the reference maps boxes by grid size, ours by 1/patch '
                '(spec §10 item 11), so the losses differ by design; use an --image-size that '
                'is a common multiple')
    if cached_info is not None:
        result['cached_run'] = whole_run_estimate(result, cached_info, args)
    print_table(result, args, cfg)
    if cached_info is not None:
        print_cached(result, cached_info, args)
    return result


def _build_optim_wrapper(model, cfg, device: str):
    from mmengine.optim import build_optim_wrapper
    wrapper_cfg = copy.deepcopy(cfg.optim_wrapper)
    if wrapper_cfg.get('type') == 'AmpOptimWrapper' and device == 'cpu':
        # mmengine's AMP wrapper needs a GPU; on CPU autocast comes from --amp
        print('note: AmpOptimWrapper -> OptimWrapper on CPU (use --amp bf16 for autocast)')
        for k in ('loss_scale', 'dtype', 'use_fsdp'):
            wrapper_cfg.pop(k, None)
        wrapper_cfg['type'] = 'OptimWrapper'
    return build_optim_wrapper(model, wrapper_cfg)


def _reference_iteration(reference: ReferenceTrainStep, batch: dict, timer: Timer) -> float:
    inputs, samples = batch['inputs'], batch['data_samples']
    boxes = reference_boxes(samples, tuple(inputs.shape[-2:])).to(inputs.device)
    return reference(inputs, boxes, timer)


def print_table(r: dict, args: argparse.Namespace, cfg) -> None:
    b = r['batch_size']
    threads = torch.get_num_threads()
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    print(f'\n== benchmark {osp.basename(args.config)} --mode {args.mode}: batch {b}, '
          f'{args.iters} iterations after {args.warmup} warm-up, device {args.device} '
          f'({torch.cuda.get_device_name() if args.device == "cuda" else f"{threads} threads"}'
          f', load average {load:.1f}), amp {args.amp}, data {args.data}'
          f'{", compiled" if args.compile else ""}')
    print(f'{"phase":<14}{"median s":>10}{"min s":>10}{"max s":>10}')
    for p, s in r['phases'].items():
        print(f'{p:<14}{s["median"]:>10.4f}{s["min"]:>10.4f}{s["max"]:>10.4f}')
    ips, cips = r['images_per_s'], r['compute_images_per_s']
    print(f'images/s      median {ips["median"]:.2f} (min {ips["min"]:.2f}, max {ips["max"]:.2f}, '
          f'IQR {ips["q1"]:.2f}-{ips["q3"]:.2f}); without data: median {cips["median"]:.2f}')
    print(f'peak memory   {r["peak_memory"]}')
    print(f'FLOPs         {r["flops_per_iter"] / 1e12:.4f} TFLOP per iteration '
          f'({r["flops_per_iter"] / b / 1e9:.2f} GFLOP per image); achieved '
          f'{r["achieved_tflops"]:.4f} TFLOP/s')
    if 'gemm' in r:
        g = r['gemm']
        print(f'matmul rate   {g["tflops"]:.4f} TFLOP/s for the dominant GEMM '
              f'{"x".join(map(str, g["shape"]))} (batch x m x k x n) {g["dtype"]}; achieved/GEMM '
              f'= {100 * r["fraction_of_gemm"]:.1f}%')
    if args.mode == 'train':
        print(f'loss          first {r["losses"][0]:.6f}, last {r["losses"][-1]:.6f}')
    else:
        per_image = 1.0 / ips['median']
        print(f'COCO val      5000 images at this rate: {5000 * per_image:.1f} s '
              f'({5000 * per_image / 60:.1f} min); FLOP-based: '
              f'{5000 * r["flops_per_iter"] / b / 1e12:.2f} TFLOP in all')
    cips = r['compute_images_per_s']
    for label, other in r.get('compared', {}).items():
        what = ('reference per-step computation (spec §3.2, unfused fp32)' if label == 'reference'
                else f'{label} (--compare-amp {args.compare_amp})')
        print(f'-- {what}, same weights and batches, interleaved:')
        for p, s in other['phases'].items():
            print(f'{"  " + p:<14}{s["median"]:>10.4f}{s["min"]:>10.4f}{s["max"]:>10.4f}')
        oips = other['images_per_s']
        print(f'{label[:13]:<14}images/s median {oips["median"]:.2f} (min {oips["min"]:.2f}, max '
              f'{oips["max"]:.2f}); ours (without data) {cips["median"]:.2f}; median step time '
              f'{label} / ours = {other["speedup"]:.2f}x')
        ours0, other0 = other['first_step_losses']
        print(f'{"losses":<14}step 1 (same weights, same batch): ours {ours0:.6f} / {label} '
              f'{other0:.6f} (relative difference '
              f'{abs(ours0 - other0) / max(abs(other0), 1e-12):.1e}); last timed step: '
              f'{r["losses"][-1]:.6f} / {other["losses"][-1]:.6f}')
    if 'reference_note' in r:
        print(f'note          {r["reference_note"]}')

if __name__ == '__main__':
    run()
