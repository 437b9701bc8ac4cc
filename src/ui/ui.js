// Berth's web UI works without this script; it only adds a Copy button beside each pull
// command. No inline script exists (the Content-Security-Policy forbids it).
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
