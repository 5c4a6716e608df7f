// The chat page of the apigw-ws examples (Django and Flask share it).
//
// The server renders a JSON config into <script id="chat-config" type="application/json">:
//   {
//     "user": {"id": "1", "name": "alice", "displayName": "Alice"},
//     "wsUrl": "ws://127.0.0.1:8001/local",     // API Gateway (or local gateway) URL
//     "tokenUrl": "/ws-token/",                 // the adapter's token endpoint (POST)
//     "clientUrl": "/static/apigw_ws/apigw-ws.js",
//     "csrfToken": "...",                       // optional: else meta tag / cookie
//     "rooms": [{"name": "general", "title": "General", "description": "...", "private": false}],
//     "initialRoom": "general",
//     "people": {"1": "alice"},                 // optional: user id -> name, for presence
//     "logout": {"url": "/logout/", "method": "post", "csrfToken": "..."}
//   }
//
// Wire protocol with the example's handlers:
//   browser -> server  {"action": "join"}                       after every (re)connect
//                      {"action": "$presence", "channel"}       the member list, after connect
//                      {"action": "chat_message", "text", "id"} a line for the current room
//                      {"action": "ping"}                       the client's keepalive
//   server -> browser  {"type": "history", "room", "messages": [...]}   recent lines (join)
//                      {"type": "$presence", "channel", "members": [user ids]}
//                      {"type": "member_added" | "member_removed", "channel", "user_id"}
//                      {"type": "chat_message", "room", "user", "name", "text", "ts", "id"}
//                      {"type": "announcement", "text", "from"}
//
// Rooms are history channels: chat lines arrive in the envelope {channel, offset, epoch, data}
// that the apigw-ws client unwraps; after a reconnect it recovers what was missed (shown with
// a "recovered" note). The sender's own line is shown at once and not sent back to it (the
// server excludes the sender); every line has an id, so a line is never shown twice.
// The connection carries a `device` attribute (mobile / desktop), shown next to each line.

const config = JSON.parse(document.getElementById('chat-config').textContent);
const { ApigwWsClient } = await import(config.clientUrl);

const rooms = new Map(config.rooms.map((room) => [room.name, { ...room, messages: [], seen: new Set(), users: [], opened: false, refused: null }]));
const people = config.people || {};
const device = globalThis.matchMedia && matchMedia('(pointer: coarse)').matches ? 'mobile' : 'desktop';
const me = config.user;
let current = rooms.has(config.initialRoom) ? config.initialRoom : config.rooms[0].name;

// --- tiny DOM helpers -------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function initials(name) {
  return (name || '?').split(/[\s._-]+/).filter(Boolean).slice(0, 2).map((part) => part[0].toUpperCase()).join('');
}

function hue(text) {
  let n = 0;
  for (const ch of text || '') n = (n * 31 + ch.charCodeAt(0)) % 360;
  return n;
}

// A padlock as inline SVG: emoji fonts are not everywhere (headless Chromium has none).
function lockIcon() {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 16 16');
  svg.setAttribute('class', 'icon');
  svg.setAttribute('aria-label', 'private');
  const body = document.createElementNS(ns, 'rect');
  for (const [k, v] of Object.entries({ x: 3, y: 7, width: 10, height: 7, rx: 1.5 })) body.setAttribute(k, v);
  const shackle = document.createElementNS(ns, 'path');
  shackle.setAttribute('d', 'M5.5 7V5a2.5 2.5 0 0 1 5 0v2');
  shackle.setAttribute('fill', 'none');
  shackle.setAttribute('stroke', 'currentColor');
  shackle.setAttribute('stroke-width', '1.6');
  svg.append(body, shackle);
  return svg;
}

function roomMark(room) {
  return room.private ? lockIcon() : '#';
}

function avatar(name) {
  return h('span', { class: 'avatar', style: `--hue: ${hue(name)}`, 'aria-hidden': 'true', text: initials(name) });
}

function clock(ts) {
  const date = ts ? new Date(ts) : new Date();
  return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

// --- layout ----------------------------------------------------------------------------

const statusPill = h('span', { class: 'status status-connecting', 'data-testid': 'status', role: 'status', text: 'Connecting…' });
const banner = h('div', { class: 'announcement', 'data-testid': 'announcement', hidden: true });
const roomList = h('nav', { class: 'rooms', 'aria-label': 'Rooms' });
const roomTitle = h('h1', { class: 'room-title' });
const roomDescription = h('p', { class: 'room-description' });
const notice = h('div', { class: 'notice', 'data-testid': 'notice', role: 'alert', hidden: true });
const messageList = h('ol', { class: 'messages', 'data-testid': 'messages', 'aria-live': 'polite' });
const presenceCount = h('span', { class: 'count', 'data-testid': 'presence-count' });
const presenceList = h('ul', { class: 'presence', 'data-testid': 'presence' });
const input = h('input', {
  class: 'composer-input',
  'data-testid': 'composer-input',
  name: 'text',
  autocomplete: 'off',
  maxlength: '500',
  placeholder: 'Message',
  'aria-label': 'Message',
});
const sendButton = h('button', { class: 'button button-primary', type: 'submit', 'data-testid': 'composer-send', text: 'Send' });
const composer = h('form', { class: 'composer', onsubmit: onSubmit }, input, sendButton);

function logoutControl() {
  const logout = config.logout;
  if (!logout) return null;
  if ((logout.method || 'get').toLowerCase() === 'post') {
    return h(
      'form',
      { method: 'post', action: logout.url, class: 'logout' },
      logout.csrfToken ? h('input', { type: 'hidden', name: logout.csrfField || 'csrfmiddlewaretoken', value: logout.csrfToken }) : null,
      h('button', { class: 'button button-ghost', type: 'submit', text: 'Log out' }),
    );
  }
  return h('a', { class: 'button button-ghost', href: logout.url, text: 'Log out' });
}

document.getElementById('app').replaceChildren(
  h(
    'div',
    { class: 'shell' },
    h(
      'header',
      { class: 'topbar' },
      h('div', { class: 'brand' }, h('span', { class: 'brand-mark', 'aria-hidden': 'true', text: '⇄' }), h('span', { class: 'brand-name', text: 'apigw-ws chat' })),
      statusPill,
      h('div', { class: 'me' }, avatar(me.displayName || me.name), h('span', { class: 'me-name', 'data-testid': 'me', text: me.displayName || me.name }), logoutControl()),
    ),
    banner,
    h(
      'div',
      { class: 'layout' },
      h('aside', { class: 'sidebar' }, h('h2', { class: 'sidebar-title', text: 'Rooms' }), roomList),
      h(
        'main',
        { class: 'room' },
        h('div', { class: 'room-header' }, h('div', {}, roomTitle, roomDescription)),
        notice,
        messageList,
        composer,
      ),
      h('aside', { class: 'people' }, h('h2', { class: 'sidebar-title' }, 'In this room ', presenceCount), presenceList),
    ),
  ),
);

// --- rendering -------------------------------------------------------------------------

function renderRooms() {
  roomList.replaceChildren(
    ...[...rooms.values()].map((room) =>
      h(
        'button',
        {
          class: `room-link${room.name === current ? ' active' : ''}${room.refused ? ' refused' : ''}`,
          type: 'button',
          'data-testid': `room-${room.name}`,
          'aria-current': room.name === current ? 'page' : false,
          onclick: () => switchRoom(room.name),
        },
        h('span', { class: 'room-hash', 'aria-hidden': 'true' }, roomMark(room)),
        h('span', { class: 'room-name', text: room.title || room.name }),
      ),
    ),
  );
}

function messageNode(message) {
  if (message.system) {
    return h('li', { class: 'message system', 'data-testid': 'message' }, h('span', { class: 'system-text', text: message.text }));
  }
  const mine = String(message.user) === String(me.id);
  return h(
    'li',
    { class: `message${mine ? ' mine' : ''}`, 'data-testid': 'message', 'data-user': message.name || '' },
    avatar(message.name),
    h(
      'div',
      { class: 'bubble' },
      h(
        'div',
        { class: 'meta' },
        h('span', { class: 'author', text: message.name || 'someone' }),
        h('time', { text: clock(message.ts) }),
        message.device ? h('span', { class: 'device', 'data-testid': 'message-device', text: message.device }) : null,
      ),
      h('p', { class: 'text', 'data-testid': 'message-text', text: message.text }),
    ),
  );
}

function renderRoom() {
  const room = rooms.get(current);
  roomTitle.replaceChildren(h('span', { class: 'room-hash', 'aria-hidden': 'true' }, roomMark(room)), room.title || room.name);
  roomDescription.textContent = room.description || '';
  if (room.refused) {
    notice.textContent = room.refused;
    notice.hidden = false;
  } else {
    notice.hidden = true;
  }
  input.disabled = sendButton.disabled = Boolean(room.refused);
  input.placeholder = room.refused ? 'You cannot post here' : `Message #${room.title || room.name}`;
  if (room.messages.length === 0 && !room.refused) {
    messageList.replaceChildren(h('li', { class: 'empty', text: 'No messages yet. Say hello!' }));
  } else {
    messageList.replaceChildren(...room.messages.map(messageNode));
  }
  messageList.scrollTop = messageList.scrollHeight;
  renderPresence();
  renderRooms();
}

function renderPresence() {
  const room = rooms.get(current);
  presenceCount.textContent = String(room.users.length);
  presenceList.replaceChildren(
    ...room.users.map((user) =>
      h(
        'li',
        { class: 'person', 'data-testid': 'presence-user', 'data-user': user.name },
        avatar(user.name),
        h('span', { text: user.name }),
        String(user.id) === String(me.id) ? h('span', { class: 'you', text: 'you' }) : null,
      ),
    ),
  );
}

function setStatus(kind, text) {
  statusPill.className = `status status-${kind}`;
  statusPill.textContent = text;
}

function addMessage(roomName, message) {
  const room = rooms.get(roomName);
  if (!room) return;
  if (message.id) {
    if (room.seen.has(message.id)) return; // e.g. in the recent lines and also live
    room.seen.add(message.id);
  }
  room.messages.push(message);
  if (room.messages.length > 200) room.messages.shift();
  if (roomName === current) {
    if (room.messages.length === 1) messageList.replaceChildren();
    messageList.append(messageNode(message));
    messageList.scrollTop = messageList.scrollHeight;
  }
}

// --- the connection --------------------------------------------------------------------

const client = new ApigwWsClient({
  url: config.wsUrl,
  tokenUrl: config.tokenUrl,
  csrfToken: config.csrfToken,
  channel: current,
  params: { device }, // a declared connection attribute on the server
});

client.on('open', () => {
  const room = rooms.get(client.channel);
  if (room) {
    room.opened = true;
    room.refused = null;
  }
  setStatus('open', 'Connected');
  client.send('join');
  client.requestPresence(client.channel);
  renderRoom();
});

// After a reconnect the client recovers what this room missed; say so on the page.
client.on('recovered', ({ channel, recovered, count }) => {
  if (!recovered) {
    addMessage(channel, { system: true, text: 'Some messages are too old to recover; reloading the room.' });
    if (channel === client.channel) client.send('join');
  } else if (count > 0) {
    addMessage(channel, { system: true, recovered: true, text: `Recovered ${count} message${count === 1 ? '' : 's'} sent while you were offline.` });
  }
});

client.on('reconnecting', ({ delay, reason }) => {
  if (reason === 'channel_changed') return setStatus('connecting', 'Connecting…');
  setStatus('reconnecting', delay >= 1000 ? `Reconnecting in ${Math.round(delay / 1000)} s…` : 'Reconnecting…');
});

function refuse(roomName, text) {
  const room = rooms.get(roomName);
  room.refused = text;
  room.users = [];
  setStatus('closed', 'Not connected');
  if (roomName === current) renderRoom();
}

client.on('denied', ({ channel, message }) => {
  refuse(channel || current, message || 'You are not allowed in this room.');
});

client.on('close', ({ opened }) => {
  const room = rooms.get(client.channel);
  // A private room whose handshake fails before it ever opened: the server refused us.
  if (!opened && room && room.private && !room.opened) {
    client.close(1000, 'refused');
    refuse(room.name, `You are not allowed in ${room.title || room.name}.`);
  }
});

// Servers may name the sender by id only, and call a chat line "chat" or "chat_message".
function chatLine(m) {
  addMessage(m.room || client.channel || current, { ...m, name: m.name || String(m.user ?? '') });
}
client.onMessage('chat_message', chatLine);
client.onMessage('chat', chatLine);

client.onMessage('history', (m) => {
  const room = rooms.get(m.room || current);
  if (!room) return;
  // Recent lines first, then whatever arrived already and is not among them.
  const ids = new Set(m.messages.map((line) => line.id).filter(Boolean));
  const newer = room.messages.filter((line) => !line.id || !ids.has(line.id));
  room.messages = [...m.messages.map((line) => ({ ...line, name: line.name || String(line.user ?? '') })), ...newer];
  room.seen = new Set([...ids, ...newer.map((line) => line.id).filter(Boolean)]);
  if (room.name === current) renderRoom();
});

// Presence: the member list once connected, then one event per user who comes or goes.
function person(id) {
  return { id: String(id), name: people[id] || String(id) };
}

function setUsers(room, users) {
  room.users = users.sort((a, b) => a.name.localeCompare(b.name));
  if (room.name === current) renderPresence();
}

client.onMessage('$presence', (m) => {
  const room = rooms.get(m.channel);
  if (room) setUsers(room, m.members.map(person));
});

client.onMessage('member_added', (m) => {
  const room = rooms.get(m.channel);
  if (room && !room.users.some((u) => u.id === String(m.user_id))) setUsers(room, [...room.users, person(m.user_id)]);
});

client.onMessage('member_removed', (m) => {
  const room = rooms.get(m.channel);
  if (room) setUsers(room, room.users.filter((u) => u.id !== String(m.user_id)));
});

client.onMessage('presence', (m) => {
  const room = rooms.get(m.room || client.channel || current);
  if (!room) return;
  room.users = m.users
    .map((u) => (typeof u === 'object' && u !== null ? { id: u.id, name: u.name || String(u.id) } : { id: u, name: String(u) }))
    .sort((a, b) => a.name.localeCompare(b.name));
  if (room.name === current) renderPresence();
});

client.onMessage('announcement', (m) => {
  banner.replaceChildren(h('strong', { text: m.from ? `${m.from}: ` : 'Announcement: ' }), document.createTextNode(m.text));
  banner.hidden = false;
  for (const name of rooms.keys()) addMessage(name, { system: true, text: `Announcement: ${m.text}` });
});

function switchRoom(name) {
  if (name === current && !rooms.get(name).refused) return;
  current = name;
  const room = rooms.get(name);
  room.refused = null;
  renderRoom();
  history.replaceState(null, '', `#${name}`);
  client.setChannel(name);
}

function onSubmit(event) {
  event.preventDefault();
  const text = input.value.trim();
  if (!text || rooms.get(current).refused) return;
  const id = globalThis.crypto && crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(36).slice(2)}`;
  client.send('chat_message', { text, id });
  // Shown at once: the server sends the line to everyone else in the room, not back to us.
  addMessage(current, { id, user: me.id, name: me.displayName || me.name, text, ts: new Date().toISOString(), device });
  input.value = '';
  input.focus();
}

const fromHash = decodeURIComponent(location.hash.slice(1));
if (rooms.has(fromHash) && fromHash !== current) {
  current = fromHash;
  client.setChannel(fromHash);
} else {
  client.connect();
}
renderRoom();
input.focus();

// For the end-to-end tests and the curious: window.chat.client is the apigw-ws client.
window.chat = { client, rooms, get room() { return current; } };
