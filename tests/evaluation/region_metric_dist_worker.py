"""Worker of the 2-process gloo test in test_region_cls_metric.py, kept in a light module so the
spawned processes import only torch, mmengine and densevlm_mm.evaluation."""
import json
import math
import socket

from densevlm_mm.evaluation import RegionClassificationMetric


def run_metric(rank: int, world_size: int, samples: list, meta: dict, keyed: bool) -> dict:
    """Process this rank's shard (mmengine DefaultSampler order, padded by repetition) in batches
    of 2 and evaluate over the dataset size."""
    metric = RegionClassificationMetric()
    metric.dataset_meta = meta
    n = len(samples)
    total = math.ceil(n / world_size) * world_size
    shard = (list(range(n)) * 2)[:total][rank::world_size]
    batch = []
    for i in shard:
        s = dict(samples[i])
        if not keyed:  # rely on collect_results' truncation alone
            s.pop('sample_idx'), s.pop('img_path')
        batch.append(s)
        if len(batch) == 2:
            metric.process(None, batch)
            batch = []
    if batch:
        metric.process(None, batch)
    return metric.evaluate(n)


def dist_worker(rank, world_size, port, samples, meta, out_file):
    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
                            world_size=world_size)
    try:
        results = [run_metric(rank, world_size, samples, meta, keyed) for keyed in (True, False)]
        if rank == 0:
            with open(out_file, 'w') as f:
                json.dump(results, f)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
