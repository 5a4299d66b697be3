// Times arrive in UTC (ISO 8601); each is shown in the browser's zone, the UTC value kept
// on hover (the title the server wrote). A file of its own: the CSP allows no inline script.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const format = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  for (const element of document.querySelectorAll("time[datetime]")) {
    const moment = new Date(element.getAttribute("datetime"));
    if (!Number.isNaN(moment.getTime())) {
      element.textContent = format.format(moment);
    }
  }
});
