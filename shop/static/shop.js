// Shop page behaviour. Loaded as a file (the shop's Content-Security-Policy allows no
// inline script), and it never writes catalog text as HTML.
// The filters and the model choice are plain GET forms that apply on their button: nothing
// here submits them on change (a keyboard moving through a list must not reload the page).
document.addEventListener("DOMContentLoaded", () => {
  const panel = document.getElementById("assistant-panel");
  const toggle = document.getElementById("assistant-toggle");
  if (!panel || !toggle) return;
  const frame = document.getElementById("assistant-frame");
  const close = document.getElementById("assistant-close");
  const setOpen = (open) => {
    if (open === !panel.hidden) return;
    // The assistant loads on first opening only: pages that never use it stay light.
    if (open && !frame.getAttribute("src")) frame.setAttribute("src", panel.dataset.src);
    panel.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    document.body.classList.toggle("assistant-open", open);
    // Focus follows the panel: into it when it opens, back to its opener when it closes
    // (a keyboard or screen reader user is not left on a hidden control).
    (open ? close : toggle).focus();
  };
  toggle.addEventListener("click", () => setOpen(panel.hidden));
  close.addEventListener("click", () => setOpen(false));
  const onEscape = (e) => { if (e.key === "Escape" && !panel.hidden) setOpen(false); };
  document.addEventListener("keydown", onEscape);
  // Keys pressed inside the assistant stay in its frame (same origin): listen there too, after
  // the assistant's own controls (an open list closes first, and keeps the panel open).
  const inFrame = (e) => {
    if (e.defaultPrevented || (e.target.closest && e.target.closest('[aria-expanded="true"]'))) return;
    onEscape(e);
  };
  frame.addEventListener("load", () => {
    try { frame.contentWindow.document.addEventListener("keydown", inFrame); } catch (err) { /* another origin */ }
  });
});
