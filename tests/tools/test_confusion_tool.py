"""tools/analysis/confusion_matrix.py on a metric npz with empty-mask regions (-1 predictions)."""
import numpy as np
import pytest


@pytest.fixture(scope='module')
def tool():
    from conftest import load_tool
    return load_tool('analysis/confusion_matrix.py')


def test_empty_mask_regions_are_skipped_and_counted(tool, tmp_path, capsys, monkeypatch):
    # 5 regions; two have an empty mask, stored as -1 by RegionClassificationMetric
    labels = np.array([0, 1, 2, 2, 1])
    mask_topk = np.array([[0, 1], [-1, -1], [0, 1], [-1, -1], [2, 0]])
    npz = tmp_path / 'pred.npz'
    np.savez(npz, labels=labels, mask_topk=mask_topk, class_names=np.array(['a', 'b', 'c']),
             class_is_thing=np.array([True, False, False]))
    seen = {}

    def fake_draw(true, pred, names, is_thing, **kwargs):
        seen.update(true=np.asarray(true), pred=np.asarray(pred), names=names)

    import densevlm_mm.visualization as vis
    monkeypatch.setattr(vis, 'draw_confusion_matrix', fake_draw)
    tool.main([str(npz), str(tmp_path / 'out.png'), '--source', 'mask'])
    assert seen['true'].tolist() == [0, 2, 1] and seen['pred'].tolist() == [0, 0, 2]
    assert seen['names'] == ['a', 'b', 'c']
    assert 'skipped 2 of 5 regions' in capsys.readouterr().out


def test_real_figure_with_empty_mask_regions(tool, tmp_path):
    labels = np.array([0, 1, 2, 2])
    npz = tmp_path / 'pred.npz'
    np.savez(npz, labels=labels, mask_topk=np.array([[0], [-1], [0], [1]]),
             class_names=np.array(['a', 'b', 'c']), class_is_thing=np.array([True, False, False]))
    out = tmp_path / 'out.png'
    tool.main([str(npz), str(out)])  # failed with "labels must lie in [0, 3)" before
    assert out.is_file() and out.stat().st_size > 0
