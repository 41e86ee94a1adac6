"""Users' inputs of the API: images of every kind, directories, vocabularies (names and presets)."""
import io

import numpy as np
import pytest
from PIL import Image

from densevlm_mm.apis import (PRESETS, ImageReadError, VocabularyError, check_class_names,
                              collect_images, load_image, parse_class_names, preset_names)
from densevlm_mm.apis.vocabulary_embeddings import resolve_vocabulary


def _ramp(h=20, w=30):
    return np.tile(np.linspace(0, 1, w), (h, 1))


def test_16bit_grayscale_png_is_scaled_not_white(tmp_path):
    path = tmp_path / 'depth16.png'
    Image.fromarray((_ramp() * 65535).astype(np.uint16)).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith('I')  # PIL keeps the 16 bits
    rgb = load_image(str(path))
    assert rgb.shape == (20, 30, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0, 0] == 0 and rgb[0, -1, 0] == 255
    assert abs(int(rgb[0, 15, 0]) - round(65535 * 15 / 29 / 257)) <= 1  # linear, not clipped
    assert (rgb[..., 0] == rgb[..., 2]).all()


@pytest.mark.parametrize('mode', ['L', 'RGBA', 'P', 'LA', 'CMYK'])
def test_other_modes_become_rgb(tmp_path, mode):
    rgb = (np.random.default_rng(0).random((12, 16, 3)) * 255).astype(np.uint8)
    im = Image.fromarray(rgb).convert(mode)
    ext = 'jpg' if mode == 'CMYK' else 'png'
    path = tmp_path / f'x.{ext}'
    im.save(path)
    out = load_image(str(path))
    assert out.shape == (12, 16, 3) and out.dtype == np.uint8
    if mode == 'L':
        assert (out[..., 0] == np.asarray(im)).all()


def test_exif_orientation_applied(tmp_path):
    rgb = np.zeros((10, 40, 3), dtype=np.uint8)
    rgb[:, :5] = 255  # white band on the left of the stored pixels
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = tmp_path / 'phone.jpg'
    im.save(path, exif=exif, quality=95)
    out = load_image(str(path))
    assert out.shape == (40, 10, 3)  # upright: portrait
    assert out[:5].mean() > 200 and out[-5:].mean() < 50  # the band is now at the top


def test_arrays_and_pil():
    assert load_image((_ramp() * 65535).astype(np.uint16)).shape == (20, 30, 3)
    f = load_image(np.stack([_ramp()] * 3, -1).astype(np.float32))
    assert f[0, -1, 0] == 255 and f[0, 0, 0] == 0
    assert load_image(Image.new('L', (8, 6), 7))[0, 0].tolist() == [7, 7, 7]
    with pytest.raises(ImageReadError, match='expected an image array'):
        load_image(np.zeros((4, 4, 2)))


def test_unreadable_and_missing_images_are_named(tmp_path):
    bad = tmp_path / 'broken.jpg'
    bad.write_text('not an image')
    with pytest.raises(ImageReadError, match='broken.jpg'):
        load_image(str(bad))
    buf = io.BytesIO()
    Image.new('RGB', (64, 64), 'red').save(buf, format='PNG')
    cut = tmp_path / 'truncated.png'
    cut.write_bytes(buf.getvalue()[:60])
    with pytest.raises(ImageReadError, match='truncated.png'):
        load_image(str(cut))
    with pytest.raises(FileNotFoundError, match='nope.jpg'):
        load_image(str(tmp_path / 'nope.jpg'))


def test_collect_images_skips_other_files(tmp_path):
    Image.new('RGB', (8, 8)).save(tmp_path / 'b.png')
    Image.new('RGB', (8, 8)).save(tmp_path / 'a.JPG')
    (tmp_path / 'notes.txt').write_text('x')
    (tmp_path / 'sub').mkdir()
    images, skipped = collect_images([str(tmp_path)])
    assert [p.rsplit('/', 1)[1] for p in images] == ['a.JPG', 'b.png']
    reasons = {p.rsplit('/', 1)[1]: r for p, r in skipped}
    assert set(reasons) == {'notes.txt', 'sub'} and 'not an image' in reasons['notes.txt']
    with pytest.raises(FileNotFoundError, match='missing.png'):
        collect_images([str(tmp_path / 'missing.png')])


def test_presets():
    sizes = dict(coco=133, ade150=150, ade847=847, lvis=1203, densevlm316=316)
    assert set(PRESETS) == set(sizes)
    for preset, n in sizes.items():
        names = preset_names(preset)
        assert len(names) == n and all(isinstance(x, str) and x for x in names)
    assert preset_names('coco')[0] == 'person' and preset_names('lvis')[0] == 'aerosol_can'
    names, is_thing, _ = resolve_vocabulary('densevlm316')
    assert len(names) == 313 and len(set(names)) == 313  # cupboard / fruit / cradle once
    assert is_thing is not None and int(is_thing.sum()) == 204
    assert resolve_vocabulary('lvis')[1] is None  # no thing/stuff split in that list
    with pytest.raises(VocabularyError, match='unknown vocabulary preset'):
        preset_names('cocoo')


def test_custom_names_are_checked():
    assert parse_class_names(' snow, skis,sky ') == ['snow', 'skis', 'sky']
    assert check_class_names(['snow', 'skis']) == ['snow', 'skis']
    with pytest.raises(VocabularyError, match='only 1 class.*"background"'):
        check_class_names(['snow'])
    with pytest.raises(VocabularyError, match='listed twice'):
        check_class_names(['Dog', 'cat', 'dog'])
    with pytest.raises(VocabularyError, match='same prompts'):
        check_class_names(['traffic light', 'traffic_light'])
    with pytest.raises(VocabularyError, match='class 1 has an empty name'):
        check_class_names(parse_class_names('snow,,sky'))
