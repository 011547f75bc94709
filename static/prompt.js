/* storypush soft prompt: a "Click 'OK' then 'Allow'" banner; the browser's own permission
 * dialog comes only after OK. Embed once per page, anywhere (vanilla ES2017, no build):
 *
 *   <script src="https://push.example/static/prompt.js" defer
 *     data-api="https://push.example"        API base; default: the origin this file came from
 *     data-topics="animals,tv-and-film"      topics offered, in this order, all preselected;
 *                                            default: every topic, none preselected
 *     data-sw="/sw.js"                       your copy of sw.js at your site's root (registered
 *                                            as /sw.js?api=<data-api>); default "/sw.js"
 *     data-snooze-days="7"                   quiet days after "Not now" or a dismissed dialog
 *     data-title data-text data-topics-label data-ok data-not-now>   wording (plain text)
 *   </script>
 *
 * window.storypush: {config, state, ready}. `ready` resolves with the first decision:
 * "shown" | "snoozed" | "denied" | "granted" | "unsupported" | "error"; `state` then moves on
 * to "declined" | "blocked" | "subscribed" | "failed" (a "storypush:state" event each time). */
(() => {
  "use strict";
  if (window.storypush && window.storypush.ready) return; // embedded twice: one banner is enough
  const script = document.currentScript || document.querySelector("script[src*='prompt.js']");
  const data = (script && script.dataset) || {};
  const DAY = 864e5;
  const snoozeDays = Number(data.snoozeDays);
  const cfg = {
    // Default API: wherever this script was loaded from.
    api: (data.api || new URL(script ? script.src : location.href, location.href).origin).replace(/\/+$/, ""),
    topics: (data.topics || "").split(",").map((t) => t.trim()).filter(Boolean),
    title: data.title || "Story reminders",
    text: data.text || "To make sure you never miss out on your favourite NEW stories, " +
      "we're happy to send you some reminders. Click 'OK' then 'Allow'",
    topicsLabel: data.topicsLabel || "Remind me about",
    ok: data.ok || "OK",
    notNow: data.notNow || "Not now",
    snoozeDays: data.snoozeDays && snoozeDays >= 0 ? snoozeDays : 7,
    sw: data.sw || "/sw.js",
  };
  const sp = (window.storypush = { config: cfg, state: "starting" });

  // localStorage can throw (disabled storage, Safari private mode): then we just remember less.
  const remember = (key, value) => { try { localStorage.setItem("storypush:" + key, JSON.stringify(value)); } catch (e) { /* ignore */ } };
  const recall = (key) => { try { return JSON.parse(localStorage.getItem("storypush:" + key)); } catch (e) { return null; } };

  const call = async (path, body) => {
    const init = body ? { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) } : {};
    const res = await fetch(cfg.api + "/api/v1/" + path, Object.assign({ credentials: "omit", keepalive: !!body }, init));
    if (!res.ok) throw new Error("storypush: " + path + " answered " + res.status);
    return res.status === 204 ? null : res.json();
  };
  // Funnel counts are best effort; they must never break the prompt.
  const funnel = (type) => call("prompt-events", { type }).catch(() => {});
  const setState = (state) => {
    sp.state = state;
    document.dispatchEvent(new CustomEvent("storypush:state", { detail: state }));
    return state;
  };

  const bytes = (b64url) => Uint8Array.from(atob(b64url.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
  const sameBytes = (a, b) => a && b && a.byteLength === b.byteLength && new Uint8Array(a).every((x, i) => x === b[i]);

  // The service worker learns the API base from its own URL (sw.js reads ?api=).
  const swUrl = () => {
    const url = new URL(cfg.sw, location.href);
    url.searchParams.set("api", cfg.api);
    return url.href;
  };

  // Register (idempotent) and wait until a worker is active: subscribe() needs one.
  const activeRegistration = async () => {
    const reg = await navigator.serviceWorker.register(swUrl());
    const worker = reg.installing || reg.waiting;
    if (reg.active || !worker) return reg;
    await new Promise((resolve, reject) => worker.addEventListener("statechange", () => {
      if (worker.state === "activated") resolve();
      if (worker.state === "redundant") reject(new Error("storypush: service worker failed to install"));
    }));
    return reg;
  };

  let vapidKey = null;
  const subscribe = async (reg) => {
    const key = bytes((await (vapidKey || (vapidKey = call("vapid-public-key")))).publicKey);
    // A subscription made with another key (rotated key, other vendor) blocks a new one: replace it.
    const old = await reg.pushManager.getSubscription();
    if (old && !sameBytes(old.options && old.options.applicationServerKey, key)) await old.unsubscribe();
    return reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
  };

  const save = async (sub, topics) => {
    const body = { subscription: sub.toJSON(), topics };
    const locale = navigator.language;
    if (/^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$/.test(locale || "")) body.locale = locale;
    const timezone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (timezone) body.timezone = timezone;
    await call("subscriptions", body);
    remember("topics", topics);
    remember("synced", { endpoint: sub.endpoint, at: Date.now() });
  };

  // Permission already granted: quietly make sure the server has the current subscription
  // (a rotated endpoint, a failed earlier save), at most once a day per endpoint.
  // Only for readers who said OK through this prompt (their topics are remembered): a
  // subscription some other script made is not ours to report.
  const sync = async () => {
    const topics = recall("topics");
    const reg = await activeRegistration();
    if (!topics || !topics.length) return setState("granted");
    // Said OK, but the subscription got lost (cleared, failed earlier): renew it.
    const sub = (await reg.pushManager.getSubscription()) || (await subscribe(reg));
    const synced = recall("synced") || {};
    if (synced.endpoint !== sub.endpoint || !(Date.now() - synced.at < DAY)) await save(sub, topics);
    return setState("granted");
  };

  const STYLE = `
#storypush-prompt{position:fixed;left:0;right:0;bottom:0;z-index:2147483000;box-sizing:border-box;max-width:40rem;
margin:0 auto;padding:1rem 1.25rem calc(1rem + env(safe-area-inset-bottom,0px));background:#fff;color:#1b1b1b;
border-radius:12px 12px 0 0;box-shadow:0 -2px 24px rgba(0,0,0,.28);font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
text-align:left;animation:storypush-in .25s ease-out}
#storypush-prompt *{box-sizing:border-box;font:inherit;color:inherit;letter-spacing:normal;text-transform:none}
@keyframes storypush-in{from{transform:translateY(100%)}}
@media (prefers-reduced-motion:reduce){#storypush-prompt{animation:none}}
@media (min-width:42rem){#storypush-prompt{bottom:1rem;border-radius:12px}}
#storypush-prompt .sp-title{margin:0 0 .25rem;font-weight:700;font-size:1.06em}
#storypush-prompt .sp-text{margin:0 0 .75rem}
#storypush-prompt .sp-topics{display:flex;flex-wrap:wrap;gap:.5rem;margin:0 0 .75rem;padding:0;border:0;min-width:0}
#storypush-prompt legend{float:left;width:100%;margin:0 0 .1rem;padding:0;font-weight:600;font-size:.9em}
#storypush-prompt .sp-topics label{display:inline-flex;align-items:center;gap:.4rem;padding:.3rem .75rem;border:1px solid #767676;
border-radius:999px;cursor:pointer;font-size:.92em}
#storypush-prompt .sp-topics label:has(input:checked){background:#e8f0fe;border-color:#0b57d0}
#storypush-prompt input{width:1rem;height:1rem;margin:0;accent-color:#0b57d0}
#storypush-prompt .sp-hint{margin:0 0 .5rem;font-size:.9em;color:#b3261e}
#storypush-prompt .sp-hint:empty{margin:0}
#storypush-prompt .sp-actions{display:flex;justify-content:flex-end;gap:.5rem}
#storypush-prompt button{min-height:44px;min-width:6.5rem;margin:0;padding:.5rem 1.2rem;border:2px solid #0b57d0;border-radius:8px;
background:transparent;color:#0b57d0;font-weight:600;cursor:pointer}
#storypush-prompt button.sp-ok{background:#0b57d0;color:#fff}
#storypush-prompt button:hover{filter:brightness(.92)}
#storypush-prompt :focus-visible,#storypush-prompt label:has(input:focus-visible){outline:3px solid #e37400;outline-offset:2px}
@media (max-width:30rem){#storypush-prompt .sp-actions button{flex:1;min-width:0}}`;

  const el = (tag, props, children) => {
    const node = Object.assign(document.createElement(tag), props);
    (children || []).forEach((child) => node.append(child));
    return node;
  };

  const show = (topics) => {
    const chosen = new Set(cfg.topics);
    const boxes = topics.map((t) => el("input", { type: "checkbox", value: t.id, checked: chosen.has(t.id) }));
    const hint = el("p", { className: "sp-hint", role: "status" });
    const notNow = el("button", { type: "button", className: "sp-later", textContent: cfg.notNow });
    const ok = el("button", { type: "button", className: "sp-ok", textContent: cfg.ok });
    const box = el("div", { id: "storypush-prompt" }, [
      el("p", { id: "storypush-title", className: "sp-title", textContent: cfg.title }),
      el("p", { id: "storypush-text", className: "sp-text", textContent: cfg.text }),
      el("fieldset", { className: "sp-topics" }, [el("legend", { textContent: cfg.topicsLabel }),
        ...topics.map((t, i) => el("label", {}, [boxes[i], t.name]))]),
      hint,
      el("div", { className: "sp-actions" }, [notNow, ok]),
    ]);
    // A non-modal dialog: it neither steals focus nor blocks the page.
    box.setAttribute("role", "dialog");
    box.setAttribute("aria-labelledby", "storypush-title");
    box.setAttribute("aria-describedby", "storypush-text");
    let returnFocus = null;
    let busy = false;
    box.addEventListener("focusin", (e) => { if (!box.contains(e.relatedTarget)) returnFocus = e.relatedTarget; });
    const hide = () => {
      const hadFocus = box.contains(document.activeElement);
      box.remove();
      if (hadFocus && returnFocus && returnFocus.focus) returnFocus.focus();
    };
    const decline = () => {
      if (busy) return;
      remember("notNowAt", Date.now());
      funnel("declined");
      hide();
      setState("declined");
    };
    const accept = async () => {
      if (busy) return;
      const picked = boxes.filter((b) => b.checked).map((b) => b.value);
      if (!picked.length) {
        hint.textContent = "Choose at least one topic.";
        boxes[0].focus();
        return;
      }
      busy = true;
      let permission = "default";
      // Asked only here, inside the click, so the browser's dialog follows the reader's own OK.
      try { permission = await Notification.requestPermission(); } catch (e) { /* treated as dismissed */ }
      if (permission !== "granted") {
        funnel("denied");
        remember("notNowAt", Date.now()); // a dismissed dialog: do not ask again straight away
        busy = false;
        hide();
        return setState("blocked");
      }
      funnel("accepted");
      remember("topics", picked);
      try {
        await save(await subscribe(await activeRegistration()), picked);
        hide();
        setState("subscribed");
      } catch (err) {
        console.warn("storypush: could not subscribe", err);
        hint.textContent = "Sorry, that did not work. Please try again later.";
        setState("failed");
        setTimeout(hide, 4000);
      }
    };
    notNow.addEventListener("click", decline);
    ok.addEventListener("click", accept);
    box.addEventListener("keydown", (e) => { if (e.key === "Escape") decline(); });
    document.head.append(el("style", { textContent: STYLE }));
    // First in the body, so keyboard users reach it without tabbing through the page;
    // position:fixed, so the page does not move.
    document.body.prepend(box);
    funnel("shown");
    return setState("shown");
  };

  const start = async () => {
    if (!("serviceWorker" in navigator && "PushManager" in window && "Notification" in window)) return setState("unsupported");
    if (Notification.permission === "denied") return setState("denied");
    if (Notification.permission === "granted") return sync();
    const declinedAt = recall("notNowAt");
    if (declinedAt && Date.now() - declinedAt < cfg.snoozeDays * DAY) return setState("snoozed");
    const all = (await call("topics")).topics;
    // In data-topics order (the publisher's), unknown ids dropped.
    const topics = cfg.topics.length ? cfg.topics.map((id) => all.find((t) => t.id === id)).filter(Boolean) : all;
    if (!topics.length) throw new Error("storypush: none of data-topics is a known topic");
    vapidKey = call("vapid-public-key");
    vapidKey.catch(() => {}); // awaited (and reported) on OK
    if (document.readyState === "loading") await new Promise((r) => document.addEventListener("DOMContentLoaded", r));
    return show(topics);
  };

  sp.ready = start().catch((err) => {
    console.warn(err);
    return setState("error");
  });
})();
