"""What the chat's page runs in the browser (PAGE_JS) and how it looks (CSS); Python sets the
one number the script needs (the upload limit) with `page_js`."""
from __future__ import annotations

# Clicks on a product inside a chat gallery: Gradio gives a gallery rendered in a chat message
# no events of its own, so this listener passes the clicked image's file name to a hidden
# textbox and presses a hidden button; Python maps the name back to the product shown.
# Clicks on the crop photo go the same way: Image.select reports wrong pixel coordinates when
# the photo is scaled to fit its box, so the page measures the click itself.
PAGE_JS = """
() => {
  if (window.__vsaBridge) return;
  window.__vsaBridge = true;
  const MAX_UPLOAD_BYTES = __MAX_UPLOAD_BYTES__;
  document.addEventListener("click", (event) => {
    const thumb = event.target.closest("#chat button.thumbnail-item, #chat .thumbnail-item");
    if (!thumb) return;
    const img = thumb.querySelector("img");
    if (!img) return;
    event.preventDefault();
    event.stopPropagation();
    const box = document.querySelector("#pick textarea, #pick input");
    const button = document.querySelector("#pick-btn");
    if (!box || !button) return;
    const src = decodeURIComponent(img.getAttribute("src") || "");
    box.value = src.split("/").pop() + "|" + Date.now();
    box.dispatchEvent(new Event("input", { bubbles: true }));
    setTimeout(() => button.click(), 50);
  }, true);
  // Each result card gets "View product" (a real link: the shop's page, or the configured
  // product URL template) beside "More like this". The links come from the hidden #links box
  // ({picture file name: URL}), written by Python with every reply.
  const fileOf = (img) => decodeURIComponent(img.getAttribute("src") || "").split("/").pop();
  const safeUrl = (url) => {
    try { const u = new URL(url, window.location.href); return ["http:", "https:"].includes(u.protocol) ? u.href : null; }
    catch (e) { return null; }
  };
  const set = (el, key, value) => { if (el[key] !== value) el[key] = value; };
  const attr = (el, key, value) => { if (el.getAttribute(key) !== value) el.setAttribute(key, value); };
  const decorate = () => {
    let links = {};
    try { links = JSON.parse((document.querySelector("#links textarea, #links input") || {}).value || "{}"); }
    catch (e) { links = {}; }
    const box = document.querySelector("#message textarea");
    if (box && !box.getAttribute("aria-label")) box.setAttribute("aria-label", "Message: drop or paste a photo, add words");
    const note = document.querySelector("#crop-note");
    if (note && note.getAttribute("aria-live") !== "polite") note.setAttribute("aria-live", "polite");
    // Gradio labels each message's <div> with its raw Markdown ("**5 Women\\'s…"), an
    // aria-label a div may not carry: the message's own text is what a screen reader should read.
    for (const message of document.querySelectorAll('#chat [data-testid="bot"][aria-label], #chat [data-testid="user"][aria-label]'))
      message.removeAttribute("aria-label");
    // The pictures' own buttons have no name.
    for (const button of document.querySelectorAll("#chat .image-container > button:not([aria-label])"))
      button.setAttribute("aria-label", "Your photo");
    for (const button of document.querySelectorAll("#crop-image .image-container > button:not([aria-label])"))
      button.setAttribute("aria-label", "The photo to crop: arrow keys move the marker, Enter sets a corner");
    for (const item of document.querySelectorAll("#chat .gallery-item")) {
      const thumb = item.querySelector(".thumbnail-item");
      const img = thumb && thumb.querySelector("img");
      if (!img) continue;
      const label = thumb.querySelector(".caption-label");
      const lines = ((label && label.textContent) || img.getAttribute("alt") || "").split("\\n");
      // Screen readers hear the product, not "Thumbnail 1 of 5".
      attr(thumb, "aria-label", `${lines[0]}, ${lines[lines.length - 1]}: show more like this`);
      attr(img, "alt", lines[0]);
      let bar = item.querySelector(".vsa-actions");
      if (!bar) {
        bar = document.createElement("div");
        bar.className = "vsa-actions";
        const view = document.createElement("a");
        view.className = "vsa-view";
        const more = document.createElement("button");
        more.type = "button";
        more.className = "vsa-more";
        more.textContent = "More like this";
        bar.append(view, more);
        item.append(bar);
      }
      const view = bar.querySelector(".vsa-view");
      // No URL for this picture: no product link (an empty URL resolved to this very page).
      const raw = links.urls && links.urls[fileOf(img)];
      const link = raw ? safeUrl(raw) : null;
      const text = link ? "View product" : "View picture";
      // Written only when different: each write is a DOM change the observer would see again.
      set(view, "textContent", text);
      set(view, "href", link || img.src);
      set(view, "target", link ? (links.target || "_blank") : "_blank");
      set(view, "rel", "noopener");
      attr(view, "aria-label", `${text}: ${lines[0]}`);
      attr(bar.querySelector(".vsa-more"), "aria-label", `More like ${lines[0]}`);
    }
  };
  // A new reply is shown from its first line: the chat scrolls (and, on a phone, the page) to
  // its headline, so the best results are in view, not the last ones; the crop panel's search
  // brings the shopper back up to them. Focus that fell to the page while the box was disabled
  // goes to the reply, two Tabs from its first "View product".
  const replies = () => [...document.querySelectorAll('#chat [data-testid="bot"]')]
    .filter((part) => !part.querySelector(".grid-container"));
  let shownReplies = -1;
  const revealNewest = () => {
    const all = replies();
    if (all.length < shownReplies) shownReplies = all.length;  // a new chat
    const newest = all[all.length - 1];
    if (!newest || all.length === shownReplies || !newest.innerText.trim()) return;  // none new, or not drawn yet
    shownReplies = all.length;
    requestAnimationFrame(() => {
      // The chat's own scroll area first; the page only when the reply is out of the window
      // (a phone, where the chat is one column among the others), so nothing else moves.
      let area = newest.parentElement;
      while (area && area !== document.body && !(area.scrollHeight > area.clientHeight + 1 &&
             ["auto", "scroll"].includes(getComputedStyle(area).overflowY))) area = area.parentElement;
      if (area && area !== document.body)
        area.scrollTop += newest.getBoundingClientRect().top - area.getBoundingClientRect().top;
      const top = newest.getBoundingClientRect().top;
      if (top < 0 || top > window.innerHeight - 120) window.scrollBy(0, top - 8);
      if (!document.activeElement || document.activeElement === document.body) {
        newest.setAttribute("tabindex", "-1");
        newest.focus({ preventScroll: true });
      }
    });
  };
  // Again a moment later: the #links box may be updated just after the chat it belongs to.
  let later = null;
  new MutationObserver(() => {
    decorate(); revealNewest(); clearTimeout(later); later = setTimeout(decorate, 400);
  }).observe(document.body, { childList: true, subtree: true });
  decorate();
  document.addEventListener("click", (event) => {
    const more = event.target.closest("#chat .vsa-more");
    if (!more) return;
    const img = more.closest(".gallery-item").querySelector(".thumbnail-item img");
    const box = document.querySelector("#pick textarea, #pick input");
    const button = document.querySelector("#pick-btn");
    if (!img || !box || !button) return;
    event.preventDefault();
    event.stopPropagation();
    box.value = fileOf(img) + "|" + Date.now();
    box.dispatchEvent(new Event("input", { bubbles: true }));
    setTimeout(() => button.click(), 50);
  }, true);
  // A file over the chat's limit is answered at once, before any upload: Gradio's own check
  // (set higher, for absurd files) would only show a bare toast in its own units. Registered
  // before the drop below, so an oversized drop on the chat area stops here too.
  const refuse = (files) => {
    const big = [...(files || [])].find((file) => file.size > MAX_UPLOAD_BYTES);
    const box = document.querySelector("#oversize textarea, #oversize input");
    const button = document.querySelector("#oversize-btn");
    if (!big || !box || !button) return false;
    box.value = JSON.stringify({ name: big.name, size: big.size, at: Date.now() });
    box.dispatchEvent(new Event("input", { bubbles: true }));
    setTimeout(() => button.click(), 50);
    return true;
  };
  document.addEventListener("change", (event) => {
    const input = event.target;
    if (!input.matches || !input.matches('#message input[type="file"]') || !refuse(input.files)) return;
    event.stopImmediatePropagation();
    input.value = "";
  }, true);
  for (const type of ["drop", "paste"]) {
    document.addEventListener(type, (event) => {
      if (!event.target.closest || !event.target.closest("#message, #chat")) return;
      const files = type === "drop" ? event.dataTransfer && event.dataTransfer.files
                                    : event.clipboardData && event.clipboardData.files;
      if (!refuse(files)) return;
      event.preventDefault();
      event.stopImmediatePropagation();
    }, true);
  }
  // A photo dropped anywhere on the chat goes to the message box, as if dropped there.
  document.addEventListener("dragover", (event) => {
    if (event.target.closest && event.target.closest("#chat")) event.preventDefault();
  }, true);
  document.addEventListener("drop", (event) => {
    if (!event.target.closest || !event.target.closest("#chat")) return;
    const files = event.dataTransfer && event.dataTransfer.files;
    const input = document.querySelector('#message input[data-testid="file-upload"]');
    if (!files || !files.length || !input) return;
    event.preventDefault();
    event.stopPropagation();
    const moved = new DataTransfer();
    moved.items.add(files[0]);
    input.files = moved.files;
    input.dispatchEvent(new Event("change", { bubbles: true }));
  }, true);
  // The message box takes the focus on a wide screen only: on a phone, focusing it scrolled
  // the page away from the top (and opened the keyboard over it).
  if (window.matchMedia("(min-width: 700px)").matches) {
    const box = document.querySelector("#message textarea");
    if (box) box.focus({ preventScroll: true });
  }
  window.scrollTo(0, 0);
  // Crop from the keyboard: with the photo focused, the arrow keys move a marker (Shift: in
  // small steps) and Enter or Space sets a corner there, as a click would.
  const cursor = { x: 0.5, y: 0.5 };
  const sendCorner = (fx, fy) => {
    const box = document.querySelector("#crop-pick textarea, #crop-pick input");
    const button = document.querySelector("#crop-pick-btn");
    if (!box || !button) return;
    box.value = fx.toFixed(4) + "," + fy.toFixed(4) + "|" + Date.now();
    box.dispatchEvent(new Event("input", { bubbles: true }));
    setTimeout(() => button.click(), 50);
  };
  const drawCursor = (img) => {
    let mark = document.getElementById("vsa-crop-cursor");
    if (!mark) {
      mark = document.createElement("div");
      mark.id = "vsa-crop-cursor";
      mark.setAttribute("aria-hidden", "true");
      document.body.append(mark);
    }
    const r = img.getBoundingClientRect();
    const scale = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight);
    const w = img.naturalWidth * scale, h = img.naturalHeight * scale;
    mark.style.left = (window.scrollX + r.left + (r.width - w) / 2 + cursor.x * w - 9) + "px";
    mark.style.top = (window.scrollY + r.top + (r.height - h) / 2 + cursor.y * h - 9) + "px";
    mark.hidden = false;
  };
  document.addEventListener("keydown", (event) => {
    if (!event.target.closest || !event.target.closest("#crop-image")) return;
    const img = document.querySelector("#crop-image img");
    if (!img) return;
    const step = event.shiftKey ? 0.01 : 0.05;
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (moves[event.key]) {
      // Keys pressed while the outlined photo reloads (after a corner) still move the marker:
      // only drawing it waits for the picture.
      cursor.x = Math.min(1, Math.max(0, cursor.x + moves[event.key][0]));
      cursor.y = Math.min(1, Math.max(0, cursor.y + moves[event.key][1]));
      if (img.naturalWidth) drawCursor(img);
    } else if (event.key === "Enter" || event.key === " ") {
      sendCorner(cursor.x, cursor.y);
    } else {
      return;
    }
    event.preventDefault();
    event.stopPropagation();
  }, true);
  document.addEventListener("focusout", (event) => {
    const mark = document.getElementById("vsa-crop-cursor");
    if (mark && event.target.closest && event.target.closest("#crop-image")) mark.hidden = true;
  });
  // Crop corners: the click's position on the photo as fractions of its width and height,
  // measured on the drawn image itself (object-fit: contain leaves bands around it).
  document.addEventListener("click", (event) => {
    const img = event.target.closest("#crop-image img");
    if (!img || !img.naturalWidth) return;
    const r = img.getBoundingClientRect();
    const scale = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight);
    const w = img.naturalWidth * scale, h = img.naturalHeight * scale;
    const fx = (event.clientX - r.left - (r.width - w) / 2) / w;
    const fy = (event.clientY - r.top - (r.height - h) / 2) / h;
    if (fx < 0 || fx > 1 || fy < 0 || fy > 1) return;
    event.preventDefault();
    event.stopPropagation();
    sendCorner(fx, fy);
  }, true);
}
"""

CSS = """
/* Galleries grow with their rows (no scroll area inside the chat's own) and take as many
   columns as fit: two on a phone, five or so on a desktop. */
#chat .grid-wrap { max-width: 100% !important; max-height: none !important; height: auto !important;
  overflow: visible !important; }
#chat .grid-container { grid-template-columns: repeat(auto-fill, minmax(min(150px, 100%), 1fr)) !important;
  grid-template-rows: none !important; grid-auto-rows: auto !important; }
#chat .gallery-item { display: flex; flex-direction: column; height: auto !important; }
#chat .bubble.bot-row { max-width: calc(100% - 12px); }
#chat .bot-row:has(.gallery-container) { width: calc(100% - 40px); box-sizing: border-box; }
#chat .bot-row:has(.gallery-container) .flex-wrap, #chat .message.component:has(.gallery-container),
#chat .gallery-container { width: 100%; box-sizing: border-box; }
#chat .thumbnail-item { cursor: pointer; aspect-ratio: auto !important; display: flex; flex-direction: column;
  height: auto !important; }
#chat .thumbnail-lg > img { height: 150px !important; flex: none; }
#chat .caption-label { position: static !important; max-width: 100% !important; border: none !important;
  white-space: pre-line !important; font-size: 14px; line-height: 1.35; display: -webkit-box;
  -webkit-line-clamp: 7; -webkit-box-orient: vertical; overflow: hidden; background: transparent !important;
  color: var(--body-text-color) !important; }
/* The card under the pointer (the one just clicked for "More like this") keeps its contrast:
   Gradio brightens it (filter) and draws captions at half opacity. */
#chat .thumbnail-item:hover { filter: none !important; }
#chat .caption-label { opacity: 1 !important; }
#chat .vsa-actions { display: flex; flex-wrap: wrap; gap: 4px 8px; justify-content: space-between;
  padding: 4px 2px 2px; font-size: 14px; }
#chat .vsa-actions a, #chat .vsa-actions button { color: var(--link-text-color, #1d4ed8); text-decoration: underline;
  background: none; border: 0; padding: 2px 0; cursor: pointer; font: inherit; }
/* Download and Share under the shopper's own photo are not for shoppers. */
#chat .message-buttons, #chat .image-container .icon-button-wrapper { display: none !important; }
#controls { min-width: 240px; }
#vsa-crop-cursor { position: absolute; width: 14px; height: 14px; border: 2px solid #fff; border-radius: 50%;
  background: rgb(255, 90, 0); box-shadow: 0 0 0 2px #000; pointer-events: none; z-index: 50; }
#crop-note { min-height: 3em; }
/* Gradio's light grey for empty boxes and the slider's ends is below WCAG AA contrast. */
#controls input.subdued, #active-filters input.subdued, #k .min_value, #k .max_value { color: #4b5563 !important; }
#active-filters { flex-grow: 1; }
/* The items found in a photo: small whole pictures with their names, one row. */
#items .grid-wrap { height: auto !important; max-height: none !important; overflow: visible !important; }
#items .grid-container { grid-template-columns: repeat(auto-fill, 112px) !important;
  grid-template-rows: none !important; grid-auto-rows: auto !important; }
#items .thumbnail-item { aspect-ratio: auto !important; height: auto !important; display: flex;
  flex-direction: column; }
#items .thumbnail-item > img { height: 96px !important; object-fit: contain !important; flex: none; }
#items .caption-label { position: static !important; max-width: 100% !important; background: transparent !important;
  color: var(--body-text-color) !important; border: none !important; font-size: 13px; white-space: normal; }
@media (max-width: 640px) {
  #chat { height: min(620px, 58vh) !important; }
  #chat .grid-container { grid-template-columns: repeat(2, minmax(0, 1fr)) !important; }
  #chat .thumbnail-lg > img { height: 120px !important; }
}
"""


def page_js(max_upload_bytes: int) -> str:
    return PAGE_JS.replace("__MAX_UPLOAD_BYTES__", str(int(max_upload_bytes)))
