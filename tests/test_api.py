"""The shop process's HTTP side against a real index (random weights): the JSON API, its
refusals, catalog images, and the shop pages' handling of hostile catalog text."""
from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import draw_product, make_catalog

fastapi_testclient = pytest.importorskip("fastapi.testclient")
TestClient = fastapi_testclient.TestClient

from catalog import read_catalog  # noqa: E402
from search.searcher import RESULT_FIELDS  # noqa: E402

HOSTILE = "<img src=x onerror=alert(1)> Top"
HOSTILE_ID = "9001"
LINKED_ID = "9002"
BARE_ID = "9003"  # only an article type: no name, gender, colour, year...


def jpeg_bytes(path: Path) -> bytes:
    return Path(path).read_bytes()


def png_of(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def catalog(catalog_dir):
    return read_catalog(catalog_dir)


@pytest.fixture(scope="module")
def client(searcher, catalog_dir):
    from operations import SearchPolicy
    from shop import ShopSettings, build_app
    policy = SearchPolicy(models=("resnet18", "resnet50"), default_model="resnet18", k=5, max_upload_bytes=200_000)
    settings = ShopSettings(policy=policy, page_size=5, images_dir=catalog_dir / "images")
    return TestClient(build_app(searcher, settings))


def make_hostile_shop(root: Path, embedders):
    """A catalog holding a product named like markup and a product whose image is a link to a
    file outside the images folder, indexed for resnet18; returns (images folder, searcher)."""
    from indexing import index_catalog
    from search import Searcher
    from vectorstore import StoreSettings, make_client
    folder = make_catalog(root / "catalog", per_kind=2, extra_rows=(
        f'{HOSTILE_ID},Women,Apparel,Topwear,Tops,Red,Summer,2012,Casual,"{HOSTILE}"\n'
        f"{LINKED_ID},Men,Apparel,Topwear,Shirts,Blue,Summer,2012,Casual,Linked Shirt\n"
        f"{BARE_ID},,,,Socks,,,,,\n"))
    draw_product(9001, (200, 30, 30), "rectangle").save(folder / "images" / f"{HOSTILE_ID}.jpg")
    draw_product(9003, (90, 90, 90), "ellipse").save(folder / "images" / f"{BARE_ID}.jpg")
    outside = root / "secret.jpg"  # a valid image, so indexing keeps the product
    draw_product(9002, (20, 30, 200), "rectangle").save(outside)
    (folder / "images" / f"{LINKED_ID}.jpg").symlink_to(outside)
    client = make_client(StoreSettings(path=root / "db"))
    index_catalog(read_catalog(folder), client, [embedders["resnet18"]], batch_size=8, show_progress_bar=False)
    searcher = Searcher(client, embedders=embedders)
    return folder / "images", searcher


@pytest.fixture(scope="module")
def hostile_client(tmp_path_factory, embedders):
    from operations import SearchPolicy
    from shop import ShopSettings, build_app
    images, searcher = make_hostile_shop(tmp_path_factory.mktemp("hostile"), embedders)
    settings = ShopSettings(policy=SearchPolicy(models=("resnet18",), default_model="resnet18"), images_dir=images,
                            page_size=50)
    return TestClient(build_app(searcher, settings))


def recommend(client, data: bytes | None, name="photo.jpg", **fields):
    files = {"image": (name, data, "application/octet-stream")} if data is not None else None
    return client.post("/api/recommend", files=files, data={k: str(v) for k, v in fields.items()})


# -- health and docs ---------------------------------------------------------------------------
def test_health_counts_every_served_model(client, catalog):
    body = client.get("/api/health").json()
    assert body["status"] == "ok"
    assert body["models"] == {"resnet18": len(catalog.products), "resnet50": len(catalog.products)}
    assert body["default_model"] == "resnet18"


def test_openapi_documents_the_api(client):
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/recommend", "/api/products/{product_id}/similar", "/api/health"} <= set(paths)
    form = paths["/api/recommend"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert form["schema"]


# -- POST /api/recommend -------------------------------------------------------------------------
def test_recommend_answers_in_the_search_json_schema(client, catalog):
    product = catalog.products[3]
    response = recommend(client, jpeg_bytes(product.image), k=4)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"model", "results", "items"}
    assert body["model"] == "resnet18"
    # a catalog shot is one item: the whole photo, its products the results
    assert len(body["items"]) == 1 and body["items"][0]["box"] == [0.0, 0.0, 1.0, 1.0]
    assert body["items"][0]["results"] == body["results"]
    results = body["results"]
    assert len(results) == 4
    for r in results:
        assert list(r) == ["id", "score", *RESULT_FIELDS]
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    # The product's own catalog photo is its own nearest neighbour.
    assert results[0]["id"] == product.id
    assert results[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert results[0]["name"] == product.name
    assert results[0]["year"] == product.year


def test_recommend_default_k_and_other_model(client, catalog):
    body = recommend(client, jpeg_bytes(catalog.products[0].image), model="resnet50").json()
    assert body["model"] == "resnet50"
    assert len(body["results"]) == 5


def test_recommend_image_urls_are_served(client, catalog):
    results = recommend(client, jpeg_bytes(catalog.products[0].image), k=2).json()["results"]
    for r in results:
        got = client.get(r["image"])
        assert got.status_code == 200
        assert got.content == jpeg_bytes(catalog.by_id()[r["id"]].image)


def test_recommend_filters_use_the_catalog_vocabulary(client, catalog):
    product = catalog.products[0]
    body = recommend(client, jpeg_bytes(product.image), k=10, gender="men", category="shoe").json()
    assert body["results"]
    for r in body["results"]:
        assert r["gender"] == "Men"
        assert "Shoes" in (r["masterCategory"], r["subCategory"], r["articleType"])
    expected = sum(1 for p in catalog.products if p.gender == "Men" and p.subCategory == "Shoes")
    assert len(body["results"]) == min(10, expected)


def test_recommend_accepts_a_png_with_transparency(client):
    image = Image.new("RGBA", (40, 60), (0, 0, 0, 0))
    image.paste((200, 30, 30, 255), (5, 5, 35, 55))
    assert recommend(client, png_of(image), name="cutout.png").status_code == 200


def test_recommend_without_a_file(client):
    response = client.post("/api/recommend", data={"model": "resnet18"})
    assert response.status_code == 400
    assert "'image'" in response.json()["detail"]


def test_recommend_with_the_file_in_another_field(client, catalog):
    files = {"photo": ("a.jpg", jpeg_bytes(catalog.products[0].image), "image/jpeg")}
    response = client.post("/api/recommend", files=files)
    assert response.status_code == 400
    assert "'image'" in response.json()["detail"]


@pytest.mark.parametrize("data, why", [(b"%PDF-1.4 not a picture", "not an image"),
                                        (b"", "empty"),
                                        (b"\xff\xd8\xff\xe0" + b"\x00" * 40, "truncated")])
def test_recommend_refuses_what_is_not_an_image(client, data, why):
    response = recommend(client, data, name="photo.jpg")
    assert response.status_code == 400, why
    detail = response.json()["detail"]
    assert detail.startswith("photo.jpg: ")
    assert len(detail) > len("photo.jpg: ")


def test_recommend_refuses_a_file_just_over_the_limit(client):
    response = recommend(client, b"\xff" * 200_001)
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]


def test_recommend_refuses_a_declared_body_far_over_the_limit(client):
    response = recommend(client, b"\xff" * 400_000)
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]


def test_recommend_refuses_a_large_body_sent_without_a_length(client, catalog):
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()

    def chunks():  # a generator body goes out chunked, with no Content-Length to refuse early
        yield head
        for _ in range(40):
            yield b"\xff" * 10_000
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post("/api/recommend", content=chunks(),
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 413


def test_recommend_unknown_model(client, catalog):
    response = recommend(client, jpeg_bytes(catalog.products[0].image), model="vgg16")
    assert response.status_code == 400
    body = response.json()
    assert "vgg16" in body["detail"] and "resnet18" in body["detail"]
    assert body["models"] == ["resnet18", "resnet50"]


def test_recommend_unknown_filter_value_names_the_closest(client, catalog):
    response = recommend(client, jpeg_bytes(catalog.products[0].image), gender="Wmen")
    assert response.status_code == 400
    body = response.json()
    assert body["field"] == "gender" and body["value"] == "Wmen"
    assert "Women" in body["suggestions"]
    assert "Women" in body["detail"]


@pytest.mark.parametrize("k", [0, -1, 51, "five"])
def test_recommend_refuses_a_bad_k(client, catalog, k):
    assert recommend(client, jpeg_bytes(catalog.products[0].image), k=k).status_code == 422


# -- GET /api/products/{id}/similar -----------------------------------------------------------
def test_similar_leaves_the_product_out(client, catalog):
    product = catalog.products[5]
    response = client.get(f"/api/products/{product.id}/similar", params={"k": 6, "model": "resnet50"})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "resnet50"
    ids = [r["id"] for r in body["results"]]
    assert len(ids) == 6 and len(set(ids)) == 6
    assert product.id not in ids
    for r in body["results"]:
        assert list(r) == ["id", "score", *RESULT_FIELDS]


def test_similar_default_model_and_k(client, catalog):
    body = client.get(f"/api/products/{catalog.products[0].id}/similar").json()
    assert body["model"] == "resnet18" and len(body["results"]) == 5


def test_similar_matches_a_search_with_the_products_photo(client, catalog):
    # The stored vector is the photo's vector: the same neighbours, minus the product itself.
    product = catalog.products[7]
    by_photo = [r["id"] for r in recommend(client, jpeg_bytes(product.image), k=6).json()["results"]]
    similar = [r["id"] for r in client.get(f"/api/products/{product.id}/similar", params={"k": 5}).json()["results"]]
    assert similar == [i for i in by_photo if i != product.id][:5]


def test_similar_unknown_product(client):
    response = client.get("/api/products/no-such-id/similar")
    assert response.status_code == 404
    assert "no-such-id" in response.json()["detail"]


def test_similar_unknown_model_and_filter(client, catalog):
    pid = catalog.products[0].id
    assert client.get(f"/api/products/{pid}/similar", params={"model": "resnet101"}).status_code == 400
    response = client.get(f"/api/products/{pid}/similar", params={"category": "Sheos"})
    assert response.status_code == 400
    assert "Shoes" in response.json()["suggestions"]


# -- product listing ---------------------------------------------------------------------------
def test_product_listing_pages_through_the_filtered_catalog(client, catalog):
    women = sorted((p.id for p in catalog.products if p.gender == "Women"), key=int)
    seen, page = [], 1
    while True:
        body = client.get("/api/products", params={"gender": "Women", "page": page, "per_page": 3}).json()
        seen += [p["id"] for p in body["products"]]
        assert body["total"] == len(women)
        if page >= body["pages"]:
            break
        page += 1
    assert seen == women
    assert client.get("/api/products/no-such-id").status_code == 404


# -- catalog images -----------------------------------------------------------------------------
def test_images_are_served_from_the_catalog(client, catalog):
    product = catalog.products[2]
    response = client.get(f"/images/{product.id}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content == jpeg_bytes(product.image)


@pytest.mark.parametrize("path", ["/images/no-such-id", "/images/%2E%2E",
                                  "/images/..%2Fstyles.csv", "/images/..%2F..%2F..%2Fetc%2Fpasswd",
                                  "/images/%2Fetc%2Fpasswd", "/images/1001%00"])
def test_images_refuse_anything_but_a_product_id(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert b"root:" not in response.content and b"productDisplayName" not in response.content


def test_images_outside_the_images_folder_are_not_served(hostile_client):
    # Indexed (the link points at a readable image) but the file lies outside the folder.
    assert hostile_client.get(f"/api/products/{LINKED_ID}").status_code == 200
    assert hostile_client.get(f"/images/{LINKED_ID}").status_code == 404
    assert hostile_client.get(f"/images/{HOSTILE_ID}").status_code == 200


# -- shop pages -----------------------------------------------------------------------------------
def grid_ids(html: str) -> list[str]:
    return re.findall(r'class="card" href="[^"]*" data-product-id="([^"]+)"', html)


def test_grid_filters_and_pages(client, catalog):
    men = sorted((p.id for p in catalog.products if p.gender == "Men"), key=int)
    first = client.get("/", params={"gender": "Men"})
    assert first.status_code == 200
    second = client.get("/", params={"gender": "Men", "page": 2})
    assert grid_ids(first.text) + grid_ids(second.text) == men  # page_size 5, 8 men's products
    assert "page=2" in first.text
    shoes = client.get("/", params={"category": "Shoes"}).text
    assert set(grid_ids(shoes)) <= {p.id for p in catalog.products if p.subCategory == "Shoes"}


def test_grid_unknown_filter_value_says_so(client):
    response = client.get("/", params={"gender": "Wmen"})
    assert response.status_code == 400
    assert "Women" in response.text and "Wmen" in response.text


def test_product_page_shows_similar_items(client, catalog):
    product = catalog.products[4]
    response = client.get(f"/products/{product.id}")
    assert response.status_code == 200
    similar_html = response.text.split('id="similar-grid"', 1)[1]
    ids = grid_ids(similar_html)
    # the page keeps the product's gender, as the API does when asked to
    api = client.get(f"/api/products/{product.id}/similar", params={"same_gender": "true"}).json()["results"]
    assert ids == [r["id"] for r in api]
    assert {r["gender"] for r in api} <= {product.gender, "Unisex"}
    assert product.id not in ids
    assert client.get("/products/no-such-id").status_code == 404


def test_a_product_with_missing_fields_still_shows(hostile_client):
    grid = hostile_client.get("/", params={"category": "Socks"})
    assert grid.status_code == 200
    assert grid_ids(grid.text) == [BARE_ID]
    page = hostile_client.get(f"/products/{BARE_ID}")
    assert page.status_code == 200
    assert "<h1 id=\"product-name\">Socks</h1>" in page.text
    assert "Year" not in page.text and "None" not in page.text
    assert hostile_client.get(f"/api/products/{BARE_ID}").json()["gender"] is None


def test_hostile_name_is_text_in_the_shop_pages(hostile_client):
    products = hostile_client.get("/api/products", params={"per_page": 200}).json()["products"]
    # A product whose "Similar items" include the hostile one: its name shows there too.
    neighbour = next(p["id"] for p in products if p["id"] != HOSTILE_ID and HOSTILE_ID in
                     [r["id"] for r in hostile_client.get(f"/api/products/{p['id']}/similar",
                                                          params={"same_gender": "true"}).json()["results"]])
    pages = [hostile_client.get("/", params={"gender": "Women"}),
             hostile_client.get(f"/products/{HOSTILE_ID}"),
             hostile_client.get(f"/products/{neighbour}")]
    for response in pages:
        assert response.status_code == 200
        assert HOSTILE_ID in grid_ids(response.text) or f'data-product-id="{HOSTILE_ID}"' in response.text
        assert "<img src=x" not in response.text
        assert "&lt;img src=x onerror=alert(1)&gt; Top" in response.text
        assert "script-src 'self'" in response.headers["content-security-policy"]
    # The API returns the name as data, exactly.
    assert hostile_client.get(f"/api/products/{HOSTILE_ID}").json()["name"] == HOSTILE


def test_pages_and_health_say_how_far_background_indexing_is(searcher, catalog_dir):
    from operations import SearchPolicy
    from shop import ShopSettings, build_app
    said = {"status": "Indexing the catalog: 3,200 of 12,186 products indexed."}
    settings = ShopSettings(policy=SearchPolicy(models=("resnet18",), default_model="resnet18"),
                            images_dir=catalog_dir / "images")
    shop = TestClient(build_app(searcher, settings, status=lambda: said["status"]))
    health = shop.get("/api/health").json()
    assert health["status"] == "indexing" and "3,200 of 12,186" in health["indexing"]
    page = shop.get("/").text
    assert 'id="indexing"' in page and "3,200 of 12,186 products indexed" in page
    said["status"] = None  # done
    assert shop.get("/api/health").json()["indexing"] is None
    assert 'id="indexing"' not in shop.get("/").text


# -- the shopper's journey: refusals as pages, similar items, categories, a shop still indexing ----
def write_catalog(folder: Path, rows: list[tuple]) -> Path:
    """styles.csv and images/<id>.jpg for `rows` of (id, gender, master, sub, article, rgb, shape)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = ["id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName\n"]
    for pid, gender, master, sub, article, rgb, shape in rows:
        lines.append(f"{pid},{gender},{master},{sub},{article},Brown,Summer,2012,Casual,Brand {gender} {article} {pid}\n")
        draw_product(int(pid), rgb, shape).save(folder / "images" / f"{pid}.jpg", quality=90)
    (folder / "styles.csv").write_text("".join(lines), encoding="utf-8")
    return folder


def shop_client(root: Path, embedders, rows: list[tuple], indexed: set[str] | None = None, k: int = 5,
                status=None, with_catalog: bool = False):
    """A shop over a generated catalog, its resnet18 index holding `indexed` (all by default);
    returns (TestClient, the catalog, its searcher, the store's client)."""
    from catalog import Catalog
    from indexing import index_catalog
    from operations import SearchPolicy
    from search import Searcher
    from shop import ShopSettings, build_app
    from vectorstore import StoreSettings, make_client
    catalog = read_catalog(write_catalog(root / "catalog", rows))
    part = Catalog(catalog.folder, [p for p in catalog.products if indexed is None or p.id in indexed])
    store = make_client(StoreSettings(path=root / "db"))
    index_catalog(part, store, [embedders["resnet18"]], batch_size=8, show_progress_bar=False)
    searcher = Searcher(store, embedders={"resnet18": embedders["resnet18"]})
    settings = ShopSettings(policy=SearchPolicy(models=("resnet18",), default_model="resnet18", k=k),
                            images_dir=catalog.images_dir, page_size=50)
    app = build_app(searcher, settings, status=status, catalog=catalog if with_catalog else None)
    return TestClient(app), catalog, searcher, store


def test_a_bad_query_value_on_a_page_is_a_readable_page(client):
    for path in ("/?page=abc", "/?page=1.5&gender=Men"):
        response = client.get(path)
        assert response.status_code == 400 and response.headers["content-type"].startswith("text/html")
        assert '<h1>This address cannot be shown</h1>' in response.text
        assert '&#34;page&#34; must be a whole number' in response.text and "Back to the catalog" in response.text
        assert "script-src 'self'" in response.headers["content-security-policy"]
    # a mistyped address: a browser gets a page, a program the JSON it always had
    assert "<h1>Page not found</h1>" in client.get("/no-such-page", headers={"accept": "text/html"}).text
    assert client.get("/no-such-page").json() == {"detail": "Not Found"}
    # the API keeps its JSON refusals, whatever the client accepts
    api = client.get("/api/products", params={"page": "abc"}, headers={"accept": "text/html"})
    assert api.status_code == 422 and api.json()["detail"][0]["loc"] == ["query", "page"]
    assert client.get("/api/no-such", headers={"accept": "text/html"}).json() == {"detail": "Not Found"}


def test_the_product_page_names_models_as_people_do(client, catalog):
    page = client.get(f"/products/{catalog.products[0].id}").text
    choice = page.split('id="similar-model"', 1)[1].split("</select>", 1)[0]
    assert re.findall(r'<option value="([^"]+)"[^>]*>([^<]+)</option>', choice) == [
        ("resnet18", "ResNet-18"), ("resnet50", "ResNet-50")]
    assert 'id="similar-show"' in page  # the choice applies on a button, not on change
    assert "noscript" not in page


# Women's flats, men's casual shoes and unisex ones drawn alike: a model cannot tell them apart.
BROWN = (120, 70, 20)
LOOKALIKES = ([(str(2001 + i), "Women", "Footwear", "Flats", "Flats", BROWN, "ellipse") for i in range(5)] +
              [(str(2011 + i), "Men", "Footwear", "Shoes", "Casual Shoes", BROWN, "ellipse") for i in range(6)] +
              [(str(2021 + i), "Unisex", "Footwear", "Shoes", "Casual Shoes", BROWN, "ellipse") for i in range(2)])


@pytest.fixture(scope="module")
def lookalike_shop(tmp_path_factory, embedders):
    shop, *_ = shop_client(tmp_path_factory.mktemp("lookalikes"), embedders, LOOKALIKES, k=8)
    return shop


def test_similar_items_on_a_product_page_keep_its_gender(lookalike_shop):
    def page_ids(pid: str) -> list[str]:
        return grid_ids(lookalike_shop.get(f"/products/{pid}").text.split('id="similar-grid"', 1)[1])
    gender = {pid: g for pid, g, *_ in LOOKALIKES}
    # Unfiltered, 8 of the 12 others cannot all be women's or unisex (there are 6): men's shoes come in.
    anything = [r["id"] for r in lookalike_shop.get("/api/products/2001/similar").json()["results"]]
    assert len(anything) == 8 and {gender[i] for i in anything} >= {"Men"}
    # The flats' page: every women's and unisex product, and nothing else.
    assert sorted(page_ids("2001")) == ["2002", "2003", "2004", "2005", "2021", "2022"]
    assert page_ids("2001") == [r["id"] for r in lookalike_shop.get(
        "/api/products/2001/similar", params={"same_gender": "true"}).json()["results"]]
    assert {gender[i] for i in page_ids("2011")} <= {"Men", "Unisex"} and len(page_ids("2011")) == 7
    # A unisex product suits anyone: its similar items are of either gender.
    assert {gender[i] for i in page_ids("2021")} >= {"Men", "Women"}
    # An explicit gender on the API wins over same_gender.
    men = lookalike_shop.get("/api/products/2001/similar", params={"same_gender": "true", "gender": "Men"}).json()
    assert {gender[r["id"]] for r in men["results"]} == {"Men"}


# A catalog filed like the real one (subCategory "Dress" holds articleType "Dresses"), with a
# girls' top (the only girls' product, and no unisex ones) and more than the index holds yet.
PARTLY = ([(str(3001 + i), "Women", "Apparel", "Dress", "Dresses", (200, 30, 30), "triangle") for i in range(3)] +
          [("3005", "Women", "Apparel", "Topwear", "Dresses", (200, 30, 60), "triangle")] +
          [(str(3011 + i), "Women", "Footwear", "Sandal", "Sandals", (30, 30, 30), "ellipse") for i in range(2)] +
          [(str(3021 + i), "Men", "Apparel", "Topwear", "Shirts", (20, 30, 110), "rectangle") for i in range(3)] +
          [("3031", "Girls", "Apparel", "Topwear", "Tops", (200, 100, 150), "rectangle")])
INDEXED_FIRST = {"3001", "3021", "3022", "3023", "3031"}


def category_options(html: str) -> list[str]:
    select = html.split('id="filter-category"', 1)[1].split("</select>", 1)[0]
    return re.findall(r'<option value="([^"]*)"', select)


def selected_category(html: str) -> str | None:
    select = html.split('id="filter-category"', 1)[1].split("</select>", 1)[0]
    found = re.findall(r'<option value="([^"]*)" selected>', select)
    return found[0] if found else None


def test_one_category_choice_per_meaning(tmp_path, embedders):
    shop, *_ = shop_client(tmp_path, embedders, PARTLY)
    page = shop.get("/").text
    options = category_options(page)
    # Dress/Dresses and Sandal/Sandals are one choice each, shown as the spelling more products carry
    assert "Dresses" in options and "Dress" not in options
    assert len([o for o in options if o in ("Sandal", "Sandals")]) == 1
    assert len(options) == len(set(options))
    dresses = ["3001", "3002", "3003", "3005"]
    for asked in ("Dresses", "Dress", "dress"):  # either spelling filters on both, and selects the one choice
        grid = shop.get("/", params={"category": asked}).text
        assert grid_ids(grid) == dresses, asked
        assert selected_category(grid) == "Dresses"
    assert grid_ids(shop.get("/", params={"category": "Sandals"}).text) == ["3011", "3012"]
    # filters still combine, and the API keeps the catalog's exact values
    assert grid_ids(shop.get("/", params={"category": "Dresses", "gender": "Men"}).text) == []
    assert [p["id"] for p in shop.get("/api/products", params={"category": "Dress"}).json()["products"]] == \
        ["3001", "3002", "3003"]
    # the product's crumbs say Dress once: Catalog › Apparel › Dress
    crumbs = shop.get("/products/3001").text.split('class="crumbs"', 1)[1].split("</p>", 1)[0]
    assert re.findall(r">([^<>]+)</a>", crumbs) == ["Catalog", "Apparel", "Dress"]


def test_a_shop_still_indexing_shows_the_whole_catalog_and_tells_the_truth(tmp_path, embedders):
    from indexing import index_catalog
    from indexing.background import IndexProgress
    # What the background indexer says during its only pass (one model served)
    progress = IndexProgress(total=len(PARTLY), done=len(INDEXED_FIRST), models=("resnet18",), passes_left=0)
    shop, catalog, searcher, store = shop_client(tmp_path, embedders, PARTLY, indexed=INDEXED_FIRST,
                                          status=progress.status, with_catalog=True)
    every = sorted(p.id for p in catalog.products)
    grid = shop.get("/")
    assert grid.status_code == 200 and grid_ids(grid.text) == every and "10 products" in grid.text
    truth = "Indexing: 5 of 10 products so far; searches cover those."
    assert truth in grid.text and "whole catalog" not in grid.text
    assert shop.get("/api/health").json()["indexing"] == truth
    # A product not indexed yet: its page at once, its picture, similar items to come
    page = shop.get("/products/3011")
    assert page.status_code == 200 and 'id="product-name">Brand Women Sandals 3011<' in page.text
    assert 'id="similar-preparing"' in page.text and "Similar items are being prepared" in page.text
    assert 'role="alert"' not in page.text and grid_ids(page.text.split('id="similar-grid"', 1)[1]) == []
    assert shop.get("/images/3011").status_code == 200
    # An indexed product has its similar items from what is indexed; the only girls' product
    # (no unisex ones either) falls back to any gender rather than show nothing.
    girls = grid_ids(shop.get("/products/3031").text.split('id="similar-grid"', 1)[1])
    assert sorted(girls) == ["3001", "3021", "3022", "3023"]
    # Indexing goes on to the end: the grid reads the index, every product has similar items.
    index_catalog(catalog, store, [embedders["resnet18"]], batch_size=8,
                  show_progress_bar=False)
    searcher.forget_connection()
    progress.update(finished=True, done=len(PARTLY))
    grid = shop.get("/")
    assert grid_ids(grid.text) == every and 'id="indexing"' not in grid.text
    assert grid_ids(shop.get("/products/3011").text.split('id="similar-grid"', 1)[1])
