// The wallet's service worker: keeps the app shell for offline starts. Ticket pages and codes
// always come from the network (a cached code would be stale within 15 seconds).
const SHELL = "wallet-shell-v1";
self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(SHELL).then((cache) => cache.addAll(["/static/app.css", "/static/icon.svg"])));
});
self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method === "GET" && url.pathname.startsWith("/static/")) {
    event.respondWith(caches.match(event.request).then((hit) => hit || fetch(event.request)));
  }
});
