// Cameras page: every 5 s, each camera's status and still frame are brought up to date in place (no reload),
// so a live view that is playing keeps playing. Without scripts, the page refreshes itself instead.
(() => {
  "use strict";
  const grid = document.querySelector(".cameras");
  if (!grid) return;

  async function refresh() {
    const answer = await fetch(location.pathname + location.search, { credentials: "same-origin" });
    if (!answer.ok) return;
    const fresh = new DOMParser().parseFromString(await answer.text(), "text/html");
    for (const camera of grid.querySelectorAll("article.camera")) {
      const next = fresh.getElementById(camera.id);
      if (!next) continue;
      camera.querySelector("h2")?.replaceWith(next.querySelector("h2"));
      camera.querySelector("dl")?.replaceWith(next.querySelector("dl"));
      if (!camera.classList.contains("watching")) {  // the live view's <img> is never touched
        camera.className = next.className;
        camera.querySelector("a.watch-live")?.replaceWith(next.querySelector("a.watch-live"));
      }
    }
  }

  setInterval(() => { refresh().catch(() => {}); }, 5000);
})();
