// The admin's playground: a chat with one agent, as a client of the tenant's API. It uses the WebSocket
// (README, "WebSocket") for sending, streaming, cancelling and the conversation's notices, and REST for the
// rest (conversations, the message list, uploads, data frame rows), all with the staff user's session and
// CSRF token. The conversation is kept in sessionStorage, so that a reload shows it again and resumes a
// reply still running.
"use strict";

(() => {
  const config = JSON.parse(document.getElementById("playground-config").textContent);
  const storageKey = `parley.playground.${config.tenant_id}.${config.agent_id}`;
  const FRAME_ROWS = 10;
  const CLOSED_FOR_GOOD = new Set([4401, 4403, 4404]);
  const $ = (id) => document.getElementById(id);
  const ui = {
    root: $("playground"), conversation: $("pg-conversation"), status: $("pg-status"), error: $("pg-error"),
    messages: $("pg-messages"), form: $("pg-form"), input: $("pg-input"), files: $("pg-files"),
    attached: $("pg-attached"), reasoning: $("pg-reasoning"), send: $("pg-send"), cancel: $("pg-cancel"), newConversation: $("pg-new"),
  };
  const state = {
    conversationId: sessionStorage.getItem(storageKey),
    socket: null,
    retries: 0,
    requests: 0,
    attachments: [], // [{file_ref, name}]
    replies: new Map(), // message id -> {el, lastSeq, done}
    running: null, // the id of the reply this page follows while it runs ("pending" until acknowledged)
    pending: null, // the message.send frame not yet acknowledged: sent again (same idempotency_key) on reconnect
    sending: null, // the request id it was last sent with
  };

  // --- Small helpers -------------------------------------------------------------------------------

  function element(tag, attributes = {}, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (name === "text") el.textContent = value;
      else el.setAttribute(name, value);
    }
    el.append(...children);
    return el;
  }

  function webAddress(url) { // an http(s) address, or null (never a javascript: or data: link)
    try {
      const parsed = new URL(url);
      return ["http:", "https:"].includes(parsed.protocol) ? parsed.href : null;
    } catch {
      return null;
    }
  }

  function showError(message) {
    ui.error.textContent = message || "";
    ui.error.hidden = !message;
  }

  function setStatus(text, stateName) {
    ui.status.textContent = text;
    if (stateName) ui.root.dataset.state = stateName;
  }

  function conversationPath() {
    return `/agents/${encodeURIComponent(config.agent_id)}/conversations/${encodeURIComponent(state.conversationId)}`;
  }

  async function api(path, {method = "GET", json, body} = {}) {
    const headers = {"Accept": "application/json", "X-CSRFToken": config.csrf_token};
    if (json !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(config.api + path, {
      method, headers, credentials: "same-origin", body: json !== undefined ? JSON.stringify(json) : body,
    });
    const isJson = (response.headers.get("Content-Type") || "").startsWith("application/json");
    const answer = isJson ? await response.json() : null; // (nginx's own error pages are HTML)
    if (!response.ok) {
      throw Object.assign(new Error(answer?.error?.message || `${response.status} ${response.statusText}`), {
        status: response.status,
      });
    }
    return answer;
  }

  // --- The conversation ----------------------------------------------------------------------------

  function useConversation(id) {
    state.conversationId = id;
    state.replies.clear();
    state.running = null;
    ui.messages.replaceChildren();
    ui.conversation.textContent = id || "none yet";
    if (id) sessionStorage.setItem(storageKey, id);
    else sessionStorage.removeItem(storageKey);
    running(null);
  }

  async function ensureConversation() {
    if (!state.conversationId) {
      const conversation = await api(`/agents/${encodeURIComponent(config.agent_id)}/conversations`, {
        method: "POST", json: {},
      });
      useConversation(conversation.id);
      subscribe();
    }
    return state.conversationId;
  }

  async function loadConversation() {
    if (!state.conversationId) return;
    let page;
    try {
      page = await api(`${conversationPath()}/messages?limit=100&order=desc`); // the latest 100
    } catch (error) {
      if (error.status !== 404) throw error;
      useConversation(null); // deleted meanwhile: start afresh
      return;
    }
    page.items.reverse();
    ui.messages.replaceChildren();
    state.replies.clear();
    for (const message of page.items) {
      if (message.role === "user") addUserMessage(message.content, message.id, message.attachments);
      else if (message.role === "assistant") showStoredReply(message);
    }
    const frames = await api(`${conversationPath()}/data-frames?limit=100`);
    for (const frame of frames.items) {
      const reply = state.replies.get(frame.message_id);
      if (reply) addDataFrame(reply, frame.name);
    }
    const last = page.items[page.items.length - 1];
    if (last && last.role === "assistant" && last.status === "in_progress") {
      // Still running (this page was reloaded, or another tab sent it): replay it from its first event.
      const reply = state.replies.get(last.id);
      reply.el.querySelector(".pg-content").textContent = "";
      reply.el.querySelector(".pg-thinking").textContent = "";
      reply.el.querySelector(".pg-details").hidden = true;
      reply.el.querySelector(".pg-citations").replaceChildren();
      reply.el.querySelectorAll(".pg-frame").forEach((frame) => frame.remove());
      follow(last.id);
    }
  }

  // --- Messages on the page ------------------------------------------------------------------------

  function addUserMessage(content, id, attachments = []) {
    const li = element("li", {class: "user", ...(id ? {"data-id": id} : {})},
      element("div", {class: "pg-role", text: "You"}),
      element("div", {class: "pg-content", text: content}));
    if (attachments.length) {
      li.append(element("div", {class: "pg-meta", text: `Attached: ${attachments.length} file(s)`}));
    }
    ui.messages.append(li);
    li.scrollIntoView({block: "end"});
    return li;
  }

  function addReply(id) {
    const details = element("details", {class: "pg-details", hidden: ""},
      element("summary", {text: "Thinking"}), element("div", {class: "pg-thinking"}));
    const li = element("li", {class: "assistant", "data-id": id, "data-status": "in_progress"},
      element("div", {class: "pg-role", text: "Agent"}),
      details,
      element("div", {class: "pg-content"}),
      element("ol", {class: "pg-citations"}),
      element("div", {class: "pg-meta", text: "streaming"}));
    ui.messages.append(li);
    const reply = {el: li, lastSeq: -1, done: false};
    state.replies.set(id, reply);
    return reply;
  }

  function showStoredReply(message) {
    const reply = addReply(message.id);
    reply.el.querySelector(".pg-content").textContent = message.content;
    if (message.thinking) appendThinking(reply, message.thinking);
    showCitations(reply, message.citations || []);
    if (message.status !== "in_progress") {
      finish(reply, message.status, message.error);
      if (message.output_tokens) {
        reply.el.querySelector(".pg-meta").textContent += ` · ${message.input_tokens + message.output_tokens} tokens`;
      }
    }
    return reply;
  }

  function appendThinking(reply, text) {
    reply.el.querySelector(".pg-details").hidden = false;
    reply.el.querySelector(".pg-thinking").textContent += text;
  }

  function showCitations(reply, citations) {
    const list = reply.el.querySelector(".pg-citations");
    list.replaceChildren(...citations.map((citation) => {
      const where = citation.page ? `, page ${citation.page}` : "";
      const url = webAddress(citation.url);
      const source = url
        ? element("a", {href: url, target: "_blank", rel: "noopener noreferrer", text: citation.source_name})
        : citation.source_id?.startsWith("file_")
          ? element("a", {
            href: `${config.api}${conversationPath()}/files/download/?file_ref=${encodeURIComponent(citation.source_id)}`,
            text: citation.source_name,
          })
          : element("span", {text: citation.source_name});
      return element("li", {}, `[${citation.number}] `, source, `${where}: “${citation.snippet}”`);
    }));
  }

  function finish(reply, status, error) {
    reply.done = true;
    reply.el.dataset.status = status;
    reply.el.querySelector(".pg-meta").textContent = error ? `${status}: ${error}` : status;
  }

  async function addDataFrame(reply, name, offset = 0, container = null) {
    const box = container || element("div", {class: "pg-frame", "data-frame": name});
    if (!container) reply.el.insertBefore(box, reply.el.querySelector(".pg-meta"));
    let rows;
    try {
      rows = await api(`${conversationPath()}/data-frames/${encodeURIComponent(name)}?offset=${offset}&limit=${FRAME_ROWS}`);
    } catch (error) {
      box.replaceChildren(element("p", {class: "errornote", text: `${name}: ${error.message}`}));
      return;
    }
    const last = Math.min(rows.offset + rows.rows.length, rows.total_rows);
    const table = element("table", {},
      element("caption", {text: `${name}: rows ${rows.total_rows ? rows.offset + 1 : 0} to ${last} of ${rows.total_rows}`}),
      element("thead", {}, element("tr", {}, ...rows.columns.map((column) => element("th", {text: column})))),
      element("tbody", {}, ...rows.rows.map((row) => element("tr", {},
        ...rows.columns.map((column) => element("td", {text: row[column] === null ? "" : String(row[column])}))))));
    const previous = element("button", {type: "button", class: "button", text: "Previous rows"});
    const next = element("button", {type: "button", class: "button", text: "Next rows"});
    previous.disabled = rows.offset === 0;
    next.disabled = last >= rows.total_rows;
    previous.onclick = () => addDataFrame(reply, name, Math.max(0, rows.offset - FRAME_ROWS), box);
    next.onclick = () => addDataFrame(reply, name, rows.offset + FRAME_ROWS, box);
    box.replaceChildren(table, element("div", {class: "pg-bar"}, previous, next));
  }

  // --- The socket ----------------------------------------------------------------------------------

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}${config.socket}?csrf=${encodeURIComponent(config.csrf_token)}`);
    state.socket = socket;
    socket.onopen = () => {
      setStatus("Connected", "open");
      send({type: "ping"}); // its pong says the server took this socket (then the retries start again at 0)
      if (state.conversationId) subscribe();
      if (state.pending) state.sending = send(state.pending); // unanswered before the socket dropped
      // After a reload or a dropped socket, go on from the last event shown.
      if (state.replies.has(state.running)) follow(state.running);
    };
    socket.onmessage = (event) => receive(JSON.parse(event.data));
    socket.onclose = (event) => {
      state.socket = null;
      if (CLOSED_FOR_GOOD.has(event.code)) {
        setStatus(`Closed (${event.code})`, "closed");
        return;
      }
      setStatus("Reconnecting…", "reconnecting");
      setTimeout(connect, Math.min(5000, 250 * 2 ** state.retries++));
    };
  }

  function send(frame) {
    if (!state.socket || state.socket.readyState !== WebSocket.OPEN) throw new Error("Not connected; retrying.");
    const requestId = `r${++state.requests}`;
    state.socket.send(JSON.stringify({
      request_id: requestId, agent_id: config.agent_id, conversation_id: state.conversationId, ...frame,
    }));
    return requestId;
  }

  function subscribe() {
    if (state.socket?.readyState === WebSocket.OPEN) send({type: "conversation.subscribe"});
  }

  function follow(id) {
    running(id);
    if (state.socket?.readyState === WebSocket.OPEN) {
      send({type: "message.join", message_id: id, after: state.replies.get(id).lastSeq});
    } // (else once the socket opens)
  }

  function running(id) {
    state.running = id;
    ui.cancel.hidden = !id;
    ui.send.disabled = Boolean(id);
    ui.root.dataset.running = id ? "yes" : "no";
  }

  function receive(frame) {
    switch (frame.type) {
      case "pong":
        state.retries = 0;
        break;
      case "ack":
        if (frame.user_message_id && frame.request_id === state.sending) { // the message sent: its reply starts
          state.pending = null;
          const line = ui.messages.querySelector("li.user:not([data-id])");
          if (line) line.dataset.id = frame.user_message_id;
          if (!state.replies.has(frame.message_id)) addReply(frame.message_id);
          running(frame.message_id);
        }
        break;
      case "event":
        onEvent(frame);
        break;
      case "reconnect": // the server process stops: a new socket (another process) joins it where this page is
        if (state.replies.has(frame.message_id)) {
          running(frame.message_id);
          state.socket?.close();
        }
        break;
      case "error":
        showError(`${frame.error.message} (${frame.status} ${frame.error.code})`);
        if (state.running === "pending" && frame.request_id === state.sending) { // refused: not stored
          state.pending = null;
          ui.messages.querySelector("li.user:not([data-id])")?.remove();
          running(null);
        }
        break;
      case "message.created": // another tab, client or process added to the conversation
        if (frame.conversation_id === state.conversationId && !ui.messages.querySelector(`[data-id="${CSS.escape(frame.message_id)}"]`)
            && !ui.messages.querySelector("li.user:not([data-id])")) {
          loadConversation().catch((error) => showError(error.message));
        }
        break;
      case "conversation.deleted":
        if (frame.conversation_id === state.conversationId) {
          useConversation(null);
          showError("This conversation was deleted.");
        }
        break;
      default: // pong, message.completed, conversation.updated: nothing to show
        break;
    }
  }

  function onEvent(frame) {
    const reply = state.replies.get(frame.message_id);
    if (!reply) return; // a reply of the conversation this page left
    const seq = Number(frame.id.slice(frame.id.lastIndexOf(":") + 1));
    if (seq <= reply.lastSeq) return; // already shown
    reply.lastSeq = seq;
    const data = frame.data;
    if ("content" in data) reply.el.querySelector(".pg-content").textContent += data.content;
    if ("thinking" in data) appendThinking(reply, data.thinking);
    if ("citations" in data) showCitations(reply, data.citations);
    if ("data_frame" in data) addDataFrame(reply, data.data_frame.name);
    if ("file" in data) {
      const link = element("a", {
        href: `${config.api}${conversationPath()}/files/download/?file_ref=${encodeURIComponent(data.file.file_ref)}`,
        text: data.file.name,
      });
      reply.el.insertBefore(element("div", {class: "pg-meta"}, "File: ", link), reply.el.querySelector(".pg-meta"));
    }
    if ("tokens" in data) reply.tokens = data.tokens;
    if ("done" in data || "error" in data) {
      finish(reply, data.status || "failed", data.error?.message || data.error || "");
      if (reply.tokens) reply.el.querySelector(".pg-meta").textContent += ` · ${reply.tokens} tokens`;
      if (state.running === frame.message_id) running(null);
    }
    reply.el.scrollIntoView({block: "end"});
  }

  // --- What the user does --------------------------------------------------------------------------

  ui.form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const content = ui.input.value.trim();
    if (!content || state.running) return;
    showError("");
    try {
      await ensureConversation();
      const attachments = state.attachments.map((file) => file.file_ref);
      state.pending = {
        type: "message.send", content, reasoning: ui.reasoning.checked, ...(attachments.length ? {attachments} : {}),
        idempotency_key: crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`,
      };
      addUserMessage(content, null, attachments);
      running("pending");
      if (state.socket?.readyState === WebSocket.OPEN) state.sending = send(state.pending); // (else on open)
      ui.input.value = "";
      state.attachments = [];
      ui.attached.replaceChildren();
    } catch (error) {
      showError(error.message);
    }
  });

  ui.input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.form.requestSubmit();
    }
  });

  ui.cancel.addEventListener("click", () => {
    if (state.running && state.running !== "pending" && state.socket?.readyState === WebSocket.OPEN) {
      send({type: "message.cancel", message_id: state.running});
    }
  });

  ui.newConversation.addEventListener("click", () => {
    if (state.conversationId && state.socket?.readyState === WebSocket.OPEN) send({type: "conversation.unsubscribe"});
    useConversation(null);
    showError("");
  });

  ui.files.addEventListener("change", async () => {
    if (!ui.files.files.length) return;
    showError("");
    const form = new FormData();
    for (const file of ui.files.files) form.append("files", file);
    ui.files.value = "";
    try {
      await ensureConversation();
      setStatus("Uploading…");
      const uploaded = await api(`${conversationPath()}/files`, {method: "POST", body: form});
      for (const file of uploaded.items) {
        state.attachments.push(file);
        ui.attached.append(element("span", {class: "pg-chip", text: file.name}));
      }
    } catch (error) {
      showError(`Upload failed: ${error.message}`);
    } finally {
      setStatus(state.socket?.readyState === WebSocket.OPEN ? "Connected" : "Reconnecting…");
    }
  });

  // --- Start ---------------------------------------------------------------------------------------

  useConversation(state.conversationId);
  loadConversation().catch((error) => showError(error.message)).finally(connect);
})();
