from pathlib import Path

import pytest

from catalog import CatalogError, read_catalog
from tests.conftest import make_catalog


def test_unquoted_commas_keep_the_whole_name(catalog_dir):
    catalog = read_catalog(catalog_dir)
    names = {p.id: p.name for p in catalog.products}
    assert names["1001"] == "Brand0 Women Black, Grey and White Heels"
    assert catalog.by_id()["1001"].articleType == "Heels"


def test_empty_fields_are_missing_not_nan_and_ids_stay_strings(tmp_path):
    folder = make_catalog(tmp_path, per_kind=1, extra_rows="007,Men,Apparel,Topwear,Shirts,,,,,Plain Shirt\n")
    from tests.conftest import draw_product
    draw_product(7, (1, 2, 3), "rectangle").save(folder / "images" / "007.jpg")
    product = read_catalog(folder).by_id()["007"]
    assert product.id == "007"
    assert product.baseColour is None and product.season is None and product.year is None and product.usage is None
    assert "nan" not in str(product.metadata()).lower()
    assert product.metadata() == {"gender": "Men", "masterCategory": "Apparel", "subCategory": "Topwear",
                                  "articleType": "Shirts", "name": "Plain Shirt"}


def test_year_is_an_int_and_missing_year_is_none(catalog_dir):
    products = read_catalog(catalog_dir).by_id()
    assert products["1001"].year == 2010
    assert products["1002"].year is None


def test_missing_image_and_malformed_rows_are_reported_not_fatal(tmp_path):
    extra = ("9999,Men,Apparel,Topwear,Shirts,Blue,Fall,2012,Casual,No Image Shirt\n"
             ",Men,Apparel,Topwear,Shirts,Blue,Fall,2012,Casual,No Id\n"
             "1001,Men,Apparel,Topwear,Shirts,Blue,Fall,2012,Casual,Duplicate\n"
             "../etc,Men,Apparel,Topwear,Shirts,Blue,Fall,2012,Casual,Sneaky\n")
    catalog = read_catalog(make_catalog(tmp_path, per_kind=2, extra_rows=extra))
    assert len(catalog.products) == 12
    reasons = {s.id: s.reason for s in catalog.skipped}
    assert reasons["9999"].startswith("missing image")
    assert reasons[None].startswith("malformed row")
    assert "duplicate" in reasons["1001"]
    assert reasons["../etc"].startswith("malformed row")
    assert catalog.skipped_by_reason() == {"missing image": 1, "malformed row": 3}


def test_no_styles_csv_is_one_clear_error(tmp_path):
    with pytest.raises(CatalogError, match="no styles.csv"):
        read_catalog(tmp_path)


def test_unusable_header_names_the_missing_columns(tmp_path):
    (tmp_path / "styles.csv").write_text("id,name,colour\n1,a,b\n")
    with pytest.raises(CatalogError, match="missing: gender"):
        read_catalog(tmp_path)


def test_latin1_file_and_blank_lines_are_read(tmp_path):
    folder = make_catalog(tmp_path, per_kind=1)
    text = (folder / "styles.csv").read_text() + "\n2001,Women,Apparel,Topwear,Tops,Red,Summer,2012,Casual,Caf\xe9 Top\n"
    (folder / "styles.csv").write_bytes(text.encode("latin-1"))
    from tests.conftest import draw_product
    draw_product(2001, (200, 0, 0), "rectangle").save(folder / "images" / "2001.jpg")
    assert read_catalog(folder).by_id()["2001"].name == "Caf\xe9 Top"


@pytest.mark.skipif(not Path(__file__).resolve().parents[2].joinpath("shared/catalog/styles.csv").is_file(),
                    reason="the shared catalog is not beside the checkout")
def test_the_real_shared_catalog():
    catalog = read_catalog(Path(__file__).resolve().parents[2] / "shared/catalog")
    assert len(catalog.products) == 12186
    assert catalog.skipped_by_reason() == {"missing image": 25}
    assert catalog.by_id()["4854"].name == "Newfeel Unisex White, Blue and Orange Casual Shoes"
    assert all(isinstance(p.id, str) for p in catalog.products)
    assert not any("nan" == str(v).lower() for p in catalog.products for v in p.metadata().values())
