// Watchlists: the "add a person" form posts to the chosen watchlist's address.
(() => {
  "use strict";
  const form = document.getElementById("add-member");
  const choice = document.getElementById("watchlist-choice");
  if (!form || !choice) return;
  const aim = () => { form.action = `/watchlists/${encodeURIComponent(choice.value)}/members`; };
  choice.addEventListener("change", aim);
  aim();
})();
