// The chat page: a client of the chat protocol over a WebSocket, one
// protocol line per message. Replies come in request order, so every
// request waits in `requests` for the next reply that is not a DELIVERY.
'use strict';

(() => {
  const byId = (id) => document.getElementById(id);
  const ui = {
    status: document.querySelector('[data-testid="status"]'),
    me: byId('me'),
    login: byId('login'),
    loginForm: byId('login-form'),
    loginName: byId('login-name'),
    loginError: document.querySelector('[data-testid="login-error"]'),
    chat: byId('chat'),
    online: document.querySelector('[data-testid="online-list"]'),
    onlineNames: byId('online-names'),
    conversations: byId('conversations'),
    title: byId('conversation-title'),
    messages: document.querySelector('[data-testid="messages"]'),
    compose: byId('compose'),
    composeTo: byId('compose-to'),
    composeText: byId('compose-text'),
  };

  // The wording follows the terminal client's where it has one.
  const text = {
    inUse: (name) => `Cannot log in as ${name}. That username is already in use.`,
    busy: 'Cannot log in. The server is full!',
    badName: (name) => `Cannot log in as ${name}. That username contains disallowed characters.`,
    notOnline: (name) => `not delivered: ${name} is not online`,
    refused: 'not delivered: the server refused the message (empty, or with characters it does not take)',
    lost: 'not delivered, as far as we know: the connection was lost before the server answered',
  };

  const listEvery = 5000; // ms between LISTs while the page is visible
  const reconnectMin = 1000;
  const reconnectMax = 30000;
  const inUseRetries = 5; // after a reconnect, the old login may not be gone yet

  let ws = null;
  let name = ''; // the name to log in as
  let loggedIn = false;
  let everLoggedIn = false;
  let requests = []; // {onReply(line), onLost()} in request order
  let listPending = false;
  let attempt = 0; // reconnects since the last login
  let inUseLeft = inUseRetries;
  let reconnectTimer = 0;
  const conversations = new Map(); // peer name -> {messages: [], unread, item, badge}
  let selected = '';

  // visible shows a name or message byte for byte, with control and
  // format characters (bidi overrides among them) made visible, so no one
  // can drive the page's layout.
  function visible(s) {
    return s
      .replace(/[\x00-\x1f\x7f]/g, (c) => (c === '\x7f' ? '^?' : '^' + String.fromCharCode(c.charCodeAt(0) + 64)))
      .replace(/[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]/g,
        (c) => `<U+${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}>`);
  }

  function setStatus(s) {
    ui.status.textContent = s;
  }

  function connect() {
    clearTimeout(reconnectTimer);
    setStatus(everLoggedIn ? 'reconnecting…' : 'connecting…');
    const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
    const socket = new WebSocket(scheme + location.host + '/ws');
    ws = socket;
    socket.onopen = () => login();
    socket.onmessage = (e) => onLine(String(e.data));
    socket.onclose = (e) => {
      if (ws === socket) onClose(e);
    };
  }

  function send(line, onReply, onLost) {
    requests.push({ onReply, onLost: onLost || (() => {}) });
    ws.send(line);
  }

  function onLine(line) {
    if (line.startsWith('DELIVERY ')) {
      const rest = line.slice('DELIVERY '.length);
      const space = rest.indexOf(' ');
      const from = rest.slice(0, space);
      addMessage(from, { from, to: name, text: rest.slice(space + 1), state: 'received' });
      return;
    }
    const req = requests.shift();
    if (req) req.onReply(line);
  }

  function login() {
    send('HELLO-FROM ' + name, (reply) => {
      if (reply === 'HELLO ' + name) {
        loggedIn = true;
        everLoggedIn = true;
        attempt = 0;
        inUseLeft = inUseRetries;
        ui.me.textContent = visible(name);
        ui.me.hidden = false;
        ui.login.hidden = true;
        ui.chat.hidden = false;
        ui.loginError.textContent = '';
        setStatus('connected');
        list();
        if (!ui.composeTo.value) ui.composeTo.focus();
        else ui.composeText.focus();
        return;
      }
      if (reply === 'IN-USE' && everLoggedIn && --inUseLeft > 0) {
        ws.close(1000); // our last login may not be gone yet: try again soon
        return;
      }
      const why = { 'IN-USE': text.inUse(name), BUSY: text.busy, 'BAD-RQST-BODY': text.badName(name) }[reply] || reply;
      loginFailed(why);
    });
  }

  // loginFailed shows why a login failed, next to the name, and leaves the
  // socket open for another try.
  function loginFailed(why) {
    everLoggedIn = false;
    ui.login.hidden = false;
    ui.chat.hidden = true;
    ui.me.hidden = true;
    ui.loginError.textContent = visible(why);
    setStatus(ws ? 'connected, not logged in' : 'disconnected');
    ui.loginName.focus();
  }

  function onClose(e) {
    ws = null;
    loggedIn = false;
    listPending = false;
    const lost = requests;
    requests = [];
    lost.forEach((r) => r.onLost());
    switch (e.code) {
      case 1008: // a limit of this connection's: do not come back at once
        loginFailed('The server closed the connection: ' + (e.reason || 'a limit was reached') + '.');
        setStatus('disconnected');
        return;
      case 1013: // the server is full
        loginFailed(text.busy);
        setStatus('disconnected');
        return;
    }
    if (!everLoggedIn) {
      setStatus('disconnected');
      return;
    }
    const base = Math.min(reconnectMax, reconnectMin * 2 ** attempt);
    const delay = Math.min(reconnectMax, Math.max(reconnectMin, base * (0.75 + Math.random() / 2)));
    attempt++;
    setStatus(`reconnecting in ${Math.round(delay / 1000)} s`);
    reconnectTimer = setTimeout(connect, delay);
  }

  function list() {
    if (!loggedIn || listPending) return;
    listPending = true;
    send('LIST', (reply) => {
      listPending = false;
      if (reply.startsWith('LIST-OK ')) showOnline(reply.slice('LIST-OK '.length).split(',').filter((n) => n));
    }, () => { listPending = false; });
  }

  // showOnline shows the users online in alphabetical order (the server
  // lists them in login order).
  function showOnline(names) {
    names = names.slice().sort((a, b) => a.localeCompare(b));
    ui.online.replaceChildren(...names.map((n) => {
      const li = document.createElement('li');
      li.dataset.testid = 'online-user';
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'link';
      b.textContent = visible(n);
      b.onclick = () => select(n);
      li.append(b);
      return li;
    }));
    ui.onlineNames.replaceChildren(...names.filter((n) => n !== name).map((n) => {
      const o = document.createElement('option');
      o.value = n;
      return o;
    }));
  }

  function conversation(peer) {
    let c = conversations.get(peer);
    if (c) return c;
    const item = document.createElement('li');
    item.dataset.testid = 'conversation';
    item.dataset.user = peer;
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = visible(peer);
    const badge = document.createElement('span');
    badge.className = 'unread';
    badge.hidden = true;
    b.append(badge);
    b.onclick = () => select(peer);
    item.append(b);
    ui.conversations.append(item);
    c = { messages: [], unread: 0, item, badge };
    conversations.set(peer, c);
    return c;
  }

  function addMessage(peer, msg) {
    const c = conversation(peer);
    c.messages.push(msg);
    if (peer === selected) {
      ui.messages.append(render(msg));
      ui.messages.lastElementChild.scrollIntoView({ block: 'end' });
    } else if (msg.state === 'received') {
      c.unread++;
      c.badge.textContent = String(c.unread);
      c.badge.hidden = false;
    }
    return msg;
  }

  function render(msg) {
    const li = document.createElement('li');
    li.dataset.testid = 'message';
    li.dataset.from = msg.from;
    li.dataset.to = msg.to;
    if (msg.from === name && msg.state !== 'received') li.classList.add('mine');
    li.append(visible(msg.text));
    const note = document.createElement('span');
    note.className = 'note';
    li.append(note);
    msg.el = li;
    setState(msg, msg.state, msg.note);
    return li;
  }

  function setState(msg, state, note) {
    msg.state = state;
    msg.note = note || '';
    if (!msg.el) return;
    msg.el.dataset.state = state;
    msg.el.querySelector('.note').textContent = { pending: 'sending…', sent: '', received: '' }[state] ?? msg.note;
  }

  function select(peer) {
    selected = peer;
    const c = conversation(peer);
    c.unread = 0;
    c.badge.hidden = true;
    for (const other of conversations.values()) other.item.classList.toggle('selected', other === c);
    ui.title.textContent = 'With ' + visible(peer);
    ui.messages.replaceChildren(...c.messages.map(render));
    ui.composeTo.value = peer;
    ui.composeText.focus();
  }

  ui.loginForm.addEventListener('submit', (e) => {
    e.preventDefault();
    name = ui.loginName.value;
    ui.loginError.textContent = '';
    inUseLeft = inUseRetries;
    if (ws && ws.readyState === WebSocket.OPEN) login();
    else if (!ws) connect();
  });

  ui.compose.addEventListener('submit', (e) => {
    e.preventDefault();
    const to = ui.composeTo.value;
    const body = ui.composeText.value;
    if (!loggedIn || !to || !body) return;
    if (selected !== to) select(to);
    const msg = addMessage(to, { from: name, to, text: body, state: 'pending' });
    send(`SEND ${to} ${body}`, (reply) => {
      if (reply === 'SEND-OK') setState(msg, 'sent');
      else if (reply === 'BAD-DEST-USER') setState(msg, 'failed', text.notOnline(to));
      else setState(msg, 'failed', text.refused);
      list();
    }, () => setState(msg, 'failed', text.lost));
    ui.composeText.value = '';
    ui.composeText.focus();
  });

  setInterval(() => {
    if (document.visibilityState === 'visible') list();
  }, listEvery);
})();
