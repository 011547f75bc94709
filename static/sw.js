/* storypush service worker: shows pushed stories, reports receipts, follows subscription rotation.
 *
 * API base: `self.STORYPUSH_API` (set before importScripts() in a site's own worker), else the
 * `?api=` parameter of this script's URL (prompt.js registers "/sw.js?api=<base>"), else this
 * worker's own origin. */
"use strict";

const API = (self.STORYPUSH_API || new URL(self.location.href).searchParams.get("api") || self.location.origin)
  .replace(/\/+$/, "");
// Shown when a push carries no usable payload: a push without a notification gets a site penalised.
const GENERIC = { title: "New stories for you", body: "Tap to read the latest.", tag: "storypush" };

self.storypush = { api: API };

const post = (path, body) =>
  fetch(API + "/api/v1/" + path, {
    method: "POST",
    keepalive: true,
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });

// Receipts are best effort: never let one fail a notification.
const report = (type, receipt) =>
  typeof receipt === "string" && receipt ? post("events", { type, receipt }).catch(() => {}) : Promise.resolve();

// Only web pages may be opened; anything else falls back to the site's start page.
const safeUrl = (raw) => {
  if (typeof raw !== "string" || !raw) return self.registration.scope;
  try {
    const url = new URL(raw, self.registration.scope);
    if (url.protocol === "https:" || url.protocol === "http:") return url.href;
  } catch (e) { /* fall through */ }
  return self.registration.scope;
};

const parse = (data) => {
  try {
    const msg = data && data.json();
    return msg && typeof msg === "object" ? msg : {};
  } catch (e) {
    return {};
  }
};

async function onPush(event) {
  const msg = parse(event.data);
  const usable = typeof msg.title === "string" && msg.title !== "";
  const title = usable ? msg.title : GENERIC.title;
  const options = {
    body: usable ? String(msg.body || "") : GENERIC.body,
    tag: usable ? String(msg.tag || msg.campaign || GENERIC.tag) : GENERIC.tag,
    data: { url: safeUrl(usable ? msg.url : null), receipt: msg.receipt, campaign: msg.campaign },
  };
  for (const key of ["icon", "image", "badge"]) if (usable && typeof msg[key] === "string") options[key] = msg[key];
  try {
    await self.registration.showNotification(title, options);
  } catch (e) {
    // Bad options (e.g. an unusable image URL) must still end in a notification.
    await self.registration.showNotification(GENERIC.title, { body: GENERIC.body, tag: GENERIC.tag, data: options.data });
  }
  await report("delivered", msg.receipt);
}

// Focus a tab already showing the story, else open one.
async function openStory(url) {
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  const open = windows.find((client) => client.url === url);
  if (open && "focus" in open) return open.focus();
  return self.clients.openWindow(url);
}

async function onClick(event) {
  const data = event.notification.data || {};
  event.notification.close();
  const receipt = report("clicked", data.receipt); // in parallel: the window comes first
  try {
    await openStory(safeUrl(data.url));
  } catch (e) {
    console.warn("storypush: could not open the story", e);
  }
  await receipt;
}

// Re-subscribe with the same key and move the reader's topics to the new endpoint.
async function onSubscriptionChange(event) {
  const old = event.oldSubscription;
  let sub = event.newSubscription;
  if (!sub) {
    let key = old && old.options && old.options.applicationServerKey;
    if (!key) {
      const res = await fetch(API + "/api/v1/vapid-public-key");
      const b64 = (await res.json()).publicKey.replace(/-/g, "+").replace(/_/g, "/");
      key = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    }
    sub = await self.registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
  }
  // Without the old endpoint there is nothing to move; prompt.js re-sends the new
  // subscription with the reader's topics on the next page view.
  if (!old) return;
  const res = await post("subscriptions/change", { oldEndpoint: old.endpoint, subscription: sub.toJSON() });
  if (!res.ok) console.warn("storypush: subscriptions/change answered", res.status);
}

self.addEventListener("install", () => self.skipWaiting()); // no caches to migrate: take over at once
self.addEventListener("push", (event) => event.waitUntil(onPush(event)));
self.addEventListener("notificationclick", (event) => event.waitUntil(onClick(event)));
self.addEventListener("notificationclose", (event) =>
  event.waitUntil(report("dismissed", (event.notification.data || {}).receipt)),
);
self.addEventListener("pushsubscriptionchange", (event) => event.waitUntil(onSubscriptionChange(event)));
