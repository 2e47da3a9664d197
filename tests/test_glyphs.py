"""Procedural glyphs: seeded draws are deterministic, independent of each other and of chunking; the dataset record
names its fonts; the extractor calibration detects every degradation on a miniature."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ditpareto import glyphs
from ditpareto.calibration import DEGRADATIONS, calibrate, degrade
from ditpareto.data import load_attributes, load_draw
from ditpareto.errors import InputError
from test_cli import run_cli


def test_draw_is_deterministic_and_independent_of_size_and_chunking():
    a = glyphs.draw_glyphs("train", 300, seed=0, chunk=128)
    b = glyphs.draw_glyphs("train", 300, seed=0, chunk=300)
    c = glyphs.draw_glyphs("train", 100, seed=0)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.images[:100], c.images)  # sample i depends only on (seed, draw, i)
    for key in a.attributes:
        assert np.array_equal(a.attributes[key], b.attributes[key]), key
    other_seed = glyphs.draw_glyphs("train", 100, seed=1)
    assert not np.array_equal(other_seed.images, c.images)


def test_draws_are_independent():
    n = 400
    draws = {name: glyphs.draw_glyphs(name, n) for name in ("train", "reference", "floor")}
    flat = {name: d.images.reshape(n, -1).astype(np.int16) for name, d in draws.items()}
    names = list(draws)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            # no image of one draw appears in another
            shared = {row.tobytes() for row in flat[first]} & {row.tobytes() for row in flat[second]}
            assert not shared, (first, second)
            # index-aligned samples are unrelated: labels agree at chance, and their pixels are no more alike than
            # those of two unrelated samples (every glyph image shares a bright centre)
            agree = float((draws[first].labels == draws[second].labels).mean())
            assert agree < 0.2, (first, second, agree)
            a = flat[first] - flat[first].mean(1, keepdims=True)
            b = flat[second] - flat[second].mean(1, keepdims=True)

            def corr(u, v):
                return float(((u * v).sum(1) / np.sqrt((u * u).sum(1) * (v * v).sum(1))).mean())

            assert abs(corr(a, b) - corr(a, np.roll(b, 1, axis=0))) < 0.03, (first, second)
    labels = np.bincount(draws["train"].labels, minlength=10)
    assert labels.min() > 20  # every digit drawn


def test_every_face_renders_ten_distinct_digits_and_is_recorded():
    masks, heights = glyphs.glyph_cache()
    assert masks.shape[:3] == (len(glyphs.FACES), len(glyphs.STROKES), 10)
    assert (heights > 0.3).all()
    record = glyphs.font_record()
    assert len(record) == len(glyphs.FACES) and all(len(f["sha256"]) == 64 for f in record)
    assert {"pillow", "freetype", "matplotlib"} <= set(glyphs.renderer_versions())


def test_images_have_texture_and_detail():
    d = glyphs.draw_glyphs("reference", 256)
    assert d.images.dtype == np.uint8 and d.images.shape == (256, 16, 16, 1)
    assert glyphs.flat_token_fraction(d.images) < 0.3  # textured backgrounds: few flat tokens
    assert set(np.unique(d.attributes["background"])) == {0, 1, 2}
    assert d.attributes["family"].max() < len(glyphs.FAMILIES) and d.attributes["style"].max() < 4


def test_unknown_draw_and_bad_sizes_are_refused():
    with pytest.raises(InputError, match="unknown glyph draw"):
        glyphs.draw_glyphs("test", 10)
    with pytest.raises(InputError, match="n >= 1"):
        glyphs.draw_glyphs("train", 0)


def test_prepare_data_cli_writes_draw_and_record(tmp_path):
    out = tmp_path / "floor.npz"
    result = run_cli("prepare-data", "--dataset", "glyphs", "--draw", "floor", "--num", "64", "--out", str(out))
    assert result.returncode == 0, result.stderr
    data = load_draw(out)
    assert data.images.shape == (64, 16, 16, 1)
    assert set(load_attributes(out)) >= {"family", "style", "rotation_bin", "background"}
    record = json.loads((tmp_path / "floor.npz.json").read_text())
    assert record["draw"] == "floor" and len(record["fonts"]) == len(glyphs.FACES) and "freetype" in record["renderer"]
    again = tmp_path / "again.npz"
    run_cli("prepare-data", "--dataset", "glyphs", "--draw", "floor", "--num", "64", "--out", str(again))
    assert out.read_bytes() == again.read_bytes()  # fixed zip timestamps: the same draw has the same sha256
    missing = run_cli("prepare-data", "--dataset", "glyphs", "--draw", "floor", "--out", str(out))
    assert missing.returncode == 2 and "--num" in missing.stderr


def test_degradations_change_images_as_graded():
    images = glyphs.draw_glyphs("floor", 32).images
    previous = {}
    for name, level in DEGRADATIONS:
        out = degrade(images, name, level)
        assert out.shape == images.shape and out.dtype == np.uint8
        change = float(np.abs(out.astype(int) - images).mean())
        assert change > 0, (name, level)
        if name in previous:
            assert change > previous[name], (name, level)  # a higher level changes more
        previous[name] = change


@pytest.fixture(scope="module")
def miniature_extractor():
    from ditpareto.glyph_extractor import train_glyph_cnn

    train, val = glyphs.draw_glyphs("extractor", 3000), glyphs.draw_glyphs("extractor_val", 300)
    from ditpareto.data import ImageSet

    model, stats = train_glyph_cnn(ImageSet(train.images, train.labels), train.attributes,
                                   ImageSet(val.images, val.labels), val.attributes, steps=200, seed=0)
    return model, stats


def test_calibration_is_monotone_on_a_miniature(miniature_extractor):
    import torch

    from ditpareto.glyph_extractor import grey_float
    from ditpareto.metrics import fid_from_features

    model, stats = miniature_extractor
    assert stats["digit_accuracy"] > 0.8, stats

    def features(images):
        with torch.no_grad():
            return model.features(grey_float(images)).double().numpy()

    reference = glyphs.draw_glyphs("reference", 2000).images
    floor = glyphs.draw_glyphs("floor", 1500).images
    result = calibrate(features, reference, [floor[i * 500:(i + 1) * 500] for i in range(3)], fid_from_features)
    assert result.monotone, result.rows
    by = {(r["degradation"], r["level"]): r["fid"] for r in result.rows if r["degradation"] != "clean"}
    assert by[("blur", 1.0)] > by[("blur", 0.5)] > result.floor
    assert result.spread > 0 and result.min_ratio > 1


def test_calibration_flags_a_blind_extractor():
    """An extractor that ignores the image (constant features plus noise) fails: nothing rises above the spread."""
    rng = np.random.default_rng(0)

    def blind(images):
        return rng.normal(size=(len(images), 4))

    reference = glyphs.draw_glyphs("reference", 300).images
    floor = glyphs.draw_glyphs("floor", 300).images
    from ditpareto.metrics import fid_from_features

    result = calibrate(blind, reference, [floor[:100], floor[100:200], floor[200:]], fid_from_features)
    assert not result.passed
