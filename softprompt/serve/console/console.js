// The softprompt console: tasks, a try-it form, live traffic and admin uploads, over the public HTTP API only.
"use strict";

const $ = (selector) => document.querySelector(selector);
const state = { key: sessionStorage.getItem("softprompt-api-key") || "", tasks: [], previous: null };

// The one line an error answer carries: `{"error": "..."}`, or OpenAI's `{"error": {"message": "..."}}`.
function errorLine(body, status) {
  if (body && typeof body.error === "string") return body.error;
  if (body && body.error && typeof body.error.message === "string") return body.error.message;
  return `HTTP ${status}`;
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.key && !headers.Authorization) headers.Authorization = "Bearer " + state.key;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  const text = await response.text();
  let body = text;
  try { body = JSON.parse(text); } catch (_) { /* /metrics is text */ }
  if (response.status === 401 && !options.admin) $("#key-form").hidden = false;
  if (!response.ok) throw new Error(errorLine(body, response.status));
  return body;
}

function showError(text) {
  $("#error").textContent = text || "";
  $("#error").hidden = !text;
}

function cell(row, text, code = false) {
  const td = row.insertCell();
  if (code) {
    const el = document.createElement("code");
    el.textContent = text;
    td.appendChild(el);
  } else {
    td.textContent = text;
  }
}

async function loadTasks() {
  state.tasks = await api("/v1/tasks");
  const body = $("#tasks tbody");
  body.replaceChildren();
  for (const task of state.tasks) {
    const row = body.insertRow();
    row.dataset.task = task.name;
    cell(row, task.name);
    cell(row, task.base_model);
    cell(row, task.kind === "text" ? "(generates text)" : task.labels.join(", "));
    cell(row, task.template, true);
    cell(row, String(task.num_virtual_tokens));
    cell(row, task.prompt_version, true);
  }
  for (const select of [$("#task"), $("#delete-name")]) {
    const chosen = select.value;
    select.replaceChildren(...state.tasks.map((task) => new Option(task.name, task.name)));
    if (state.tasks.some((task) => task.name === chosen)) select.value = chosen;
  }
}

function inputs() {
  // One input per line; a line that is a JSON object is a row of several fields ({"a": ..., "b": ...}).
  return $("#inputs").value.split("\n").map((line) => line.trim()).filter((line) => line).map((line) => {
    if (line.startsWith("{")) {
      try { return JSON.parse(line); } catch (_) { /* a text that starts with a brace */ }
    }
    return line;
  });
}

function resultBox(input) {
  const box = document.createElement("div");
  box.className = "result";
  const shown = document.createElement("div");
  shown.className = "input";
  shown.textContent = typeof input === "string" ? input : JSON.stringify(input);
  box.appendChild(shown);
  $("#results").appendChild(box);
  return box;
}

// Labels as bars: each label's probability among the labels, the softmax of their log-likelihoods.
function showLabel(box, label, scores) {
  box.dataset.label = label;
  const top = document.createElement("div");
  top.className = "top";
  top.textContent = label;
  box.appendChild(top);
  const most = Math.max(...Object.values(scores));
  const weights = Object.fromEntries(Object.entries(scores).map(([l, s]) => [l, Math.exp(s - most)]));
  const total = Object.values(weights).reduce((a, b) => a + b, 0);
  for (const [name, weight] of Object.entries(weights)) {
    const bar = document.createElement("div");
    bar.className = name === label ? "bar top-label" : "bar";
    const p = weight / total;
    bar.innerHTML = "<span></span><div><div class='fill'></div></div><span></span>";
    bar.children[0].textContent = name;
    bar.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    bar.children[2].textContent = p.toFixed(3);
    box.appendChild(bar);
  }
}

// The task's answer to each row: its label among the labels, or the text a text-to-text task generates.
async function predict() {
  showError("");
  $("#results").replaceChildren();
  const rows = inputs();
  const task = state.tasks.find((t) => t.name === $("#task").value);
  const generates = Boolean(task && task.kind === "text");
  try {
    const answer = await api("/v1/predict", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(Object.assign({ task: $("#task").value, rows }, generates ? {} : { return_scores: true })),
    });
    rows.forEach((row, i) => {
      const box = resultBox(row);
      if (answer.outputs) {
        const text = document.createElement("pre");
        text.className = "prediction";
        text.textContent = answer.outputs[i].text;
        box.appendChild(text);
      } else {
        showLabel(box, answer.labels[i], answer.scores[i]);
      }
    });
  } catch (error) {
    showError(error.message);
  }
}

async function complete() {
  showError("");
  $("#results").replaceChildren();
  const prompts = inputs().map((row) => (typeof row === "string" ? row : JSON.stringify(row)));
  try {
    const answer = await api("/v1/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        model: $("#task").value, prompt: prompts, max_tokens: Number($("#max-tokens").value), temperature: 0,
      }),
    });
    for (const choice of answer.choices) {
      const box = resultBox(prompts[choice.index]);
      const text = document.createElement("pre");
      text.className = "completion";
      text.textContent = choice.text;
      box.appendChild(text);
    }
  } catch (error) {
    showError(error.message);
  }
}

// Prometheus text -> [{name, labels, value}].
function samples(text) {
  const out = [];
  for (const line of text.split("\n")) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$/.exec(line);
    if (!match) continue;
    const labels = {};
    for (const pair of (match[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
    out.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return out;
}

// A quantile of a cumulative histogram (the upper bound of the bucket that holds it).
function quantile(buckets, q) {
  const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (!total) return null;
  const found = buckets.find(([, count]) => count >= q * total);
  return found ? found[0] : null;
}

function seconds(value) {
  if (value === null) return "-";
  return value === Infinity ? "> 30 s" : value < 1 ? `${Math.round(value * 1000)} ms` : `${value} s`;
}

const MODEL_ROUTES = ["/v1/predict", "/v1/classify", "/v1/completions"];

async function refreshLive() {
  let text;
  try {
    text = await api("/metrics");
  } catch (_) {
    return; // the figures stay as they were; the page's other parts report errors
  }
  const all = samples(text);
  const sum = (name, keep = () => true) => all.filter((s) => s.name === name && keep(s)).reduce((a, s) => a + s.value, 0);
  const now = performance.now() / 1000;
  const requests = sum("softprompt_requests_total", (s) => MODEL_ROUTES.includes(s.labels.endpoint));
  if (state.previous) {
    const rate = (requests - state.previous.requests) / (now - state.previous.at);
    $("#rps").textContent = rate.toFixed(2);
  }
  state.previous = { requests, at: now };
  const byBound = new Map();
  for (const s of all.filter((s) => s.name === "softprompt_request_seconds_bucket" && MODEL_ROUTES.includes(s.labels.endpoint))) {
    const bound = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le);
    byBound.set(bound, (byBound.get(bound) || 0) + s.value);
  }
  const latency = [...byBound.entries()].sort((a, b) => a[0] - b[0]);
  $("#latency").textContent = `${seconds(quantile(latency, 0.5))} / ${seconds(quantile(latency, 0.99))}`;
  $("#cache-hits").textContent = String(sum("softprompt_prompt_cache_hits"));
  $("#queue").textContent = String(sum("softprompt_queue_depth"));
  const rows = all.filter((s) => s.name === "softprompt_batch_rows_bucket")
    .map((s) => [s.labels.le === "+Inf" ? Infinity : Number(s.labels.le), s.value]).sort((a, b) => a[0] - b[0]);
  const most = Math.max(1, ...rows.map(([, count], i) => count - (i ? rows[i - 1][1] : 0)));
  $("#batch-sizes").replaceChildren(...rows.map(([bound, count], i) => {
    const inBucket = count - (i ? rows[i - 1][1] : 0);
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.innerHTML = "<span></span><div><div class='fill'></div></div><span></span>";
    bar.children[0].textContent = bound === Infinity ? "more" : `<= ${bound}`;
    bar.querySelector(".fill").style.width = `${(100 * inBucket / most).toFixed(1)}%`;
    bar.children[2].textContent = String(inBucket);
    return bar;
  }));
}

function adminHeaders(extra = {}) {
  return Object.assign({ Authorization: "Bearer " + $("#admin-token").value }, extra);
}

async function admin(action) {
  $("#admin-status").textContent = "";
  $("#admin-status").className = "";
  try {
    $("#admin-status").textContent = await action();
    await loadTasks();
  } catch (error) {
    $("#admin-status").textContent = error.message;
    $("#admin-status").className = "error";
  }
}

$("#predict").addEventListener("click", predict);
$("#complete").addEventListener("click", complete);
$("#admin-token").addEventListener("input", () => { $("#admin").hidden = !$("#admin-token").value; });
$("#upload-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("#upload-name").value.trim();
  admin(async () => {
    const task = await api(`/v1/tasks/${encodeURIComponent(name)}`, {
      method: "PUT", admin: true, headers: adminHeaders({ "Content-Type": "application/zip" }),
      body: $("#upload-file").files[0],
    });
    return `uploaded ${task.name} (prompt version ${task.prompt_version})`;
  });
});
$("#delete-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("#delete-name").value;
  admin(async () => {
    await api(`/v1/tasks/${encodeURIComponent(name)}`, { method: "DELETE", admin: true, headers: adminHeaders() });
    return `deleted ${name}`;
  });
});
$("#key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.key = $("#api-key").value;
  sessionStorage.setItem("softprompt-api-key", state.key);
  $("#key-form").hidden = true;
  showError("");
  loadTasks().catch((error) => showError(error.message));
});

loadTasks().catch((error) => showError(error.message));
refreshLive();
setInterval(refreshLive, 3000);
