/* ChatCrafter widget — served by the gateway at /widget/v1/widget.js.
 * No dependencies. ChatCrafter.init({gateway, token, getToken, onMessage,
 * i18n, locale, container, open}) — docs/widget.md. Every text from the
 * network is set with textContent, never parsed as HTML. */
(function () {
  "use strict";

  var TEXT = {
    launcher: "Chat with us",
    title: "Chat",
    close: "Close chat",
    input: "Your message",
    placeholder: "Write a message…",
    send: "Send",
    typing: "Typing…",
    sending: "Sending…",
    sent: "Sent",
    delivered: "Delivered",
    read: "Read",
    failed: "Not delivered",
    tooLong: "too long",
    offline: "Connection lost — reconnecting…",
    ended: "Session ended",
    you: "You",
    them: "Us",
    on: "on {channel}",
    continueOn: "Continue on {channel}",
    scan: "Scan with your phone, or open the link:",
    channels: { widget: "web chat", whatsapp: "WhatsApp", telegram: "Telegram", discord: "Discord" }
  };

  var CSS =
    ".cc-root{--cc-accent:#3b5bdb;--cc-bg:#fff;--cc-fg:#1c1c1c;--cc-muted:#6b6b6b;--cc-in:#f1f3f5;--cc-out:var(--cc-accent);--cc-out-fg:#fff;--cc-radius:12px;--cc-font:system-ui,sans-serif;" +
    "position:fixed;right:20px;bottom:20px;z-index:2147483000;display:flex;flex-direction:column;align-items:flex-end;font:14px/1.4 var(--cc-font);color:var(--cc-fg)}" +
    ".cc-root *{box-sizing:border-box}" +
    ".cc-launcher{background:var(--cc-accent);color:var(--cc-out-fg);border:0;border-radius:999px;padding:12px 18px;font:inherit;font-weight:600;cursor:pointer;box-shadow:0 4px 14px rgba(0,0,0,.2)}" +
    ".cc-panel{display:flex;flex-direction:column;width:min(360px,calc(100vw - 40px));height:min(520px,calc(100vh - 100px));background:var(--cc-bg);border-radius:var(--cc-radius);box-shadow:0 8px 30px rgba(0,0,0,.25);overflow:hidden;margin-bottom:12px}" +
    ".cc-panel[hidden]{display:none}" +
    ".cc-head{display:flex;align-items:center;justify-content:space-between;padding:12px 14px;background:var(--cc-accent);color:var(--cc-out-fg)}" +
    ".cc-head h2{margin:0;font-size:15px}" +
    ".cc-x{background:none;border:0;color:inherit;font-size:20px;cursor:pointer;line-height:1}" +
    ".cc-log{flex:1;overflow-y:auto;padding:12px;display:flex;flex-direction:column;gap:8px}" +
    ".cc-msg{max-width:80%;padding:8px 10px;border-radius:var(--cc-radius);white-space:pre-wrap;word-wrap:break-word}" +
    ".cc-in{align-self:flex-end;background:var(--cc-out);color:var(--cc-out-fg)}" +
    ".cc-out{align-self:flex-start;background:var(--cc-in)}" +
    ".cc-meta{display:block;font-size:11px;opacity:.75;margin-top:2px}" +
    ".cc-status{padding:2px 14px;font-size:12px;color:var(--cc-muted);min-height:18px}" +
    ".cc-form{display:flex;gap:6px;padding:10px;border-top:1px solid rgba(0,0,0,.08)}" +
    ".cc-input{flex:1;resize:none;border:1px solid rgba(0,0,0,.2);border-radius:8px;padding:8px;font:inherit;color:inherit;background:var(--cc-bg)}" +
    ".cc-send{background:var(--cc-accent);color:var(--cc-out-fg);border:0;border-radius:8px;padding:0 14px;font:inherit;cursor:pointer}" +
    ".cc-links{display:flex;gap:6px;padding:0 10px 10px;flex-wrap:wrap}" +
    ".cc-link{background:none;border:1px solid var(--cc-accent);color:var(--cc-accent);border-radius:999px;padding:4px 10px;font:inherit;font-size:12px;cursor:pointer}" +
    ".cc-qr{padding:10px;text-align:center;font-size:12px}.cc-qr svg{width:160px;height:160px}" +
    ".cc-sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}" +
    ".cc-launcher:focus-visible,.cc-send:focus-visible,.cc-x:focus-visible,.cc-link:focus-visible,.cc-input:focus-visible{outline:3px solid #f08c00;outline-offset:2px}";

  var current = null;
  var MAX_FRAME = 16384;

  function merge(base, extra) {
    var out = {};
    var k;
    for (k in base) out[k] = base[k];
    for (k in extra || {}) {
      out[k] = typeof extra[k] === "object" && extra[k] && !Array.isArray(extra[k]) ? merge(base[k] || {}, extra[k]) : extra[k];
    }
    return out;
  }

  function el(tag, cls, attrs) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    return e;
  }

  function fill(s, vars) {
    return s.replace(/\{(\w+)\}/g, function (_, k) { return vars[k] == null ? "" : vars[k]; });
  }

  function randomId() {
    var a = new Uint8Array(12);
    (window.crypto || window.msCrypto).getRandomValues(a);
    return "c-" + Array.prototype.map.call(a, function (b) { return (b + 256).toString(16).slice(1); }).join("");
  }

  function Session(opts) {
    if (!opts || !opts.gateway || !opts.token) throw new Error("ChatCrafter.init needs {gateway, token}");
    this.opts = opts;
    this.t = merge(TEXT, opts.i18n);
    this.token = opts.token;
    this.base = String(opts.gateway).replace(/\/+$/, "");
    this.entries = {};
    this.lastId = null;
    this.pending = {};      // client_id -> {text, node}; resent until acknowledged
    this.acked = [];        // acknowledged, waiting for their timeline entry
    this.attempt = 0;
    this.closed = false;
    this.ws = null;
    this.timers = [];
    this.build();
    this.connect();
    var self = this;
    this.api = {
      open: function () { self.open(); },
      close: function () { self.hide(); },
      send: function (text) { self.send(text); },
      destroy: function () { self.destroy(); }
    };
  }

  Session.prototype.later = function (fn, ms) {
    var id = setTimeout(fn, ms);
    this.timers.push(id);
    return id;
  };

  Session.prototype.build = function () {
    var t = this.t, self = this;
    if (!document.getElementById("cc-style")) {
      var style = el("style", null, { id: "cc-style" });
      style.textContent = CSS;
      document.head.appendChild(style);
    }
    var root = this.root = el("div", "cc-root", { "data-chatcrafter": "" });
    var panel = this.panel = el("section", "cc-panel", { role: "dialog", "aria-label": t.title, id: "cc-panel" });
    panel.hidden = true;
    var head = el("div", "cc-head");
    var h = el("h2");
    h.textContent = t.title;
    var x = el("button", "cc-x", { type: "button", "aria-label": t.close });
    x.textContent = "×";
    x.onclick = function () { self.hide(); };
    head.appendChild(h);
    head.appendChild(x);
    this.log = el("div", "cc-log", { role: "log", "aria-live": "polite", "aria-relevant": "additions", tabindex: "0", "aria-label": t.title });
    this.status = el("div", "cc-status", { role: "status", "aria-live": "polite" });
    this.links = el("div", "cc-links");
    var form = el("form", "cc-form");
    var label = el("label", "cc-sr", { for: "cc-input" });
    label.textContent = t.input;
    this.input = el("textarea", "cc-input", { id: "cc-input", rows: "1", placeholder: t.placeholder, maxlength: "4000" });
    var send = el("button", "cc-send", { type: "submit" });
    send.textContent = t.send;
    form.appendChild(label);
    form.appendChild(this.input);
    form.appendChild(send);
    form.onsubmit = function (e) {
      e.preventDefault();
      var text = self.input.value;
      if (text.trim()) {
        self.send(text);
        self.input.value = "";
      }
      self.input.focus();
    };
    this.input.onkeydown = function (e) {
      if (e.key === "Enter" && !e.shiftKey) {
        e.preventDefault();
        form.onsubmit(e);
      }
    };
    panel.onkeydown = function (e) { if (e.key === "Escape") self.hide(); };
    panel.appendChild(head);
    panel.appendChild(this.log);
    panel.appendChild(this.status);
    panel.appendChild(this.links);
    panel.appendChild(form);
    var launcher = this.launcher = el("button", "cc-launcher", { type: "button", "aria-controls": "cc-panel", "aria-expanded": "false" });
    launcher.textContent = t.launcher;
    launcher.onclick = function () { if (self.panel.hidden) self.open(); else self.hide(); };
    root.appendChild(panel);
    root.appendChild(launcher);
    (this.opts.container || document.body).appendChild(root);
    ["whatsapp", "telegram"].forEach(function (ch) {
      if ((self.opts.continueOn || []).indexOf(ch) < 0) return;
      var b = el("button", "cc-link", { type: "button" });
      b.textContent = fill(t.continueOn, { channel: t.channels[ch] || ch });
      b.onclick = function () { self.continueOn(ch); };
      self.links.appendChild(b);
    });
    if (this.opts.open) this.open();
  };

  Session.prototype.open = function () {
    this.panel.hidden = false;
    this.launcher.setAttribute("aria-expanded", "true");
    this.input.focus();
    this.log.scrollTop = this.log.scrollHeight;
  };

  Session.prototype.hide = function () {
    this.panel.hidden = true;
    this.launcher.setAttribute("aria-expanded", "false");
    this.launcher.focus();
  };

  Session.prototype.say = function (text) {
    this.status.textContent = text || "";
  };

  Session.prototype.connect = function () {
    if (this.closed || (this.ws && this.ws.readyState <= 1)) return;
    var self = this;
    var url = this.base.replace(/^http/, "ws") + "/widget/v1/ws";
    var ws;
    try {
      ws = this.ws = new WebSocket(url);
    } catch (e) {
      return this.retry();
    }
    ws.onopen = function () {
      var auth = { type: "auth", token: self.token };
      if (self.lastId) auth.after = self.lastId;
      ws.send(JSON.stringify(auth));
    };
    ws.onmessage = function (ev) {
      var f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      self.frame(f);
    };
    ws.onclose = function (ev) {
      if (self.ws !== ws) return;
      self.ws = null;
      if (self.closed) return;
      if (ev.code === 4003 && self.opts.getToken) {
        // Refused or expired: ask the page for a fresh token first.
        return self.refreshToken(function () { self.retry(); });
      }
      if (ev.code === 4003) {
        self.say(self.t.ended);
        return;
      }
      self.say(self.t.offline);
      self.retry();
    };
  };

  /* Reconnects with exponential backoff and full jitter (0.5 s … 30 s). */
  Session.prototype.retry = function () {
    var self = this;
    var cap = Math.min(30000, 500 * Math.pow(2, this.attempt++));
    this.later(function () { self.connect(); }, Math.random() * cap);
  };

  Session.prototype.refreshToken = function (then) {
    var self = this;
    Promise.resolve()
      .then(function () { return self.opts.getToken(); })
      .then(function (token) {
        if (self.closed || !token) return;
        if (userOf(token) !== userOf(self.token)) {
          // Someone else now: nothing of this user's session may stay.
          self.destroy();
          return;
        }
        self.token = token;
        if (self.ws && self.ws.readyState === 1) self.ws.send(JSON.stringify({ type: "refresh", token: token }));
        if (then) then();
      })
      .catch(function () { if (then) then(); });
  };

  Session.prototype.frame = function (f) {
    var self = this;
    switch (f.type) {
      case "session":
        // Backoff starts over only once the session has held for 10 s.
        clearTimeout(this.stableTimer);
        this.stableTimer = this.later(function () { self.attempt = 0; }, 10000);
        this.say("");
        this.schedule(f.expires_at, f.now);
        // Whatever was sent and not acknowledged goes again, same client_id.
        Object.keys(this.pending).forEach(function (id) { self.push(id); });
        break;
      case "refreshed":
        this.schedule(f.expires_at, f.now);
        break;
      case "history":
        (f.entries || []).forEach(function (e) { self.entry(e); });
        break;
      case "message":
        this.entry(f);
        break;
      case "status":
        var e = this.entries[f.id];
        if (e) {
          e.status = f.status;
          this.meta(e);
        }
        break;
      case "ack":
        var p = this.pending[f.client_id];
        if (p) {
          delete this.pending[f.client_id];
          p.node.setAttribute("data-message-id", f.id);
          p.state.textContent = this.t.sent;
          if (!p.entryId) this.acked.push(p);
          this.typing(true);
        }
        break;
      case "error":
        if (f.client_id && this.pending[f.client_id] && f.code === "overloaded") {
          // Busy: the same message again, a little later.
          this.later(function () { self.push(f.client_id); }, 1000 + Math.random() * 2000);
        } else if (f.client_id && this.pending[f.client_id]) {
          var q = this.pending[f.client_id];
          delete this.pending[f.client_id];
          q.state.textContent = this.t.failed + " (" + f.message + ")";
        }
        break;
    }
  };

  /* Refreshes the token a minute before it expires, through getToken();
   * counted on the gateway's clock (its `now`), not this machine's. */
  Session.prototype.schedule = function (expiresAt, serverNow) {
    if (!this.opts.getToken || !expiresAt) return;
    var self = this;
    clearTimeout(this.refreshTimer);
    var left = expiresAt - (serverNow || Date.now() / 1000);
    var ms = Math.max(5000, (left - 60) * 1000, left * 500);
    this.refreshTimer = this.later(function () { self.refreshToken(); }, ms);
  };

  Session.prototype.typing = function (on) {
    var self = this;
    clearTimeout(this.typingTimer);
    this.say(on ? this.t.typing : "");
    if (on) this.typingTimer = this.later(function () { self.say(""); }, 15000);
  };

  Session.prototype.when = function (iso) {
    var d = new Date(iso);
    var days = (Date.now() - d.getTime()) / 86400000;
    var loc = this.opts.locale;
    try {
      if (days < 1 && new Date().getDate() === d.getDate()) {
        return new Intl.DateTimeFormat(loc, { hour: "numeric", minute: "2-digit" }).format(d);
      }
      if (days < 7) return new Intl.DateTimeFormat(loc, { weekday: "long" }).format(d);
      return new Intl.DateTimeFormat(loc, { dateStyle: "medium" }).format(d);
    } catch (e) {
      return d.toLocaleString();
    }
  };

  Session.prototype.meta = function (e) {
    var t = this.t;
    var parts = [];
    if (e.channel && e.channel !== "widget") parts.push(fill(t.on, { channel: t.channels[e.channel] || e.channel }));
    if (e.at) parts.push(this.when(e.at));
    var line = parts.join(", ");
    if (e.direction === "outbound" && e.status && e.channel !== "widget" && t[e.status]) line += " · " + t[e.status];
    if (e.metaNode) e.metaNode.textContent = line.charAt(0).toUpperCase() + line.slice(1);
  };

  Session.prototype.entry = function (f) {
    if (this.entries[f.id]) return;
    this.lastId = f.id;
    if (f.kind === "event" || f.text == null) return;
    var mine = f.direction === "inbound";
    // Our own message, shown since it was typed: the first acknowledged
    // one with the same text takes the entry.
    var shown = null;
    if (mine && f.channel === "widget") {
      for (var i = 0; i < this.acked.length && !shown; i++) {
        if (this.acked[i].text === f.text) shown = this.acked.splice(i, 1)[0].node;
      }
      // Stored before a lost connection, not yet acknowledged: the resend's
      // ack will only confirm it.
      for (var id in this.pending) {
        var p = this.pending[id];
        if (!shown && !p.entryId && p.text === f.text) {
          p.entryId = f.id;
          shown = p.node;
        }
      }
      if (shown) shown.setAttribute("data-id", f.id);
    }
    var node = shown || el("div", "cc-msg " + (mine ? "cc-in" : "cc-out"), { "data-id": f.id });
    if (!shown) {
      var who = el("span", "cc-sr");
      who.textContent = (mine ? this.t.you : this.t.them) + ": ";
      var body = el("span", "cc-text");
      body.textContent = f.text;
      node.appendChild(who);
      node.appendChild(body);
      this.log.appendChild(node);
    }
    var meta = node.querySelector(".cc-meta") || el("span", "cc-meta");
    if (!meta.parentNode) node.appendChild(meta);
    f.metaNode = meta;
    this.entries[f.id] = f;
    this.meta(f);
    if (!mine) this.typing(false);
    this.log.scrollTop = this.log.scrollHeight;
    if (this.opts.onMessage) {
      try { this.opts.onMessage({ id: f.id, at: f.at, channel: f.channel, direction: f.direction, text: f.text, status: f.status }); } catch (e) { /* the page's own */ }
    }
  };

  Session.prototype.send = function (text) {
    var id = randomId();
    var node = el("div", "cc-msg cc-in", { "data-client-id": id });
    var who = el("span", "cc-sr");
    who.textContent = this.t.you + ": ";
    var body = el("span", "cc-text");
    body.textContent = text;
    var state = el("span", "cc-meta");
    state.textContent = this.t.sending;
    node.appendChild(who);
    node.appendChild(body);
    node.appendChild(state);
    this.log.appendChild(node);
    this.log.scrollTop = this.log.scrollHeight;
    var frame = JSON.stringify({ type: "message", text: text, client_id: id });
    if (new TextEncoder().encode(frame).length > MAX_FRAME) {
      state.textContent = this.t.failed + " (" + this.t.tooLong + ")";
      return;
    }
    this.pending[id] = { text: text, node: node, state: state };
    this.push(id);
  };

  Session.prototype.push = function (id) {
    var p = this.pending[id];
    if (p && this.ws && this.ws.readyState === 1) {
      this.ws.send(JSON.stringify({ type: "message", text: p.text, client_id: id }));
    }
  };

  /* Asks the gateway for a one-time link to carry on on the phone. */
  Session.prototype.continueOn = function (channel) {
    var self = this;
    fetch(this.base + "/widget/v1/continue", {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer " + this.token },
      body: JSON.stringify({ channel: channel })
    })
      .then(function (r) { return r.json().then(function (b) { return { ok: r.ok, body: b }; }); })
      .then(function (r) {
        var old = self.panel.querySelector(".cc-qr");
        if (old) old.parentNode.removeChild(old);
        var box = el("div", "cc-qr", { role: "region", "aria-label": fill(self.t.continueOn, { channel: self.t.channels[channel] || channel }) });
        if (!r.ok) {
          box.textContent = (r.body.error && r.body.error.message) || "";
        } else {
          var p = el("p");
          p.textContent = self.t.scan;
          box.appendChild(p);
          var img = el("img", null, { alt: "QR code", width: "160", height: "160", src: "data:image/svg+xml;charset=utf-8," + encodeURIComponent(r.body.qr_svg) });
          box.appendChild(img);
          var safe = /^https?:\/\//.test(r.body.link) ? r.body.link : "#";
          var a = el("a", null, { href: safe, target: "_blank", rel: "noopener" });
          a.textContent = r.body.link;
          box.appendChild(el("br"));
          box.appendChild(a);
        }
        self.panel.insertBefore(box, self.links);
      });
  };

  Session.prototype.destroy = function () {
    this.closed = true;
    this.timers.forEach(clearTimeout);
    if (this.ws) {
      var ws = this.ws;
      this.ws = null;
      try { ws.close(1000); } catch (e) { /* already closed */ }
    }
    if (this.root.parentNode) this.root.parentNode.removeChild(this.root);
    this.entries = {};
    this.pending = {};
    if (current === this) current = null;
  };

  /* The user a token names (its unverified `sub`: the gateway verifies). */
  function userOf(token) {
    try {
      var b = String(token).split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      var claims = JSON.parse(decodeURIComponent(escape(atob(b + "===".slice((b.length + 3) % 4)))));
      return (claims.iss || "") + "\u0000" + claims.sub;
    } catch (e) {
      return null;
    }
  }

  function init(opts) {
    var same = current && current.base === String(opts.gateway).replace(/\/+$/, "") &&
      (current.token === opts.token || (userOf(opts.token) !== null && userOf(opts.token) === userOf(current.token)));
    if (same) {
      var fresh = current.token !== opts.token;
      current.token = opts.token;
      if (fresh && current.ws && current.ws.readyState === 1) {
        current.ws.send(JSON.stringify({ type: "refresh", token: opts.token }));
      } else if (fresh && !current.ws) {
        current.connect();
      }
      return current.api;
    }
    // Another user (or a log-out): nothing of the old session stays.
    if (current) current.destroy();
    current = new Session(opts);
    return current.api;
  }

  window.ChatCrafter = { init: init, version: "1" };
})();
