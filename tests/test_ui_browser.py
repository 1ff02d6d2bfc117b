"""The chat assistant in headless Chromium: the real Gradio app over the fixture index."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import KINDS, axe_serious, draw_product, free_port

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
# The shop the cards link to; the browser answers it itself (page.route), nothing is fetched.
PRODUCT_URL = "https://shop.example/p/{id}"
LIMIT = 1_000_000  # bytes: small, so the test can send a photo over it
TIMEOUT = 60_000  # ms; a search embeds with a CPU ResNet-50 on a shared 2-core machine
# What the app says of background indexing (see test_the_page_says_how_far_indexing_is).
INDEXING = {"status": None}

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")


@pytest.fixture(scope="module")
def app_url(searcher):
    from assistant.settings import AssistantSettings
    from assistant.ui import launch
    from operations import SearchPolicy
    policy = SearchPolicy(models=("resnet18", "resnet50"), default_model="resnet50", k=5, max_k=12,
                          max_upload_bytes=LIMIT)
    settings = AssistantSettings(policy=policy, upload_hard_limit_bytes=4 * LIMIT, product_url=PRODUCT_URL)
    port = free_port()
    demo = launch(searcher, settings, host="127.0.0.1", port=port, block=False, quiet=True,
                  status=lambda: INDEXING["status"])
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser, app_url, request):
    size = getattr(request, "param", {"width": 1280, "height": 900})
    context = browser.new_context(viewport=size)
    context.route("https://shop.example/**", lambda route: route.fulfill(
        status=200, content_type="text/html", body="<title>product page</title><h1 id=product>product page</h1>"))
    page = context.new_page()
    page.set_default_timeout(TIMEOUT)
    page.goto(app_url)
    page.wait_for_selector("#message textarea")
    page.wait_for_function("window.__vsaBridge === true")
    yield page
    context.close()


@pytest.fixture(scope="module")
def heel_photo(tmp_path_factory) -> Path:
    gender, master, sub, article, colour, rgb, shape = KINDS[0]
    path = tmp_path_factory.mktemp("browser") / "my-heel.jpg"
    draw_product(424_242, rgb, shape, size=(150, 200)).save(path, quality=88)
    return path


def galleries(page) -> int:
    return page.locator("#chat .grid-container").count()


REPLIES = """() => [...document.querySelectorAll('#chat [data-testid="bot"]')]
    .filter(p => !p.querySelector('.grid-container')).length"""


def bot_rows(page) -> int:
    """Replies so far, counted by their text parts (older galleries may be dropped from the chat)."""
    return page.evaluate(REPLIES)


def send(page, text: str = "", file: Path | None = None) -> None:
    """Type and/or attach, press Enter, wait until the assistant's reply is in the chat."""
    before = bot_rows(page)
    if file is not None:
        page.set_input_files('#message input[data-testid="file-upload"]', str(file))
        page.wait_for_selector("#message img")  # the attachment's preview: the upload is done
    page.click("#message textarea")
    if text:
        page.fill("#message textarea", text)
    page.keyboard.press("Enter")
    wait_reply(page, before)


def wait_reply(page, before: int) -> None:
    page.wait_for_function(f"({REPLIES})() > {before}")
    # The new bubble can be in the chat a moment before its text is rendered into it.
    page.wait_for_function("""() => { const texts = [...document.querySelectorAll('#chat [data-testid="bot"]')]
        .filter(p => !p.querySelector('.grid-container'));
        return texts.length && texts[texts.length - 1].innerText.trim().length > 0; }""")
    page.wait_for_function("!document.querySelector('#message textarea').disabled")


def last_gallery(page) -> list[dict]:
    """Captions and image sources of the newest gallery in the chat, once its images loaded."""
    page.wait_for_function("""() => { const g = [...document.querySelectorAll('#chat .grid-container')].pop();
        return g && [...g.querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 0); }""")
    return page.evaluate("""() => { const g = [...document.querySelectorAll('#chat .grid-container')].pop();
        return [...g.querySelectorAll('.thumbnail-item')].map(t => ({
            caption: t.querySelector('.caption-label').innerText, src: t.querySelector('img').src})); }""")


def dominant_colour(png: bytes) -> str:
    """"blank" for a picture with almost nothing on white, else "dark", "red", "green",
    "blue" or "light" for the median of its non-white pixels."""
    import io

    import numpy as np
    from PIL import Image
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=int).reshape(-1, 3)
    ink = pixels[pixels.min(axis=1) < 200]
    if len(ink) < 0.02 * len(pixels):
        return "blank"
    r, g, b = np.median(ink, axis=0)
    if max(r, g, b) < 90:
        return "dark"
    return {0: "red", 1: "green", 2: "blue"}[int(np.argmax([r, g, b]))] if max(r, g, b) - min(r, g, b) > 60 \
        else "light"


def last_bot_text(page) -> str:
    """The newest reply's text (the message before its gallery, or the last message)."""
    return page.evaluate("""() => { const parts = [...document.querySelectorAll('#chat [data-testid="bot"]')];
        const texts = parts.filter(p => !p.querySelector('.grid-container'));
        return texts.length ? texts[texts.length - 1].innerText : ''; }""")


def test_photo_words_controls_and_more_like_this(page, heel_photo, tmp_path, searcher):
    # 1. a photo alone: 5 products with name, type, gender, colour and similarity
    send(page, file=heel_photo)
    items = last_gallery(page)
    assert len(items) == 5
    names = {m["name"]: m for m in searcher.collection("resnet50", check_weights=False).metadata.frame()
             .reset_index().to_dict("records")}
    for rank, item in enumerate(items, 1):
        name, details, place = item["caption"].split("\n")
        product = names[name]
        assert details == f"{product['articleType']} · {product['gender']} · {product['baseColour']}"
        assert place == ("Best match" if rank == 1 else f"Match #{rank}")  # a rank, never a score
        assert Path(item["src"]).name == Path(product["image"]).name
    assert "like your photo, by ResNet-50" in last_bot_text(page)

    # 2. a filter by words, echoed in the reply and reflected in the colour control
    send(page, "only black ones")
    items = last_gallery(page)
    assert items and all("· Black" in i["caption"] for i in items)
    assert "Filters: Black" in last_bot_text(page)
    assert page.locator("#colour").inner_text().count("Black") >= 1

    # 3. a filter by a control: gender Women (black women's products: the 4 heels)
    before = bot_rows(page)
    page.click("#gender input")
    page.click('[role=option][aria-label="Women"]')
    wait_reply(page, before)
    page.keyboard.press("Escape")
    items = last_gallery(page)
    assert len(items) == 4 and all(i["caption"].split("\n")[1] == "Heels · Women · Black" for i in items)
    assert "Filters: Women · Black" in last_bot_text(page)
    assert "4 Women's Heels like your photo" in last_bot_text(page)

    # 4. click the second product: more like it, by its stored vector, same filters
    clicked = items[1]["caption"].split("\n")[0]
    before, shown = bot_rows(page), galleries(page)
    page.locator("#chat .grid-container").last.locator(".thumbnail-item").nth(1).click()
    wait_reply(page, before)
    from assistant.settings import AssistantSettings
    assert galleries(page) == min(shown + 1, AssistantSettings().galleries_kept)  # the oldest went
    items = last_gallery(page)
    assert clicked not in [i["caption"].split("\n")[0] for i in items]
    assert f"like “{clicked}”" in last_bot_text(page)
    assert f"More like “{clicked}”" in page.locator("#chat .user-row").last.inner_text()

    # What the shopper sees: every picture of the gallery, as rendered, is a black product
    # (the fixture's black heels: a dark shape on white), not a blank or a broken image.
    for picture in page.locator("#chat .grid-container").last.locator(".thumbnail-item img").all():
        assert dominant_colour(picture.screenshot()) == "dark"
    page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)  # kept for a person to look at


def test_result_opens_its_product_page_and_a_new_photo_starts_fresh(page, heel_photo, tmp_path, searcher):
    send(page, "women", file=heel_photo)
    items = last_gallery(page)
    assert "Filters: Women" in last_bot_text(page)
    assert page.locator("#active-filters").inner_text().count("Women") >= 1
    # every card: "View product" (the configured template, id filled in) and "More like this"
    cards = page.locator("#chat .grid-container").last.locator(".gallery-item")
    assert cards.count() == len(items) == 5
    page.wait_for_function("""() => [...document.querySelectorAll('#chat .grid-container')].pop()
        .querySelectorAll('.vsa-view[href^="https://shop.example/p/"]').length === 5""")
    table = searcher.collection("resnet50", check_weights=False).metadata.frame().reset_index()
    by_name = {row["name"]: str(row["id"]) for row in table.to_dict("records")}
    first = cards.first
    name = items[0]["caption"].split("\n")[0]
    assert first.locator(".vsa-view").get_attribute("href") == f"https://shop.example/p/{by_name[name]}"
    assert first.locator(".vsa-more").inner_text() == "More like this"
    with page.context.expect_page() as opened:
        first.locator(".vsa-view").click()
    product = opened.value
    product.wait_for_selector("#product")
    assert product.url == f"https://shop.example/p/{by_name[name]}"
    product.close()
    page.screenshot(path=str(tmp_path / "cards.png"))

    # a new photo: no filter from the last one; they are offered as one tap
    shirt = tmp_path / "shirt.jpg"
    draw_product(31337, KINDS[2][5], KINDS[2][6], size=(150, 200)).save(shirt)
    send(page, file=shirt)
    assert "Filters:" not in last_bot_text(page)
    page.locator("#reapply").wait_for()
    assert "Women" in page.locator("#reapply").inner_text()
    assert page.locator("#active-filters").is_hidden()
    before = bot_rows(page)
    page.click("#reapply")
    wait_reply(page, before)
    assert "Filters: Women" in last_bot_text(page)
    assert all(i["caption"].split("\n")[1].split(" · ")[1] == "Women" for i in last_gallery(page))
    page.locator("#reapply").wait_for(state="hidden")


def test_tabbing_through_the_page_adds_no_reply(page, heel_photo):
    send(page, file=heel_photo)
    last_gallery(page)
    before, users = bot_rows(page), page.locator("#chat .user-row").count()
    page.locator("#k input[type=number]").click()
    for _ in range(40):
        page.keyboard.press("Tab")
    page.locator("h2").first.click()  # and a click elsewhere: the number box loses the focus
    page.wait_for_timeout(3000)  # room for a search that should not come
    assert bot_rows(page) == before and page.locator("#chat .user-row").count() == users
    # while a real change of the number still searches
    page.locator("#k input[type=number]").fill("3")
    page.locator("#k input[type=number]").press("Enter")
    page.locator("h2").first.click()
    wait_reply(page, before)
    assert len(last_gallery(page)) == 3
    page.wait_for_timeout(2000)
    assert bot_rows(page) == before + 1  # one reply, not two


def test_trash_starts_over_and_drops_on_the_chat_area_are_caught(page, heel_photo):
    send(page, "only black ones", file=heel_photo)
    page.locator('#chat button[aria-label="Clear"]').click()
    page.wait_for_function("document.querySelectorAll('#chat [data-testid=\"bot\"]').length === 0")
    page.wait_for_function("document.querySelector('#colour').innerText.indexOf('Black') < 0")
    send(page, "show 3")  # no photo any more: asked for one, and the old messages stay gone
    assert "Send me a photo" in last_bot_text(page) and "Filters" not in last_bot_text(page)
    assert page.locator("#chat .grid-container").count() == 0

    # a photo dropped on the big chat area lands in the message box
    data = list(heel_photo.read_bytes())
    page.evaluate("""(bytes) => { const dt = new DataTransfer();
        dt.items.add(new File([new Uint8Array(bytes)], "dropped.jpg", {type: "image/jpeg"}));
        const target = document.querySelector('#chat');
        for (const type of ["dragenter", "dragover", "drop"])
            target.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true})); }""", data)
    page.wait_for_selector("#message img")
    send(page)
    assert len(last_gallery(page)) == 3


@pytest.mark.parametrize("page", [{"width": 390, "height": 844}], indirect=True)
def test_phone_layout(page, heel_photo, tmp_path):
    assert page.evaluate("window.scrollY") == 0  # opens at the top, not scrolled to the message box
    send(page, "show 10", file=heel_photo)
    items = last_gallery(page)
    assert len(items) == 10
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    layout = page.evaluate("""() => { const g = [...document.querySelectorAll('#chat .grid-container')].pop();
        const cards = [...g.querySelectorAll('.gallery-item')].map(c => c.getBoundingClientRect());
        const wrap = g.closest('.grid-wrap').getBoundingClientRect();
        const caption = getComputedStyle(g.querySelector('.caption-label')).fontSize;
        return {columns: new Set(cards.map(r => Math.round(r.left))).size, bottom: Math.max(...cards.map(r => r.bottom)),
                right: Math.max(...cards.map(r => r.right)), wrapBottom: wrap.bottom, wrapRight: wrap.right,
                width: window.innerWidth, caption: parseFloat(caption),
                scrolls: g.closest('.grid-wrap').scrollHeight > g.closest('.grid-wrap').clientHeight + 1}; }""")
    assert layout["columns"] == 2, layout
    assert layout["right"] <= layout["width"] and layout["bottom"] <= layout["wrapBottom"] + 1, layout  # no cut-off row
    assert not layout["scrolls"] and layout["caption"] >= 13, layout
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    # the best results are in view after the search (not #7-#10), and every card shows its rank
    page.wait_for_function(FIRST_CARD_IN_VIEW)
    clamped = page.evaluate("""() => [...[...document.querySelectorAll('#chat .grid-container')].pop()
        .querySelectorAll('.caption-label')].filter(c => c.scrollHeight > c.clientHeight + 1).length""")
    assert clamped == 0
    # an answer to a control far below the chat (the phone's controls column) is brought into view
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    before = bot_rows(page)
    page.click("#clear-filters")
    wait_reply(page, before)
    page.wait_for_function(FIRST_CARD_IN_VIEW)


# The newest gallery's first card is within the window (and within the chat's own scroll area).
FIRST_CARD_IN_VIEW = """() => { const g = [...document.querySelectorAll('#chat .grid-container')].pop();
    const card = g && g.querySelector('.gallery-item'); if (!card) return false;
    const r = card.getBoundingClientRect(), chat = document.querySelector('#chat').getBoundingClientRect();
    return r.top >= 0 && r.top < window.innerHeight - 40 && r.top >= chat.top - 1 && r.top < chat.bottom - 40; }"""


def test_after_a_reply_the_first_result_is_a_few_tabs_away(page, heel_photo):
    send(page, file=heel_photo)
    last_gallery(page)
    first_view = page.locator("#chat .grid-container").last.locator(".vsa-view").first
    first_view.wait_for()
    page.wait_for_function(FIRST_CARD_IN_VIEW)
    for _ in range(5):
        page.keyboard.press("Tab")
        if page.evaluate("""() => document.activeElement === [...document.querySelectorAll('#chat .grid-container')]
            .pop().querySelector('.vsa-view')"""):
            break
    else:
        raise AssertionError("the first result's link is more than 5 Tabs after the reply")
    with page.context.expect_page() as opened:
        page.keyboard.press("Enter")
    opened.value.wait_for_selector("#product")
    assert opened.value.url.startswith("https://shop.example/p/")


def test_axe_finds_no_serious_problem_in_the_chat(page, heel_photo):
    send(page, file=heel_photo)
    last_gallery(page)
    assert page.locator("#message textarea").get_attribute("aria-label")
    thumb = page.locator("#chat .thumbnail-item").first
    assert "Thumbnail" not in thumb.get_attribute("aria-label") and "show more like this" in thumb.get_attribute("aria-label")
    # nothing for developers or Spaces on the shopper's page: no Share/Download, no "Use via API"
    assert page.locator('#chat button[aria-label="Share"]:visible, #chat [data-testid="download-link"]:visible').count() == 0
    assert page.get_by_text("Use via API").count() == 0
    assert axe_serious(page) == []
    # and after "More like this": the card clicked keeps readable text
    before = bot_rows(page)
    page.locator("#chat .grid-container").last.locator(".vsa-more").first.click()
    wait_reply(page, before)
    last_gallery(page)
    assert axe_serious(page) == []
    before = bot_rows(page)
    page.locator("#chat .grid-container").last.locator(".thumbnail-item").nth(1).click()  # the picture itself
    wait_reply(page, before)
    last_gallery(page)
    assert axe_serious(page) == []


def test_crop_then_search_the_selected_part(page, tmp_path):
    from PIL import Image
    shirt, top = KINDS[2], KINDS[3]
    outfit = Image.new("RGB", (240, 160), "white")
    outfit.paste(draw_product(11, shirt[5], shirt[6], size=(120, 160)), (0, 0))
    outfit.paste(draw_product(12, top[5], top[6], size=(120, 160)), (120, 0))
    path = tmp_path / "outfit.png"
    outfit.save(path)
    send(page, file=path)
    page.wait_for_selector("#crop-image img")

    def click_at(fx: float, fy: float) -> None:
        # the photo is redrawn with the corners after each click: wait for the new one to load
        page.wait_for_function("(() => { const i = document.querySelector('#crop-image img');"
                               " return i && i.complete && i.naturalWidth > 0; })()")
        box = page.evaluate("""() => { const i = document.querySelector('#crop-image img'); const r = i.getBoundingClientRect();
            const s = Math.min(r.width / i.naturalWidth, r.height / i.naturalHeight);
            return {x: r.x + (r.width - i.naturalWidth * s) / 2, y: r.y + (r.height - i.naturalHeight * s) / 2,
                    w: i.naturalWidth * s, h: i.naturalHeight * s}; }""")
        page.mouse.click(box["x"] + fx * box["w"], box["y"] + fy * box["h"])

    click_at(0.5, 0.02)
    page.wait_for_function("document.querySelector('#crop-note').innerText.includes('Now click the opposite corner')")
    click_at(0.98, 0.98)
    page.wait_for_function("document.querySelector('#crop-note').innerText.includes('Selected')")
    assert "48% × 96%" in page.inner_text("#crop-note")
    before = bot_rows(page)
    page.click("#crop-search")
    wait_reply(page, before)
    assert "like your cropped photo" in last_bot_text(page)
    assert len(last_gallery(page)) == 5


def test_failures_and_sessions_are_separate(page, browser, app_url, tmp_path, heel_photo):
    from PIL import Image
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    send(page, file=broken)
    text = last_bot_text(page)
    assert "couldn't use that file" in text and "Traceback" not in text
    # Real photos over the limit: the page answers before uploading them, in the chat, with the
    # chat's limit; Gradio's bare toast (its own limit, its own units) never shows.
    big = tmp_path / "big.png"
    Image.frombytes("RGB", (700, 700), os.urandom(700 * 700 * 3)).save(big)
    huge = tmp_path / "huge.png"
    Image.frombytes("RGB", (1300, 1300), os.urandom(1300 * 1300 * 3)).save(huge)
    assert LIMIT < big.stat().st_size < 4 * LIMIT < huge.stat().st_size
    for photo in (big, huge):
        before = bot_rows(page)
        page.set_input_files('#message input[data-testid="file-upload"]', str(photo))
        wait_reply(page, before)
        text = last_bot_text(page)
        assert f"{photo.name} is {photo.stat().st_size / 1e6:.1f} MB; the limit is 1 MB" in text, text
        assert page.locator("#message img").count() == 0  # nothing attached
    # and a drop of the huge one on the chat area is answered the same way
    before = bot_rows(page)
    page.evaluate("""(size) => { const dt = new DataTransfer();
        dt.items.add(new File([new Uint8Array(size)], "dropped-huge.jpg", {type: "image/jpeg"}));
        document.querySelector('#chat').dispatchEvent(
            new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true})); }""", 5 * LIMIT)
    wait_reply(page, before)
    assert "dropped-huge.jpg is 5.0 MB; the limit is 1 MB" in last_bot_text(page)
    assert page.locator('[data-testid="toast-body"]').count() == 0
    send(page, file=heel_photo)
    assert len(last_gallery(page)) == 5

    # a second shopper: no photo in this session yet, whatever the first one sent
    other = browser.new_context().new_page()
    other.set_default_timeout(TIMEOUT)
    other.goto(app_url)
    other.wait_for_selector("#message textarea")
    send(other, "only black ones")
    assert "for your words" in last_bot_text(other) and "like your photo" not in last_bot_text(other)
    assert "Filters: Black" in last_bot_text(other)
    other.context.close()
    # ...and the first conversation still has its photo
    send(page, "show 3")
    assert len(last_gallery(page)) == 3


def test_recommend_api_from_gradio_client(app_url, heel_photo):
    from gradio_client import Client, handle_file
    client = Client(app_url, verbose=False)
    out = client.predict(handle_file(str(heel_photo)), "resnet18", 3, "women", "footwear", api_name="/recommend")
    out = json.loads(out) if isinstance(out, str) else out
    assert out["model"] == "resnet18" and len(out["results"]) == 3
    assert all(r["gender"] == "Women" and r["masterCategory"] == "Footwear" for r in out["results"])
    assert set(out["results"][0]) >= {"id", "score", "name", "articleType", "baseColour", "image"}
    # the chat's own events are not part of the API
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert list(endpoints) == ["/recommend"]


def test_crop_from_the_keyboard(page, heel_photo):
    send(page, file=heel_photo)
    page.wait_for_selector("#crop-image img")
    photo = page.locator("#crop-image .image-container > button")
    assert "arrow keys" in photo.get_attribute("aria-label")
    photo.focus()
    for key, times in (("ArrowLeft", 8), ("ArrowUp", 8), ("Enter", 1)):  # the marker starts in the middle
        for _ in range(times):
            page.keyboard.press(key)
    page.wait_for_function("document.querySelector('#crop-note').innerText.includes('Now click the opposite corner')")
    page.locator("#crop-image .image-container > button").focus()
    for key, times in (("ArrowRight", 16), ("ArrowDown", 16), ("Enter", 1)):
        for _ in range(times):
            page.keyboard.press(key)
    # the state asserted, waited for: the box's size as the note says it once both corners are in
    page.wait_for_function("document.querySelector('#crop-note').innerText.includes('Selected 80% × 80%')")
    before = bot_rows(page)
    page.locator("#crop-search").focus()
    page.keyboard.press("Enter")
    wait_reply(page, before)
    assert "like your cropped photo" in last_bot_text(page)


def test_controls_keep_the_focus_and_one_gender_replaces_the_other(page, heel_photo):
    send(page, file=heel_photo)
    last_gallery(page)
    before = bot_rows(page)
    page.click("#category input")
    page.keyboard.type("Heels")
    page.keyboard.press("Enter")
    wait_reply(page, before)
    # the box the shopper is using keeps the focus (it went to <body>)
    page.wait_for_function("document.querySelector('#chat .grid-container') !== null")
    assert page.evaluate("!!document.activeElement.closest('#category')")
    page.keyboard.press("Escape")
    for value in ("Women", "Men"):
        before = bot_rows(page)
        page.click("#gender input")
        page.keyboard.type(value)
        page.keyboard.press("Enter")
        wait_reply(page, before)
        page.keyboard.press("Escape")
    # "Men" picked while "Women" was set: men's, not "Women or Men"
    assert "Women or Men" not in last_bot_text(page) and "Filters: Men" in last_bot_text(page)
    assert "Women" not in page.locator("#active-filters").inner_text()


def test_the_x_on_a_filter_chip_removes_that_filter(page, heel_photo):
    from playwright.sync_api import expect
    send(page, "women black", file=heel_photo)
    assert "Filters: Women · Black" in last_bot_text(page)
    chips = page.locator("#active-filters .token")
    expect(chips).to_have_count(2, timeout=TIMEOUT)  # the chips are another component: they may render after the reply
    assert sorted(chips.all_inner_texts()) == ["Black", "Women"]
    before = bot_rows(page)
    chips.filter(has_text="Black").locator(".token-remove").click()
    wait_reply(page, before)
    text = last_bot_text(page)
    assert "Filters: Women" in text and "Black" not in text, text
    expect(page.locator("#active-filters .token")).to_have_count(1, timeout=TIMEOUT)
    assert [t.strip() for t in page.locator("#active-filters .token").all_inner_texts()] == ["Women"]
    assert all(i["caption"].split("\n")[1].split(" · ")[1] == "Women" for i in last_gallery(page))
    page.wait_for_timeout(1500)
    assert bot_rows(page) == before + 1  # one removal, one reply


def test_the_page_says_how_far_indexing_is(browser, app_url):
    INDEXING["status"] = "Indexing the catalog: 3,200 of 12,186 products indexed."
    try:
        page = browser.new_page()
        page.set_default_timeout(TIMEOUT)
        page.goto(app_url)
        page.wait_for_function("(document.querySelector('#index-status') || {}).innerText?.includes('3,200 of 12,186')")
        INDEXING["status"] = "Indexing the catalog: 9,000 of 12,186 products indexed."
        page.wait_for_function("document.querySelector('#index-status').innerText.includes('9,000 of 12,186')")
        INDEXING["status"] = None  # done: the line goes
        page.wait_for_selector("#index-status", state="hidden")
        page.close()
    finally:
        INDEXING["status"] = None


def test_a_reload_shows_the_same_conversation_and_it_goes_on(page, heel_photo):
    send(page, file=heel_photo)
    send(page, "show 3")
    shown, said = last_gallery(page), last_bot_text(page)
    assert len(shown) == 3
    page.reload()
    page.wait_for_selector("#message textarea")
    page.wait_for_function("window.__vsaBridge === true")
    assert [i["caption"] for i in last_gallery(page)] == [i["caption"] for i in shown]
    assert last_bot_text(page) == said
    send(page, "show 4")  # the photo is still the conversation's query, not only on screen
    assert len(last_gallery(page)) == 4 and "like your photo" in last_bot_text(page)
    # "New chat" starts over, and a reload keeps the new, empty one
    page.click("#new-chat")
    page.wait_for_function("document.querySelectorAll('#chat .grid-container').length === 0")
    page.reload()
    page.wait_for_selector("#message textarea")
    page.wait_for_function("window.__vsaBridge === true")
    assert galleries(page) == 0


def test_words_alone_show_products(page):
    send(page, "black heels for women")
    cards = last_gallery(page)
    assert cards and all("Heels" in c["caption"].split("\n")[0] and c["caption"].split("\n")[1].split(" · ")[1] ==
                         "Women" for c in cards)
    assert "the most typical looking first" in last_bot_text(page) and "Filters: Women · Heels · Black" in \
        last_bot_text(page)


@pytest.fixture(scope="module")
def plain_app_url(searcher):
    """The chat alone, with no shop to link to (no product URL)."""
    from assistant.settings import AssistantSettings
    from assistant.ui import launch
    from operations import SearchPolicy
    settings = AssistantSettings(policy=SearchPolicy(models=("resnet50",), default_model="resnet50", k=3))
    port = free_port()
    demo = launch(searcher, settings, host="127.0.0.1", port=port, block=False, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_without_a_shop_view_opens_the_products_picture(browser, plain_app_url, heel_photo):
    import httpx
    page = browser.new_context().new_page()
    page.set_default_timeout(TIMEOUT)
    page.goto(plain_app_url)
    page.wait_for_selector("#message textarea")
    page.wait_for_function("window.__vsaBridge === true")
    send(page, file=heel_photo)
    shown = last_gallery(page)
    view = page.locator("#chat .grid-container").last.locator(".vsa-view").first
    view.wait_for()
    href = view.get_attribute("href")
    assert view.inner_text() == "View picture" and href == shown[0]["src"]
    assert href.rstrip("/") != plain_app_url.rstrip("/")  # not the chat page itself
    picture = httpx.get(href, timeout=30)
    assert picture.status_code == 200 and picture.headers["content-type"].startswith("image/")
    page.context.close()
