// The playground's page: a workspace drawn from the server's live feed.
// Messages arrive drawn as HTML by the server (bot/entrypoints/playground/blockkit.py,
// which escapes every piece of text); this script only places them, and turns clicks
// and commands into calls the server signs and sends to /slack/events.
"use strict";

const state = {
  users: [], user: null, channel: null, channels: [], messages: new Map(), homes: {}, view: "channel",
};
const $ = (id) => document.getElementById(id);

async function call(path, body) {
  const resp = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Playground": "1" },
    body: JSON.stringify(body),
  });
  let data = {};
  try { data = await resp.json(); } catch (e) { data = { ok: false, error: await resp.text() }; }
  if (!resp.ok || data.ok === false) {
    status(data.error || ("HTTP " + resp.status));
  } else {
    status("");
  }
  return data;
}

function status(text) { $("status").textContent = text; }

function userName(id) {
  const user = state.users.find((u) => u.id === id);
  return user ? user.name : id;
}

function channelName(id) {
  const channel = state.channels.find((c) => c.id === id);
  return channel ? channel.name : id;
}

function drawChannels() {
  const list = $("channels");
  list.replaceChildren();
  for (const channel of state.channels) {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = "#";
    link.dataset.channel = channel.id;
    link.textContent = "# " + channel.name;
    if (channel.id === state.channel && state.view === "channel") link.classList.add("active");
    link.addEventListener("click", (event) => { event.preventDefault(); openChannel(channel.id); });
    item.append(link);
    list.append(item);
  }
}

function show(view) {
  // One of the three panes: a channel, the app's Home tab, the outbox.
  state.view = view;
  $("channel-view").hidden = view !== "channel";
  $("home-view").hidden = view !== "home";
  $("outbox-view").hidden = view !== "outbox";
  $("show-home").classList.toggle("active", view === "home");
  $("show-outbox").classList.toggle("active", view === "outbox");
}

function drawHome() {
  const html = state.homes[state.user];
  const user = state.users.find((u) => u.id === state.user);
  $("home-who").textContent = user ? user.name : state.user;
  if (html !== undefined) $("home").innerHTML = html;  // drawn and escaped by the server
}

async function openHome() {
  show("home");
  drawChannels();
  $("home").innerHTML = '<p class="hint">Opening the Home tab…</p>';
  drawHome();
  await call("/playground/home", { user: state.user });
}

function openChannel(id) {
  state.channel = id;
  show("channel");
  $("channel-title").textContent = "# " + channelName(id);
  drawChannels();
  drawMessages();
}

function visible(message) {
  return message.channel === state.channel &&
    (message.visible_to === null || message.visible_to === state.user);
}

function messageElement(message) {
  const item = document.createElement("div");
  item.className = "msg";
  item.dataset.ts = message.ts;
  if (message.visible_to) item.classList.add("ephemeral");
  const typed = message.author !== "greenlight";
  if (typed) item.classList.add("typed");
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = typed ? userName(message.author) : "Greenlight";
  const meta = document.createElement("span");
  meta.className = "meta";
  const when = new Date(parseFloat(message.ts) * 1000).toLocaleTimeString();
  meta.textContent = when + (message.edited ? " (edited)" : "") +
    (message.visible_to ? " · only visible to you" : "");
  const body = document.createElement("div");
  body.className = "body";
  body.innerHTML = message.html;  // drawn and escaped by the server
  for (const fileId of message.files || []) {
    const image = document.createElement("img");
    image.className = "file";
    image.src = "/playground/files/" + encodeURIComponent(fileId);
    image.alt = "a file shared by Greenlight";
    body.append(image);
  }
  item.append(who, meta, body);
  return item;
}

function drawMessages() {
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.replaceChildren();
  const shown = [...state.messages.values()].filter(visible)
    .sort((a, b) => parseFloat(a.ts) - parseFloat(b.ts));
  for (const message of shown) list.append(messageElement(message));
  if (atBottom || shown.length < 4) list.scrollTop = list.scrollHeight;
}

function drawOne(message) {
  // One message changed: only its element is drawn again, so that a menu being
  // opened or a button being clicked in another message is left alone.
  const list = $("messages");
  const shown = list.querySelector('.msg[data-ts="' + CSS.escape(message.ts) + '"]');
  if (shown) {
    shown.replaceWith(messageElement(message));
    return;
  }
  const last = list.lastElementChild;
  if (last && parseFloat(last.dataset.ts) > parseFloat(message.ts)) {
    drawMessages();
    return;
  }
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(messageElement(message));
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function plainText(object) {
  // Slack's plain_text: the server escaped &, < and > as Slack expects; decode them.
  const text = (object && object.text) || "";
  return text.replaceAll("&lt;", "<").replaceAll("&gt;", ">").replaceAll("&amp;", "&");
}

function confirmFirst(confirm) {
  // Block Kit's confirm object: nothing is sent until OK, as in Slack.
  if (!confirm) return Promise.resolve(true);
  const dialog = $("confirm");
  $("confirm-title").textContent = plainText(confirm.title);
  $("confirm-text").textContent = plainText(confirm.text);
  $("confirm-ok").textContent = plainText(confirm.confirm) || "OK";
  $("confirm-deny").textContent = plainText(confirm.deny) || "Cancel";
  $("confirm-ok").className = "bk-button " + (confirm.style === "danger" ? "bk-danger" : "bk-primary");
  return new Promise((resolve) => {
    const done = (answer) => {
      $("confirm-ok").onclick = null;
      $("confirm-deny").onclick = null;
      dialog.close();
      resolve(answer);
    };
    $("confirm-ok").onclick = () => done(true);
    $("confirm-deny").onclick = () => done(false);
    dialog.oncancel = () => done(false);
    dialog.showModal();
  });
}

async function act(element, selected) {
  const action = JSON.parse(element.dataset.action);
  if (!(await confirmFirst(action.confirm))) return;
  if (element.closest("#home")) {
    await call("/playground/action", { user: state.user, home: true, action });
    return;
  }
  const message = element.closest(".msg");
  await call("/playground/action", { user: state.user, ts: message.dataset.ts, action, selected });
}

function onEvent(event) {
  const data = JSON.parse(event.data);
  if (data.type === "snapshot") {
    state.messages = new Map(data.messages.map((m) => [m.ts, m]));
    state.channels = data.channels;
    if (!state.channel && state.channels.length) state.channel = state.channels[0].id;
    drawChannels();
    state.homes = data.homes || {};
    if (state.view === "channel") openChannel(state.channel);
  } else if (data.type === "message") {
    state.messages.set(data.message.ts, data.message);
    if (visible(data.message)) drawOne(data.message);
  } else if (data.type === "deleted") {
    state.messages.delete(data.ts);
    drawMessages();
  } else if (data.type === "home") {
    state.homes[data.user] = data.html;
    if (state.view === "home" && data.user === state.user) drawHome();
  } else if (data.type === "channels") {
    state.channels = data.channels;
    drawChannels();
  } else if (data.type === "notice") {
    status(data.text);
    if (data.clock) drawClock(data.clock);
  }
}

function drawClock(clock) {
  const ahead = clock.ahead_seconds ? " (" + Math.round(clock.ahead_seconds / 60) + " min ahead)" : "";
  $("clock").textContent = new Date(clock.now).toLocaleString() + ahead;
}

async function showOutbox() {
  show("outbox");
  drawChannels();
  const resp = await fetch("/playground/outbox");
  const data = await resp.json();
  $("outbox-count").textContent = "(" + data.total + ")";
  const list = $("letters");
  list.replaceChildren();
  if (!data.readable) {
    const item = document.createElement("li");
    item.textContent = "MAIL_URL is an SMTP relay: the messages are the relay's.";
    list.append(item);
  }
  for (const letter of data.letters) {
    const item = document.createElement("li");
    item.dataset.key = letter.key;
    const subject = document.createElement("span");
    subject.className = "subject";
    subject.textContent = letter.subject;
    item.append(subject, document.createTextNode(letter.to));
    item.addEventListener("click", () => showLetter(letter.key, item));
    list.append(item);
  }
}

async function showLetter(key, item) {
  for (const other of document.querySelectorAll(".letters li")) other.classList.remove("active");
  item.classList.add("active");
  const resp = await fetch("/playground/outbox/" + encodeURIComponent(key));
  const letter = await resp.json();
  const pane = $("letter");
  pane.replaceChildren();
  const table = document.createElement("table");
  for (const [name, value] of letter.headers) {
    const row = table.insertRow();
    const head = document.createElement("th");
    head.textContent = name;
    const cell = row.insertCell();
    cell.textContent = value;
    row.prepend(head);
  }
  pane.append(table);
  if (letter.html) {
    const frame = document.createElement("iframe");
    // No script, no same origin: links may open a new tab, images load (the pixel).
    frame.setAttribute("sandbox", "allow-popups allow-popups-to-escape-sandbox");
    frame.title = "the message's HTML part";
    frame.src = "/playground/outbox/" + encodeURIComponent(key) + "/html";
    pane.append(frame);
  }
  if (letter.text) {
    const text = document.createElement("pre");
    text.textContent = letter.text;
    pane.append(text);
  }
}

async function start() {
  const resp = await fetch("/playground/state");
  const data = await resp.json();
  state.users = data.users;
  state.channels = data.channels;
  state.user = data.users[0].id;
  state.channel = data.channels.length ? data.channels[0].id : null;
  const picker = $("user");
  for (const user of data.users) {
    const option = document.createElement("option");
    option.value = user.id;
    option.textContent = user.name;
    picker.append(option);
  }
  const describe = () => {
    const user = state.users.find((u) => u.id === state.user);
    $("user-says").textContent = user.says;
  };
  picker.addEventListener("change", () => {
    state.user = picker.value;
    describe();
    if (state.view === "home") openHome(); else drawMessages();
  });
  describe();
  drawClock(data.clock);
  drawChannels();
  if (state.channel) openChannel(state.channel);
  $("composer").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = $("compose").value.trim();
    if (!text || !state.channel) return;
    $("compose").value = "";
    await call("/playground/command", { user: state.user, channel: state.channel, text });
  });
  $("messages").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button) act(button, null);
  });
  $("messages").addEventListener("change", (event) => {
    const select = event.target.closest("select[data-action]");
    if (!select) return;
    const option = select.options[select.selectedIndex];
    act(select, { text: { type: "plain_text", text: option.textContent }, value: option.value });
  });
  for (const button of document.querySelectorAll("button[data-step]")) {
    button.addEventListener("click", async () => {
      status("running the due work…");
      const data = await call("/playground/due", { step: button.dataset.step });
      if (data.clock) drawClock(data.clock);
    });
  }
  $("show-outbox").addEventListener("click", (event) => { event.preventDefault(); showOutbox(); });
  $("show-home").addEventListener("click", (event) => { event.preventDefault(); openHome(); });
  $("home").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (button) act(button, null);
  });
  new EventSource("/playground/events").onmessage = onEvent;
}

document.addEventListener("DOMContentLoaded", start);
