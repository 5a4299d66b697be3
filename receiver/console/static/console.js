// A file of its own: the CSP allows no inline script.
"use strict";

// The browser's zone goes to the server in a cookie, which reads the filters' times given
// without a zone in it and labels the charts' hours by it (receiver/console/zones.py).
// A chart drawn in another zone (the first visit, or after travel) is drawn again, once:
// the reload happens only when the cookie now holds the zone the chart lacked.
const ZONE_COOKIE = "console_zone";
const ZONE_NAME = /^[A-Za-z0-9_+\-\/]{1,64}$/;

function storedZone() {
  const found = document.cookie.split("; ").find((pair) => pair.startsWith(ZONE_COOKIE + "="));
  return found === undefined ? null : found.slice(ZONE_COOKIE.length + 1);
}

function reportZone() {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  if (!zone || !ZONE_NAME.test(zone) || storedZone() === zone) {
    return;
  }
  const secure = location.protocol === "https:" ? "; Secure" : "";
  document.cookie = `${ZONE_COOKIE}=${zone}; Path=/console; Max-Age=31536000; SameSite=Strict${secure}`;
  const drawn = document.querySelector("[data-zone]");
  if (drawn !== null && drawn.dataset.zone !== zone && storedZone() === zone) {
    location.reload();
  }
}

// Times arrive in UTC (ISO 8601); each is shown in the browser's zone, the UTC value kept
// on hover (the title the server wrote).
function showLocalTimes() {
  const format = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  for (const element of document.querySelectorAll("time[datetime]")) {
    const moment = new Date(element.getAttribute("datetime"));
    if (!Number.isNaN(moment.getTime())) {
      element.textContent = format.format(moment);
    }
  }
}

reportZone();
document.addEventListener("DOMContentLoaded", showLocalTimes);
