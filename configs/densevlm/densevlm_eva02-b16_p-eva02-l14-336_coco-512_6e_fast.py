# DenseVLM reference recipe (densevlm_eva02-b16_p-eva02-l14-336_coco-512_6e.py) with the fast
# path switched on (issue 14). Every part is a switch of the plain config and gives the same loss
# and gradients in fp32 (tests/models/test_fast_path.py); measure with
#   python tools/analysis/benchmark.py THIS_CONFIG --random-weights [--device cuda]
_base_ = ['./densevlm_eva02-b16_p-eva02-l14-336_coco-512_6e.py']

model = dict(
    # P-VLM: bf16 autocast (no loss of range, unlike fp16) under torch.inference_mode
    target_generator=dict(precision='bf16', inference_mode=True))
optim_wrapper = dict(
    # student: bf16 autocast (no GradScaler needed); fused AdamW, one group per distinct option set
    dtype='bfloat16',
    optimizer=dict(fused=True),
    paramwise_cfg=dict(merge_groups=True))
# decoding and the grid sampler off the main process, pinned host memory, a deeper prefetch
train_dataloader = dict(num_workers=8, persistent_workers=True, pin_memory=True,
                        prefetch_factor=4)
# Optional: torch.compile of the train step through mmengine's Runner (first iterations compile;
# needs a working compiler toolchain):
# compile = True
