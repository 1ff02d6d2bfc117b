"""The study's data-quality and preprocessing experiments: a degraded copy of a catalog is
what it says (size, JPEG quality, background) and keeps the products' ids and labels; an
embedder's preprocessing can be swapped, and says so in its weights id."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from catalog import read_catalog
from catalog.variants import ImageVariant, write_variant


def _jpeg_quantiser_sum(path) -> int:
    # A lower JPEG quality means larger quantisation steps.
    with Image.open(path) as image:
        return sum(sum(table) for table in image.quantization.values())


def test_a_smaller_resolution_fits_within_the_size_and_keeps_ids_and_labels(catalog_dir, tmp_path):
    source = read_catalog(catalog_dir)
    copy = write_variant(source, ImageVariant(size=(30, 40)), tmp_path / "small")
    assert [p.id for p in copy.products] == [p.id for p in source.products]
    for before, after in zip(source.products, copy.products):
        assert (after.articleType, after.baseColour, after.gender, after.name, after.year) == \
            (before.articleType, before.baseColour, before.gender, before.name, before.year)
        with Image.open(after.image) as image:
            assert image.size == (30, 40)    # a 60x80 shot halves exactly


def test_jpeg_quality_is_the_one_named(catalog_dir, tmp_path):
    source = read_catalog(catalog_dir)
    harsh = write_variant(source, ImageVariant(jpeg_quality=20), tmp_path / "q20")
    mild = write_variant(source, ImageVariant(jpeg_quality=90), tmp_path / "q90")
    first_harsh, first_mild = harsh.products[0].image, mild.products[0].image
    assert _jpeg_quantiser_sum(first_harsh) > 3 * _jpeg_quantiser_sum(first_mild)
    # The same quantisation tables as PIL writes for that quality.
    probe = io.BytesIO()
    Image.new("RGB", (16, 16)).save(probe, "JPEG", quality=20)
    probe.seek(0)
    with Image.open(probe) as reference, Image.open(first_harsh) as written:
        assert written.quantization == reference.quantization


def test_a_textured_background_replaces_the_white_backdrop_and_keeps_the_product(catalog_dir, tmp_path):
    source = read_catalog(catalog_dir)
    copy = write_variant(source, ImageVariant(background="textured"), tmp_path / "textured")
    product = source.products[0]
    original = np.asarray(Image.open(product.image).convert("RGB"), dtype=np.int16)
    textured = np.asarray(Image.open(copy.by_id()[product.id].image).convert("RGB"), dtype=np.int16)
    backdrop = original.min(axis=2) >= 250
    inside = ~backdrop
    # The corners were studio white; now they are not, and they vary (a texture, not a fill).
    corner = textured[:6, :6].reshape(-1, 3)
    assert corner.min(axis=1).mean() < 235 and corner.std() > 1
    # The product's pixels (away from its softened edge) are kept.
    core = inside.copy()
    core[:, :] = False
    ys, xs = np.nonzero(inside)
    cy, cx = int(np.median(ys)), int(np.median(xs))
    core[cy - 2:cy + 3, cx - 2:cx + 3] = inside[cy - 2:cy + 3, cx - 2:cx + 3]
    assert np.abs(textured[core] - original[core]).max() < 40
    # Written twice, the same copy: the texture is seeded by the product.
    again = write_variant(source, ImageVariant(background="textured"), tmp_path / "textured-again")
    assert np.array_equal(np.asarray(Image.open(again.by_id()[product.id].image)),
                          np.asarray(Image.open(copy.by_id()[product.id].image)))


def test_a_folder_made_by_another_variant_is_refused(catalog_dir, tmp_path):
    source = read_catalog(catalog_dir)
    write_variant(source, ImageVariant(jpeg_quality=50), tmp_path / "copy")
    with pytest.raises(ValueError, match="another folder"):
        write_variant(source, ImageVariant(jpeg_quality=20), tmp_path / "copy")


def test_a_copy_of_some_ids_holds_just_those(catalog_dir, tmp_path):
    source = read_catalog(catalog_dir)
    ids = [p.id for p in source.products[::3]]
    copy = write_variant(source, ImageVariant(size=(45, 60)), tmp_path / "some", ids=ids)
    assert [p.id for p in copy.products] == ids


@pytest.mark.parametrize("bad", [dict(size=(4, 80)), dict(jpeg_quality=0), dict(jpeg_quality=100),
                                 dict(background="marble")])
def test_bad_variants_are_refused_with_a_message(bad):
    with pytest.raises(ValueError):
        ImageVariant(**bad)


def test_variant_names_and_sizes():
    assert ImageVariant.parse_size("60x80") == (60, 80)
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        ImageVariant.parse_size("sixty")
    assert ImageVariant(size=(60, 80), jpeg_quality=20, background="textured").name == "60x80-jpeg20-textured"
    assert ImageVariant().name == "original" and ImageVariant().is_original


def test_a_swapped_framing_changes_the_vectors_and_the_weights_id(catalog_dir):
    from embedding import load_embedder
    own = load_embedder("resnet18", "random")
    padded = load_embedder("resnet18", "random", framing="pad", input_size=112)
    assert padded.weights_id == own.weights_id + "|pad@112"
    assert padded.image_size == 112
    shot = Image.open(read_catalog(catalog_dir).products[0].image)
    tensor = padded.preprocess(shot)
    assert tuple(tensor.shape) == (3, 112, 112)
    # A 60x80 shot padded to a square on white: the side columns are white (1 after scaling
    # to [0, 1], then ImageNet's normalisation).
    white = (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    assert np.allclose(tensor[:, 56, 0].numpy(), white, atol=1e-4)
    assert not np.allclose(own.embed([shot]), padded.embed([shot]))
    cropped_lite = load_embedder("efficientnet_lite0", "random", framing="crop")
    assert cropped_lite.preprocess(shot).shape[-1] == 224
    assert "centre crop" in cropped_lite.preprocessing and "resize_size=[256]" in cropped_lite.preprocessing


def test_evaluate_on_a_degraded_sample_keeps_ids_and_says_what_it_ran(catalog_dir, tmp_path, capsys):
    import app
    out = tmp_path / "out"
    code = app.main(["evaluate", "--catalog", str(catalog_dir), "--db", str(tmp_path / "db"), "--runtime", "eager",
                     "--weights", "random", "--models", "resnet18", "--sample", "6", "--catalog-sample", "12",
                     "--resolution", "30x40", "--jpeg-quality", "20", "--background", "textured",
                     "--framing", "pad", "--input-size", "64", "--no-photo-like", "--quiet", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["catalog"]["variant"] == "30x40-jpeg20-textured"
    assert metrics["catalog"]["products"] == 12 and metrics["catalog"]["indexed"] == 12
    copy = read_catalog(out / "catalog-variant")
    source_ids = {p.id for p in read_catalog(catalog_dir).products}
    assert len(copy.products) == 12 and {p.id for p in copy.products} <= source_ids
    with Image.open(copy.products[0].image) as image:
        assert image.size == (30, 40)
    assert metrics["models"]["resnet18"]["weights_id"].endswith("|pad@64")
