# The tiny demo (densevlm_tiny_demo.py) with the fast path switched on (issue 14), for CPU
# measurements and tests: P-VLM under torch.inference_mode (precision stays fp32 here: on CPU
# pass --cfg-options model.target_generator.precision=bf16 to try bf16), fused AdamW with merged
# parameter groups, data workers with pinned memory. Same loss and gradients as the plain config
# in fp32 (tests/models/test_fast_path.py).
_base_ = ['./densevlm_tiny_demo.py']

model = dict(target_generator=dict(inference_mode=True))
optim_wrapper = dict(optimizer=dict(fused=True), paramwise_cfg=dict(merge_groups=True))
train_dataloader = dict(num_workers=2, persistent_workers=True, pin_memory=False)
