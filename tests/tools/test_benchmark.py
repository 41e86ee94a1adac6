"""tools/analysis/benchmark.py on the tiny demo config: the train table (phases, spread, FLOPs,
matmul rate, reference comparison) and the eval table; benchmark_step.py's old command lines."""
import math
import os.path as osp

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY = osp.join(ROOT, 'configs', 'densevlm', 'densevlm_tiny_demo.py')
TINY_FAST = osp.join(ROOT, 'configs', 'densevlm', 'densevlm_tiny_demo_fast.py')


def _tool(name):
    from conftest import load_tool
    return load_tool(f'analysis/{name}.py')


@pytest.fixture(scope='module')
def benchmark():
    return _tool('benchmark')


def test_train_table_and_reference_comparison(benchmark, demo, capsys):
    # 112 px is a multiple of both patch sizes (16, 14): reference and ours pool the same cells
    result = benchmark.run([TINY_FAST, '--demo-root', demo, '--iters', '2', '--warmup', '0',
                            '--batch-size', '2', '--image-size', '112', '--compare-reference',
                            '--compare-config', TINY])
    out = capsys.readouterr().out
    for line in ('data', 'teacher', 'student_fwd', 'backward', 'optimizer', 'images/s',
                 'peak memory', 'TFLOP per iteration', 'matmul rate', 'reference     images/s',
                 'median step time reference / ours'):
        assert line in out, line
    assert set(result['phases']) == {'data', 'teacher', 'student_fwd', 'backward', 'optimizer'}
    assert all(s['median'] > 0 for s in result['phases'].values())
    ips = result['images_per_s']
    assert ips['min'] <= ips['median'] <= ips['max']
    assert result['flops_per_iter'] > 0 and result['gemm']['tflops'] > 0
    assert result['gemm']['dtype'] == 'float32'
    assert 0 < result['fraction_of_gemm'] < 10
    ours, ref = result['reference']['first_step_losses']
    assert math.isfinite(ours) and ours > 0
    # Same weights and batch. Not bit-equal: roi_align's adaptive sample count differs when
    # box/patch lands on an integer, box*(1/14) (ours) vs box/w_img*w_grid (reference).
    assert ref == pytest.approx(ours, rel=1e-5)
    assert result['speedup_vs_reference'] > 0
    assert 'median step time reference / ours' in out
    assert 'reference_note' not in result
    # the fast config against the plain one: same loss on the same weights and batch, and the
    # same trajectory afterwards (fp32; not bit-equal here because our first step runs under the
    # FLOP counter's dispatch modes, tests/models/test_fast_path.py checks bit equality)
    plain = result['compared']['densevlm_tiny_demo.py']
    assert plain['first_step_losses'][0] == pytest.approx(plain['first_step_losses'][1],
                                                          rel=1e-6)
    assert plain['losses'] == pytest.approx(result['losses'], rel=1e-5)
    assert 'median step time densevlm_tiny_demo.py / ours' in out


def test_cached_step_against_online_and_whole_run_estimate(benchmark, demo, capsys):
    result = benchmark.run([TINY, '--demo-root', demo, '--iters', '2', '--warmup', '1',
                            '--batch-size', '2', '--image-size', '112', '--compare-cached',
                            'exact', '--run-images', '1000', '--run-epochs', '3'])
    out = capsys.readouterr().out
    cached = result['compared']['cached']
    # the same weights and batches, the P-VLM logits read from the cache: the same losses
    assert cached['first_step_losses'][0] == pytest.approx(cached['first_step_losses'][1],
                                                           rel=1e-6)
    assert cached['losses'] == pytest.approx(result['losses'], rel=1e-5)
    run = result['cached_run']
    assert run['steps'] == 3 * 500 and run['cache_pass_h'] > 0
    assert run['step_ratio'] == pytest.approx(run['online_step_s'] / run['cached_step_s'])
    assert run['cached_run_h'] == pytest.approx(
        run['cache_pass_h'] + 1500 * run['cached_step_s'] / 3600)
    assert 'region cache (exact): 400 cells' in out and 'whole run     3 epochs x 1000' in out
    with pytest.raises(SystemExit):
        benchmark.run([TINY, '--compare-cached', 'exact', '--data', 'config'])
    with pytest.raises(SystemExit, match='reads the P-VLM region cache; benchmark its online'):
        benchmark.run([TINY.replace('.py', '_cached.py'), '--demo-root', demo])


def test_reference_note_when_input_not_a_patch_multiple(benchmark, demo, capsys):
    result = benchmark.run([TINY, '--demo-root', demo, '--iters', '1', '--warmup', '0',
                            '--batch-size', '1', '--image-size', '64', '--compare-reference',
                            '--gemm-reps', '1'])
    assert 'spec §10 item 11' in result['reference_note']
    assert 'note ' in capsys.readouterr().out


def test_eval_table_gives_coco_val_time(benchmark, demo, capsys):
    result = benchmark.run([TINY, '--demo-root', demo, '--mode', 'eval', '--iters', '2',
                            '--warmup', '1', '--batch-size', '2', '--regions', '3'])
    out = capsys.readouterr().out
    assert 'COCO val      5000 images' in out
    assert set(result['phases']) == {'data', 'forward'}
    assert result['flops_per_iter'] > 0


def test_bad_arguments_are_refused(benchmark):
    with pytest.raises(SystemExit):
        benchmark.parse_args([TINY, '--iters', '0'])
    with pytest.raises(SystemExit):
        benchmark.parse_args([TINY, '--mode', 'eval', '--compare-reference'])


def test_benchmark_step_maps_old_command_lines():
    step = _tool('benchmark_step')
    args = step.to_benchmark_args(['train', '--batch', '2', '--size', '224', '--amp',
                                   '--device', 'cpu', '--student', 'EVA02-B-16'])
    assert args[0].endswith('densevlm_eva02-b16_p-eva02-l14-336_coco-512_6e.py')
    joined = ' '.join(args)
    assert '--batch-size 2' in joined and '--image-size 224' in joined
    assert '--amp bf16' in joined and '--random-weights' in joined
    assert 'model.backbone.model_name=EVA02-B-16' in joined
