"""The shop in headless Chromium, served by a real uvicorn on a loopback port: browse, filter,
page, open a product and its similar items, then use the assistant panel (the mounted Gradio
app) with a photo. A product named like markup must show as text, and no dialog may fire."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from test_api import HOSTILE, HOSTILE_ID, make_hostile_shop

from tests.conftest import axe_serious, draw_product, running_shop

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]
SLOW = 120_000  # ms: Gradio's first load on two shared cores

@pytest.fixture(scope="module")
def shop(tmp_path_factory, embedders):
    """The whole shop process (shop pages, API, the assistant mounted) on a free port."""
    from functools import partial

    from assistant.mount import mount_assistant
    from assistant.settings import AssistantSettings
    from operations import SearchPolicy
    from shop import ShopSettings, build_app
    images, searcher = make_hostile_shop(tmp_path_factory.mktemp("shop"), embedders)
    chat = AssistantSettings(policy=SearchPolicy(models=("resnet18",), default_model="resnet18", k=5),
                             allowed_paths=(images,))
    settings = ShopSettings(policy=chat.policy, page_size=4, images_dir=images)
    app = build_app(searcher, settings, mount_chat=partial(mount_assistant, searcher=searcher, settings=chat))
    with running_shop(app, wait_s=60) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 950})
    page = context.new_page()
    page.dialogs = []
    page.errors = []
    # A dialog would mean catalog text ran as script (alert(1)); record and dismiss it.
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    yield page
    context.close()


def shown_ids(page, scope: str = "#product-grid") -> list[str]:
    return page.locator(f"{scope} .card").evaluate_all("cards => cards.map(c => c.dataset.productId)")


def api(shop: str, path: str, **params) -> dict:
    import httpx
    return httpx.get(f"{shop}{path}", params=params, timeout=30).json()


def test_browse_filter_open_product_and_ask_the_assistant(shop, page, tmp_path):
    page.goto(shop + "/")
    first_page = shown_ids(page)
    assert first_page == [p["id"] for p in api(shop, "/api/products", per_page=4)["products"]]

    # Paging
    page.locator(".pager a.next").click()
    page.wait_for_url("**page=2**")
    assert shown_ids(page) == [p["id"] for p in api(shop, "/api/products", per_page=4, page=2)["products"]]

    # Filters apply on "Apply", and combine
    page.select_option("#filter-gender", "Women")
    page.click("#filters-apply")
    page.wait_for_url("**gender=Women**")
    page.select_option("#filter-category", "Tops")
    page.click("#filters-apply")
    page.wait_for_url("**category=Tops**")
    query = parse_qs(urlparse(page.url).query)
    assert query["gender"] == ["Women"] and query["category"] == ["Tops"]
    expected = api(shop, "/api/products", gender="Women", category="Tops", per_page=4)["products"]
    assert shown_ids(page) == [p["id"] for p in expected]
    assert HOSTILE_ID in shown_ids(page)

    # The hostile name is text: shown verbatim, no element made from it
    card = page.locator(f'#product-grid .card[data-product-id="{HOSTILE_ID}"]')
    assert card.locator(".name").text_content().strip() == HOSTILE
    assert page.locator('img[src="x"]').count() == 0

    # Product page with its similar items
    card.click()
    page.wait_for_url(f"**/products/{HOSTILE_ID}")
    assert page.locator("#product-name").text_content().strip() == HOSTILE
    similar = api(shop, f"/api/products/{HOSTILE_ID}/similar", same_gender="true")["results"]
    page.locator("#similar-grid .card").first.wait_for()
    assert shown_ids(page, "#similar-grid") == [r["id"] for r in similar]
    assert len(similar) == 5 and HOSTILE_ID not in shown_ids(page, "#similar-grid")
    # Every similar item's picture actually loaded
    assert page.locator("#similar-grid img").evaluate_all("imgs => imgs.every(i => i.complete && i.naturalWidth > 0)")

    # A similar item leads to its own page
    other = shown_ids(page, "#similar-grid")[0]
    page.locator(f'#similar-grid .card[data-product-id="{other}"]').click()
    page.wait_for_url(f"**/products/{other}")
    assert page.locator("#product").get_attribute("data-product-id") == other
    assert len(shown_ids(page, "#similar-grid")) == 5 and other not in shown_ids(page, "#similar-grid")

    # The assistant panel: closed at first, loads the chat when opened
    panel = page.locator("#assistant-panel")
    assert panel.is_hidden()
    page.click("#assistant-toggle")
    assert panel.is_visible()
    frame = page.frame_locator("#assistant-frame")
    photo = tmp_path / "red top.png"
    draw_product(4242, (200, 30, 30), "rectangle", size=(90, 120)).save(photo)
    frame.locator('#message input[data-testid="file-upload"]').set_input_files(str(photo), timeout=SLOW)
    frame.locator("#message textarea").fill("women's tops")
    frame.locator("#message textarea").press("Enter")
    thumbs = frame.locator("#chat .thumbnail-item")
    thumbs.first.wait_for(timeout=SLOW)
    women_tops = [p["id"] for p in api(shop, "/api/products", gender="Women", category="Tops", per_page=50)["products"]]
    assert thumbs.count() == min(5, len(women_tops))
    captions = frame.locator("#chat .thumbnail-item").all_text_contents()
    names = {p["name"] for p in api(shop, "/api/products", gender="Women", category="Tops", per_page=50)["products"]}
    # Each caption names a women's top from this catalog; the hostile one among them is text.
    assert all(any(name in caption for name in names) for caption in captions), captions
    assert any(HOSTILE in caption for caption in captions), captions
    assert frame.locator('img[src="x"]').count() == 0
    page.screenshot(path=str(tmp_path / "shop.png"))

    page.click("#assistant-close")
    assert panel.is_hidden()
    assert page.dialogs == []
    assert page.errors == []


def test_unknown_filter_value_is_explained(shop, page):
    response = page.goto(shop + "/?gender=Wmen")
    assert response.status == 400
    assert "Women" in page.locator("#filter-error").text_content()


def test_web_component_snippet_runs_the_assistant(shop, page):
    # The embedding page uses exactly the snippet shown to shops: gradio.js served locally.
    page.goto(shop + "/embed")
    snippet = page.locator("#embed-snippet").text_content()
    assert f'{shop}/assistant/gradio.js' in snippet
    page.locator("gradio-app #chat").wait_for(timeout=SLOW)
    page.locator('gradio-app #message input[data-testid="file-upload"]').wait_for(state="attached", timeout=SLOW)
    assert page.dialogs == []


def test_gradio_client_reaches_the_mounted_assistant(shop, tmp_path):
    # The snippet of docs/embedding.md: the assistant's own API, through its mount point.
    from gradio_client import Client, handle_file
    photo = tmp_path / "shoe.jpg"
    draw_product(77, (120, 70, 20), "ellipse").save(photo)
    client = Client(f"{shop}/assistant/", verbose=False)
    answer = client.predict(handle_file(str(photo)), "resnet18", 3, "Men", "", api_name="/recommend")
    assert answer["model"] == "resnet18"
    assert len(answer["results"]) == 3
    assert all(r["gender"] == "Men" for r in answer["results"])
    refused = client.predict(handle_file(str(photo)), "resnet50", 3, "", "", api_name="/recommend")
    assert "results" not in refused and "ResNet-50" in refused["error"]


def test_docs_render_offline(shop, page):
    # Every request off this server fails, as on a machine without internet.
    local = shop.rstrip("/")
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(local) else route.abort())
    page.goto(shop + "/docs")
    page.locator(".swagger-ui .info .title").wait_for(timeout=SLOW)
    assert "visual shopping assistant API" in page.locator(".swagger-ui .info .title").inner_text()
    assert page.locator(".swagger-ui .opblock-summary-path", has_text="/api/recommend").count() >= 1


def test_a_result_in_the_assistant_opens_its_product_page(shop, page, tmp_path):
    page.goto(shop + "/")
    page.click("#assistant-toggle")
    frame = page.frame_locator("#assistant-frame")
    photo = tmp_path / "shoe.png"
    draw_product(99, (120, 70, 20), "ellipse", size=(90, 120)).save(photo)
    frame.locator('#message input[data-testid="file-upload"]').set_input_files(str(photo), timeout=SLOW)
    frame.locator("#message img").wait_for(timeout=SLOW)
    frame.locator("#message textarea").press("Enter")
    view = frame.locator('#chat .vsa-view[href*="/products/"]').first
    view.wait_for(timeout=SLOW)
    href = view.get_attribute("href")
    assert view.inner_text() == "View product" and view.get_attribute("target") == "_top"
    shown = frame.locator("#chat .grid-container").last.locator(".caption-label").all_inner_texts()
    view.click()
    page.wait_for_url(href)
    assert page.locator("#product").get_attribute("data-product-id") == urlparse(href).path.rsplit("/", 1)[1]
    assert page.errors == []
    # Back in the shop, the panel shows the same conversation: result #2 is still a tap away
    page.go_back()
    page.wait_for_selector("#assistant-toggle")
    if not page.locator("#assistant-frame").is_visible():
        page.click("#assistant-toggle")
    back = page.frame_locator("#assistant-frame")
    back.locator("#chat .grid-container .caption-label").first.wait_for(timeout=SLOW)
    assert back.locator("#chat .grid-container").last.locator(".caption-label").all_inner_texts() == shown


def test_phone_layout_and_accessibility_of_the_shop(shop, browser):
    # bypass_csp: the shop allows no inline script, and axe is injected as one (the test only)
    context = browser.new_context(viewport={"width": 390, "height": 844}, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(SLOW)
    try:
        page.goto(shop + "/")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert axe_serious(page) == []
        page.locator("#product-grid .card").first.click()
        page.locator("#similar-grid .card").first.wait_for()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert axe_serious(page) == []
        # "Find by photo" on a phone: the assistant opens at its top, the message box in view
        page.click("#assistant-toggle")
        page.frame_locator("#assistant-frame").locator("#message textarea").wait_for()
        frame = next(f for f in page.frames if "/assistant" in f.url)
        frame.wait_for_function("window.__vsaBridge === true")
        assert frame.evaluate("window.scrollY") == 0
        assert frame.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert axe_serious(frame) == []
        page.screenshot(path="/tmp/vsa-shop-phone.png")
    finally:
        context.close()


# -- the shopper's journey ---------------------------------------------------------------------------
# Every way a page could send a form or go elsewhere, recorded: a wrapped submit()/requestSubmit(),
# a submit event, a navigation (the Navigation API sees each one as it starts).
RECORD_LEAVING = """() => {
  window.__leaving = [];
  const record = (how) => window.__leaving.push(how);
  for (const name of ["submit", "requestSubmit"]) {
    const original = HTMLFormElement.prototype[name];
    HTMLFormElement.prototype[name] = function (...args) { record(name); return original.apply(this, args); };
  }
  document.addEventListener("submit", () => record("submit event"), true);
  navigation.addEventListener("navigate", (e) => record("navigate " + e.destination.url));
}"""


def test_filters_wait_for_apply(shop, page, browser):
    page.goto(shop + "/")
    page.evaluate(RECORD_LEAVING)
    # The keyboard moves through each list: the value changes, the page stays (WCAG 3.2.2)
    for select in ("#filter-gender", "#filter-category"):
        page.focus(select)
        page.keyboard.press("ArrowDown")
        page.wait_for_function(f"document.querySelector('{select}').selectedIndex === 1")
    assert page.evaluate("window.__leaving") == []
    assert urlparse(page.url).query == ""
    gender, category = page.input_value("#filter-gender"), page.input_value("#filter-category")
    page.click("#filters-apply")
    page.wait_for_url("**category=**")
    assert parse_qs(urlparse(page.url).query) == {"gender": [gender], "category": [category]}
    assert page.locator("#filter-gender").input_value() == gender

    # Without script the same form works: a plain GET
    context = browser.new_context(java_script_enabled=False)
    try:
        plain = context.new_page()
        plain.goto(shop + "/")
        plain.select_option("#filter-gender", "Women")
        plain.click("#filters-apply")
        plain.wait_for_url("**gender=Women**")
        expected = api(shop, "/api/products", gender="Women", per_page=4)["products"]
        assert shown_ids(plain) == [p["id"] for p in expected]
    finally:
        context.close()


def test_a_bad_address_shows_a_page_not_json(shop, page):
    response = page.goto(shop + "/?page=abc")
    assert response.status == 400 and response.headers["content-type"].startswith("text/html")
    assert page.locator("h1").inner_text() == "This address cannot be shown"
    assert '"page" must be a whole number' in page.locator(".message").inner_text()
    assert page.locator("pre").count() == 0  # Chromium shows a JSON answer in a <pre>
    page.get_by_role("link", name="Back to the catalog").click()
    page.locator("#product-grid .card").first.wait_for()


def test_a_phone_shows_products_two_by_two(shop, browser):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                                  device_scale_factor=2)
    page = context.new_page()
    try:
        page.goto(shop + "/")
        page.locator("#product-grid .card").nth(3).wait_for()
        boxes = page.locator("#product-grid .card").evaluate_all("""cards => cards.map(c => {
            const r = c.getBoundingClientRect();
            return {left: r.left, top: r.top, right: r.right, bottom: r.bottom}; })""")
        width, height = page.evaluate("[window.innerWidth, window.innerHeight]")
        whole = [b for b in boxes if b["top"] >= 0 and b["left"] >= 0 and b["bottom"] <= height and b["right"] <= width]
        assert len(whole) >= 4, boxes
        assert len({round(b["left"]) for b in boxes}) >= 2  # columns side by side
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        # captions stay readable: real text sizes, two lines of name shown, nothing squeezed to nothing
        captions = page.locator("#product-grid .card").evaluate_all("""cards => cards.map(c => {
            const size = (el) => parseFloat(getComputedStyle(el).fontSize);
            const name = c.querySelector('.name'), meta = c.querySelector('.meta');
            return {name: size(name), meta: size(meta), nameHeight: name.getBoundingClientRect().height,
                    nameWidth: name.getBoundingClientRect().width}; })""")
        for caption in captions:
            assert caption["name"] >= 14 and caption["meta"] >= 12, caption
            assert caption["nameHeight"] >= caption["name"] and caption["nameWidth"] >= 120, caption
    finally:
        context.close()


def test_every_card_state_reads_well(shop, browser, tmp_path):
    # bypass_csp: axe is injected as an inline script (the test only)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(SLOW)
    try:
        page.goto(shop + "/")
        cards = page.locator("#product-grid .card")
        cards.first.hover()
        assert axe_serious(page) == []
        page.mouse.down()  # pressed (:active); released elsewhere, so nothing is clicked
        assert axe_serious(page) == []
        page.mouse.move(1, 1)
        page.mouse.up()
        cards.nth(1).focus()
        assert axe_serious(page) == []
        cards.first.click()
        page.locator("#similar-grid .card").first.wait_for()
        page.locator("#similar-grid .card").first.hover()
        assert axe_serious(page) == []
        # "More like this" in the assistant panel: the card clicked keeps readable text
        page.click("#assistant-toggle")
        frame = page.frame_locator("#assistant-frame")
        photo = tmp_path / "shoe.png"
        draw_product(99, (120, 70, 20), "ellipse", size=(90, 120)).save(photo)
        frame.locator('#message input[data-testid="file-upload"]').set_input_files(str(photo))
        frame.locator("#message img").wait_for()
        frame.locator("#message textarea").press("Enter")
        galleries = frame.locator("#chat .grid-container")
        galleries.first.locator(".vsa-more").first.wait_for()
        shown = galleries.count()
        galleries.last.locator(".vsa-more").first.click()  # the pointer stays on the card clicked
        galleries.nth(shown).locator(".thumbnail-item").first.wait_for()
        assistant = next(f for f in page.frames if "/assistant" in f.url)
        assert axe_serious(assistant) == []
        assert axe_serious(page) == []
    finally:
        context.close()


def test_the_assistant_panel_takes_focus_and_gives_it_back(shop, page):
    page.goto(shop + "/")
    toggle, panel = page.locator("#assistant-toggle"), page.locator("#assistant-panel")
    focused = "id => document.activeElement && document.activeElement.id === id"
    # by keyboard: Enter opens and focus moves into the panel; Escape closes and focus returns
    toggle.focus()
    page.keyboard.press("Enter")
    page.wait_for_function(focused, arg="assistant-close")
    assert panel.is_visible() and toggle.get_attribute("aria-expanded") == "true"
    page.keyboard.press("Escape")
    page.wait_for_function(focused, arg="assistant-toggle")
    assert panel.is_hidden() and toggle.get_attribute("aria-expanded") == "false"
    # by pointer: the close button gives focus back to the opener as well
    toggle.click()
    page.wait_for_function(focused, arg="assistant-close")
    page.click("#assistant-close")
    page.wait_for_function(focused, arg="assistant-toggle")
    assert panel.is_hidden()
    # Escape from inside the assistant (its own frame) closes the panel too
    toggle.click()
    message = page.frame_locator("#assistant-frame").locator("#message textarea")
    message.wait_for(timeout=SLOW)
    next(f for f in page.frames if "/assistant" in f.url).wait_for_load_state("load")
    message.click()
    message.press("Escape")
    page.wait_for_function(focused, arg="assistant-toggle")
    assert panel.is_hidden()
    assert page.errors == []


def test_the_first_tab_stops_of_the_shop_are_all_controls(shop, page):
    page.goto(shop + "/")
    page.wait_for_selector("#product-grid")
    stops = []
    for _ in range(15):
        page.keyboard.press("Tab")
        stops.append(page.evaluate("document.activeElement === document.body ? 'BODY' : document.activeElement.tagName"))
    assert "BODY" not in stops, stops
