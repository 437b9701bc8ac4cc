// Berth's web UI works without this script; it adds a Copy button beside each pull command,
// and follows a running garbage collection or fsck live, polling its status as JSON instead of
// reloading the page every second (the <noscript> refresh does that without script). No inline
// script exists (the Content-Security-Policy forbids it).
document.addEventListener("DOMContentLoaded", () => {
  for (const field of document.querySelectorAll(".copy input")) {
    if (!navigator.clipboard) return;
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Copy";
    button.setAttribute("aria-label", "Copy: " + field.value);
    button.addEventListener("click", async () => {
      await navigator.clipboard.writeText(field.value);
      button.textContent = "Copied";
    });
    field.after(" ", button);
  }
});

document.addEventListener("DOMContentLoaded", () => {
  const facts = document.querySelector("[data-poll]");
  if (!facts) return;
  const status = facts.querySelector(".job-status");
  const phase = facts.querySelector(".job-phase");
  facts.dataset.live = "on";
  const poll = async () => {
    try {
      const response = await fetch(facts.dataset.poll, { credentials: "same-origin", cache: "no-store" });
      if (response.ok) {
        const run = await response.json();
        status.textContent = run.state;
        phase.textContent = run.phase;
        // Finished: the page itself shows the report.
        if (run.state !== "running") return location.reload();
      }
    } catch (e) {
      // A failed poll is retried; the page still says what it last knew.
    }
    setTimeout(poll, 500);
  };
  setTimeout(poll, 500);
});
