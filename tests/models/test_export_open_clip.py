"""Export an aligned work-dir checkpoint to a plain open_clip checkpoint that stock
``open_clip.create_model`` loads strictly, with the aligned ``encode_image``."""
import copy
import sys

import open_clip
import pytest
import torch

from densevlm_mm.models.backbones import DenseVLMBackbone
from densevlm_mm.models.clip_factory import create_clip
from densevlm_mm.utils.checkpoint import CheckpointError


def _cli():
    sys.path.insert(0, 'tools/model_converters')
    try:
        import densevlm_to_open_clip
    finally:
        sys.path.pop(0)
    return densevlm_to_open_clip


@pytest.mark.parametrize('name', ['densevlm-tiny-vit', 'densevlm-tiny-eva02'])
def test_export_loads_in_stock_open_clip(tmp_path, name, capsys):
    torch.manual_seed(0)
    base, tokenizer = create_clip(name)
    torch.save(base.state_dict(), tmp_path / 'base.pt')
    # the "aligned" student: the base image tower, changed by training
    student = DenseVLMBackbone.from_open_clip(copy.deepcopy(base), model_name=name)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.02 * torch.randn_like(p))
    work_dir_ckpt = {'meta': {'epoch': 2}, 'state_dict': {
        **{'backbone.' + k: v for k, v in student.state_dict().items()},
        'head.text': torch.zeros(3, 32)}}
    torch.save(work_dir_ckpt, tmp_path / 'epoch_2.pth')
    out = tmp_path / 'aligned_open_clip.pt'
    assert _cli().main([str(tmp_path / 'epoch_2.pth'), '--base', str(tmp_path / 'base.pt'),
                        '--model', name, '--out', str(out)]) == 0
    assert 'wrote' in capsys.readouterr().out
    # stock open_clip (the tiny names are registered with open_clip.add_model_config)
    model = open_clip.create_model(name, pretrained=str(out)).eval()
    sd = torch.load(out, weights_only=True)
    assert set(sd) == set(model.state_dict())
    model.load_state_dict(sd, strict=True)
    x = torch.randn(2, 3, 64, 64)
    tokens = tokenizer(['a cat', 'a photo of a dog'])
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(x), student.eval().encode_image(x),
                                   rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model.encode_text(tokens), base.eval().encode_text(tokens),
                                   rtol=0, atol=0)
        assert not torch.allclose(model.encode_image(x), base.encode_image(x))
    assert torch.equal(model.logit_scale, base.logit_scale)


def test_export_errors(tmp_path):
    torch.manual_seed(0)
    base, _ = create_clip('densevlm-tiny-vit')
    torch.save({k: v for k, v in base.state_dict().items() if k.startswith('visual.')},
               tmp_path / 'visual_only.pt')
    torch.save(base.state_dict(), tmp_path / 'base.pt')
    from densevlm_mm.models.backbones.export import aligned_open_clip_state_dict
    with pytest.raises(CheckpointError, match=r'visual_only\.pt.*only image-tower weights'):
        aligned_open_clip_state_dict(str(tmp_path / 'base.pt'), str(tmp_path / 'visual_only.pt'),
                                     'densevlm-tiny-vit')
    other = DenseVLMBackbone('densevlm-tiny-eva02')
    torch.save({'state_dict': {'backbone.' + k: v for k, v in other.state_dict().items()}},
               tmp_path / 'eva_run.pth')
    rc = _cli().main([str(tmp_path / 'eva_run.pth'), '--base', str(tmp_path / 'base.pt'),
                      '--model', 'densevlm-tiny-vit', '--out', str(tmp_path / 'o.pt')])
    assert rc == 1 and not (tmp_path / 'o.pt').exists()


def test_densevlm_work_dir_checkpoint_round_trip(tmp_path, demo):
    """The tiny demo's DenseVLM (student + P-VLM + head) -> its work-dir checkpoint -> the
    backbone by name and -> a stock open_clip model with the demo's base text tower."""
    from mmengine.runner.checkpoint import save_checkpoint

    from densevlm_mm.apis.tiny_demo import load_tiny_demo_config
    from densevlm_mm.registry import MODELS
    from densevlm_mm.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    cfg = load_tiny_demo_config(demo)
    model = MODELS.build(copy.deepcopy(cfg.model.to_dict()))
    with torch.no_grad():  # "training" changed the student
        for p in model.backbone.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ckpt = str(tmp_path / 'epoch_6.pth')
    save_checkpoint({'meta': {'epoch': 6}, 'state_dict': model.state_dict()}, ckpt)
    name = cfg.model.backbone.model_name
    bb = DenseVLMBackbone(name, pretrained=ckpt).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(bb.dense_features(x), model.backbone.eval().dense_features(x),
                                   rtol=0, atol=0)
    out = str(tmp_path / 'densevlm_tiny_open_clip.safetensors')
    base = cfg.model.backbone.pretrained
    assert _cli().main([ckpt, '--base', base, '--model', name, '--out', out]) == 0
    stock = open_clip.create_model(name, pretrained=out).eval()
    ref_clip, tok = create_clip(name, pretrained=base)
    with torch.no_grad():
        torch.testing.assert_close(stock.encode_image(x[..., :64]),
                                   bb.encode_image(x[..., :64]), rtol=1e-5, atol=1e-6)
        t = tok(['a photo of a cat'])
        torch.testing.assert_close(stock.encode_text(t), ref_clip.eval().encode_text(t),
                                   rtol=0, atol=0)
