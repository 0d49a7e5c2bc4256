// Live events: listen to the server's event stream and put each new event's card at the top.
(() => {
  "use strict";
  const list = document.getElementById("events");
  const status = document.getElementById("live-status");
  if (!list || !status) return;
  const show = (state, text) => { status.dataset.state = state; status.textContent = text; };

  async function insert(id) {
    if (document.getElementById(`event-${id}`)) return;
    // The page's filter goes along: an event it does not match answers 204 and is not shown.
    const answer = await fetch(`/events/${id}/card${window.location.search}`, { credentials: "same-origin" });
    if (!answer.ok || answer.status === 204) return;
    const holder = document.createElement("div");
    holder.innerHTML = (await answer.text()).trim();
    const card = holder.firstElementChild;
    if (!card) return;
    card.classList.add("arrived");
    document.getElementById("no-events")?.remove();
    list.prepend(card);
  }

  if (list.dataset.live === "no") { show("paused", "older events: new ones appear on the first page"); return; }
  const stream = new EventSource(`/api/v1/events/stream?after=${list.dataset.last}`, { withCredentials: true });
  stream.addEventListener("open", () => show("open", "live: new events appear here"));
  stream.addEventListener("error", () => show("retrying", "connection lost; reconnecting…"));
  stream.addEventListener("event", (message) => {
    const event = JSON.parse(message.data);
    insert(event.id);
  });
})();
