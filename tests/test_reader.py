import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

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


# -- hostile catalogs, by class (issue 13) --------------------------------------------------
ROWS = [("2001", "Women", "Tops", "Caf\u00e9 Top"), ("2002", "Men", "Shirts", "Plain Shirt"),
        ("2003", "Women", "Heels", "Stiletto \u00c9t\u00e9")]
HEADER_LINE = "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName"


def _line(pid, gender, article, name, year="2012"):
    return f"{pid},{gender},Apparel,Topwear,{article},Red,Summer,{year},Casual,{name}"


def _write(folder: Path, data: bytes, ids=()) -> Path:
    from tests.conftest import draw_product
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "styles.csv").write_bytes(data)
    for i, pid in enumerate(ids):
        draw_product(i, (200, 10 * i, 30), "rectangle").save(folder / "images" / f"{pid}.jpg")
    return folder


def _accounted(catalog) -> bool:
    return len(catalog.products) + len(catalog.skipped) == catalog.rows


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_every_line_ending_reads_every_row(tmp_path, ending):
    text = ending.join([HEADER_LINE] + [_line(*row) for row in ROWS]) + ending
    catalog = read_catalog(_write(tmp_path, text.encode("utf-8"), [r[0] for r in ROWS]))
    assert {p.id: p.name for p in catalog.products} == {r[0]: r[3] for r in ROWS}
    assert catalog.skipped == [] and _accounted(catalog)
    assert catalog.layout.line_ends == {"\n": "LF", "\r\n": "CRLF", "\r": "CR"}[ending]


@pytest.mark.parametrize("ending", ["\n", "\r\n"], ids=["LF", "CRLF"])
def test_a_bare_cr_inside_a_name_keeps_its_row(tmp_path, ending):
    lines = [HEADER_LINE, _line("2001", "Women", "Tops", "Two\rLines"), _line("2002", "Men", "Shirts", "After")]
    catalog = read_catalog(_write(tmp_path, ending.join(lines).encode(), ["2001", "2002"]))
    assert {p.id: p.name for p in catalog.products} == {"2001": "Two Lines", "2002": "After"}


def test_an_unterminated_quote_costs_only_its_own_row(tmp_path):
    lines = [HEADER_LINE, _line("2001", "Women", "Tops", '"Open quote Top'),
             _line("2002", "Men", "Shirts", "Plain"), _line("2003", "Women", "Heels", 'Say "hi"')]
    catalog = read_catalog(_write(tmp_path, "\n".join(lines).encode(), ["2001", "2002", "2003"]))
    assert {p.id for p in catalog.products} == {"2002", "2003"}
    assert [(s.line, s.reason) for s in catalog.skipped] == [
        (2, "malformed row: a quote opens a field and never closes it")]
    assert _accounted(catalog)


def test_a_quoted_name_across_lines_is_one_row(tmp_path):
    lines = [HEADER_LINE, _line("2001", "Women", "Tops", '"First line,\nsecond line"'),
             _line("2002", "Men", "Shirts", "Plain")]
    catalog = read_catalog(_write(tmp_path, "\r\n".join(lines).encode(), ["2001", "2002"]))
    assert catalog.by_id()["2001"].name == "First line, second line"
    assert catalog.by_id()["2002"].name == "Plain" and catalog.skipped == []


UTF8_NAME, LATIN_NAME = "Stiletto \u00c9t\u00e9 \u2713", "Caf\u00e9 Top"


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"], ids=["no-BOM", "BOM"])
def test_one_legacy_byte_spoils_neither_the_header_nor_the_utf8_names(tmp_path, bom):
    data = (bom + f"{HEADER_LINE}\n{_line('2001', 'Women', 'Heels', UTF8_NAME)}\n".encode()
            + f"{_line('2002', 'Women', 'Tops', LATIN_NAME)}\n".encode("cp1252"))
    catalog = read_catalog(_write(tmp_path, data, ["2001", "2002"]))
    assert catalog.by_id()["2001"].name == UTF8_NAME
    assert catalog.by_id()["2002"].name == LATIN_NAME
    assert catalog.layout.legacy_lines == (3,)
    assert "Windows-1252" in catalog.describe() and "line 3" in catalog.describe()


@pytest.mark.parametrize("encoding,expected", [("utf-8", "UTF-8"), ("utf-8-sig", "UTF-8 with BOM"),
                                               ("cp1252", "Windows-1252"), ("utf-16", "UTF-16")])
def test_whole_file_encodings(tmp_path, encoding, expected):
    text = "\r\n".join([HEADER_LINE, _line("2001", "Women", "Tops", "\u201cQuoted\u201d Caf\u00e9 \u20ac5")]) + "\r\n"
    catalog = read_catalog(_write(tmp_path, text.encode(encoding), ["2001"]))
    assert catalog.by_id()["2001"].name == "\u201cQuoted\u201d Caf\u00e9 \u20ac5"
    assert catalog.layout.encoding == expected


YEARS = {"2012": 2012, "2012.0": 2012, " 2012 ": 2012, "inf": None, "-inf": None, "nan": None, "1e999": None,
         "1e3": None, "-5": None, "0": None, "99999999999": None, "0x7DC": None, "\u0662\u0660\u0661\u0662": None,
         "\u00b2": None, "2012.5": None, "": None, "twenty": None}


@pytest.mark.parametrize("raw", list(YEARS), ids=[repr(y) for y in YEARS])
def test_a_bad_year_is_a_blank_field_never_a_crash(tmp_path, raw):
    text = "\n".join([HEADER_LINE, _line("2001", "Women", "Tops", "A Top", year=raw)])
    product = read_catalog(_write(tmp_path, text.encode(), ["2001"])).by_id()["2001"]
    assert product.year == YEARS[raw]
    assert all(isinstance(v, (str, int)) for v in product.metadata().values())


# id -> None when it must be a product, else the start of the reason it is skipped
IDS = {"00123": None, "\u00b2": None, "\u0663": None, "a b": None, "\u00e9\u2713-1": None, "a?b": None,
       "a#b": None, "a%20b": None, "50%": None, "a:b": None, "<b>x<b>": None, "1e3": None, "-1": None,
       "a&b=c": None, "x" * 200: None,
       "x" * 201: "malformed row: the id is longer", "a/b": "malformed row: the id cannot name",
       "a\\b": "malformed row: the id cannot name", "..": "malformed row: the id cannot name",
       "a\x00b": "malformed row: the id holds a control", "a\tb": "malformed row: the id holds a control",
       "a\u200db": "malformed row: the id holds a control", "a\x85b": "malformed row: the id holds a control"}


@pytest.mark.parametrize("pid", list(IDS), ids=[repr(p)[:30] for p in IDS])
def test_the_id_alphabet(tmp_path, pid):
    text = "\n".join([HEADER_LINE, _line(pid, "Women", "Tops", "A Top"), _line("2002", "Men", "Shirts", "B")])
    folder = _write(tmp_path, text.encode("utf-8"), ["2002"])
    if IDS[pid] is None:
        from tests.conftest import draw_product
        draw_product(1, (1, 2, 3), "rectangle").save(folder / "images" / f"{pid}.jpg")
    catalog = read_catalog(folder)
    assert "2002" in catalog.by_id() and _accounted(catalog)
    if IDS[pid] is None:
        assert catalog.by_id()[pid].image.name == f"{pid}.jpg"
    else:
        assert pid not in catalog.by_id()
        assert [s.reason for s in catalog.skipped if s.line == 2][0].startswith(IDS[pid])


def test_a_field_over_the_csv_limit_is_a_skipped_row(tmp_path):
    lines = [HEADER_LINE, _line("2001", "Women", "Tops", '"' + "x" * 200_000 + '"'), _line("2002", "Men", "Shirts", "B")]
    catalog = read_catalog(_write(tmp_path, "\n".join(lines).encode(), ["2001", "2002"]))
    assert "2002" in catalog.by_id() and _accounted(catalog)


# Cells a careless export or a hostile shop might write.
CELL = st.text(alphabet=st.sampled_from(list('ab,"\r\n\t \x00\u00e9\u00b2?#%/\\\u200d\ufeff')), max_size=8)


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(CELL, min_size=1, max_size=12), max_size=6),
       ending=st.sampled_from(["\n", "\r\n", "\r"]), encoding=st.sampled_from(["utf-8", "utf-8-sig", "cp1252"]),
       quoted=st.booleans())
def test_fuzzed_catalogs_read_without_a_crash_and_lose_no_row(tmp_path_factory, rows, ending, encoding, quoted):
    import csv as csvmodule
    import io
    buffer = io.StringIO()
    if quoted:
        csvmodule.writer(buffer, lineterminator=ending).writerows([HEADER_LINE.split(",")] + rows)
    else:
        buffer.write(ending.join([HEADER_LINE] + [",".join(r) for r in rows]))
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "styles.csv").write_bytes(buffer.getvalue().encode(encoding, errors="replace"))
    catalog = read_catalog(folder, check_images=False)
    assert _accounted(catalog)
    assert all(s.line is not None and s.reason for s in catalog.skipped)
    for product in catalog.products:
        assert not any(unicodedata.category(c) == "Cc" for v in product.metadata().values() for c in str(v))


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=600), ending=st.sampled_from([b"\n", b"\r\n", b"\r"]),
       bom=st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe"]))
def test_fuzzed_bytes_after_a_header_never_crash_the_reader(tmp_path_factory, body, ending, bom):
    folder = tmp_path_factory.mktemp("bytes")
    header = HEADER_LINE.encode("utf-16-le" if bom == b"\xff\xfe" else "utf-8")
    (folder / "styles.csv").write_bytes(bom + header + (ending.decode().encode("utf-16-le") if bom == b"\xff\xfe" else ending) + body)
    try:
        catalog = read_catalog(folder)
    except CatalogError as exc:  # only the header may be refused, and the message says why
        assert "missing" in str(exc)
        return
    assert _accounted(catalog)
