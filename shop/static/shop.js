// Shop page behaviour. Loaded as a file (the shop's Content-Security-Policy allows no
// inline script), and it never writes catalog text as HTML.
document.addEventListener("DOMContentLoaded", () => {
  // Filters and the model choice apply as soon as they change.
  for (const id of ["filter-gender", "filter-category", "similar-model"]) {
    const select = document.getElementById(id);
    if (select) select.addEventListener("change", () => select.form.submit());
  }

  const panel = document.getElementById("assistant-panel");
  const toggle = document.getElementById("assistant-toggle");
  if (!panel || !toggle) return;
  const frame = document.getElementById("assistant-frame");
  const setOpen = (open) => {
    // The assistant loads on first opening only: pages that never use it stay light.
    if (open && !frame.getAttribute("src")) frame.setAttribute("src", panel.dataset.src);
    panel.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    document.body.classList.toggle("assistant-open", open);
  };
  toggle.addEventListener("click", () => setOpen(panel.hidden));
  document.getElementById("assistant-close").addEventListener("click", () => setOpen(false));
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && !panel.hidden) setOpen(false); });
});
