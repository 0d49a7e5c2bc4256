// Search by photo: let a photo be dropped on the file field's area.
(() => {
  "use strict";
  const zone = document.getElementById("drop");
  const input = zone?.querySelector("input[type=file]");
  if (!zone || !input) return;
  const label = zone.querySelector("span");
  const mark = (on) => zone.classList.toggle("over", on);
  zone.addEventListener("dragover", (e) => { e.preventDefault(); mark(true); });
  zone.addEventListener("dragleave", () => mark(false));
  zone.addEventListener("drop", (e) => {
    e.preventDefault(); mark(false);
    if (e.dataTransfer?.files.length) { input.files = e.dataTransfer.files; input.dispatchEvent(new Event("change")); }
  });
  input.addEventListener("change", () => { if (input.files.length) label.textContent = input.files[0].name; });
})();
