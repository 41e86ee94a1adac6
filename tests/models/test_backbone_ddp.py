"""A model built on DenseVLMBackbone whose forward uses the value-only last block and the dense
map trains under DDP (two gloo CPU processes) without ``find_unused_parameters``, because the
backbone froze what its used paths never reach; without that, DDP's reducer fails."""
import socket

import torch
import torch.multiprocessing as mp
from torch import nn

from densevlm_mm.models.backbones import DenseVLMBackbone  # noqa: F401 (registers; inherited)
from densevlm_mm.registry import MODELS

CFG = dict(type='DenseVLMBackbone', model_name='densevlm-tiny-eva02', unlocked_groups=2,
           out_indices=(1, -1), with_dense=True)


class TinyDetector(nn.Module):
    """Intermediate block 1, value-only last block and dense map -> a small conv head."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = nn.Conv2d(2 * backbone.num_features + backbone.embed_dim, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mid, last, dense = self.backbone(x)
        return self.neck(torch.cat([mid, last, dense], dim=1)).square().mean()


def _worker(rank, world, port, out):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
                            world_size=world)
    results = {}
    try:
        for freeze in (True, False):
            torch.manual_seed(0)
            model = TinyDetector(MODELS.build(dict(CFG, freeze_unused=freeze))).train()
            ddp = DDP(model, find_unused_parameters=False)
            opt = torch.optim.SGD([p for p in ddp.parameters() if p.requires_grad], lr=0.1)
            g = torch.Generator().manual_seed(rank)
            try:
                for _ in range(2):
                    opt.zero_grad()
                    ddp(torch.randn(2, 3, 64, 48, generator=g)).backward()
                    opt.step()
                results[freeze] = dict(ok=True, frozen=list(model.backbone.frozen_unused),
                                       params=[p.detach().clone() for p in model.parameters()])
            except RuntimeError as exc:
                results[freeze] = dict(ok=False, error=str(exc))
    finally:
        torch.save(results, f'{out}/rank{rank}.pt')
        dist.destroy_process_group()


def test_two_process_ddp_without_find_unused(tmp_path):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    # fork (CPU only): the workers inherit the imported modules instead of importing again
    mp.start_processes(_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True,
                       start_method='fork')
    r0, r1 = (torch.load(tmp_path / f'rank{r}.pt', weights_only=True) for r in (0, 1))
    assert r0[True]['ok'] and r1[True]['ok'], r0[True].get('error')
    assert sorted(r0[True]['frozen']) == ['visual.trunk.blocks.2.attn.k_proj.weight',
                                          'visual.trunk.blocks.2.attn.q_proj.bias',
                                          'visual.trunk.blocks.2.attn.q_proj.weight']
    for a, b in zip(r0[True]['params'], r1[True]['params']):  # gradients were all-reduced
        torch.testing.assert_close(a, b)
    # without freezing, the unused q/k of the value-only block break DDP's reducer
    assert not r0[False]['ok'] and 'find_unused_parameters' in r0[False]['error']
