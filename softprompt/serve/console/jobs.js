// The console's Jobs panel: upload a file, start a fine-tuning job, watch its loss and dev metrics, cancel it, and
// use its task once it is served. Over OpenAI's /v1/files and /v1/fine_tuning/jobs routes only (console.js: api).
"use strict";

const jobs = { selected: null, list: [] };

function jobsStatus(text, failed = false) {
  $("#jobs-status").textContent = text;
  $("#jobs-status").className = failed ? "error" : "";
}

async function jobsAction(action) {
  try {
    jobsStatus(await action());
    await refreshJobs();
  } catch (error) {
    jobsStatus(error.message, true);
  }
}

async function loadFiles() {
  const files = (await api("/v1/files")).data;
  const options = files.map((f) => new Option(`${f.filename} (${f.status_details}, ${f.id})`, f.id));
  for (const [select, blank] of [[$("#job-training"), false], [$("#job-validation"), true]]) {
    const chosen = select.value;
    select.replaceChildren(...(blank ? [new Option("none", "")] : []), ...options.map((o) => o.cloneNode(true)));
    if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
  }
}

function lastLoss(events) {
  const step = events.find((e) => e.type === "metrics" && e.data && "train_loss" in e.data);
  return step ? step.data.train_loss.toFixed(4) : "-";
}

async function refreshJobs() {
  jobs.list = (await api("/v1/fine_tuning/jobs?limit=100")).data;
  const body = $("#jobs tbody");
  body.replaceChildren();
  for (const job of jobs.list) {
    const row = body.insertRow();
    row.dataset.job = job.id;
    row.className = job.id === jobs.selected ? "selected" : "";
    cell(row, job.id, true);
    cell(row, job.status);
    const steps = job.softprompt.steps;
    cell(row, steps.total ? `${steps.done} / ${steps.total}` : "-");
    cell(row, job.id === jobs.selected ? jobs.loss || "-" : "-");
    cell(row, job.fine_tuned_model || job.softprompt.task, true);
    const actions = row.insertCell();
    const button = (text, handler) => {
      const el = document.createElement("button");
      el.type = "button";
      el.textContent = text;
      el.addEventListener("click", (event) => { event.stopPropagation(); handler(); });
      actions.appendChild(el);
    };
    if (job.status === "queued" || job.status === "running") button("cancel", () => cancelJob(job.id));
    if (job.status === "succeeded") button("use", () => useTask(job.fine_tuned_model));
    row.addEventListener("click", () => { jobs.selected = job.id; refreshJobs(); });
  }
  if (jobs.selected) await showJob(jobs.selected);
}

// The selected job: its training loss as a curve, and its events (steps, evaluations, status), newest first.
async function showJob(id) {
  const events = (await api(`/v1/fine_tuning/jobs/${id}/events?limit=1000`)).data;
  jobs.loss = lastLoss(events);
  $("#job-detail").hidden = false;
  $("#job-title").textContent = id;
  const losses = events.filter((e) => e.data && "train_loss" in e.data).reverse().map((e) => e.data.train_loss);
  const top = Math.max(...losses, 1e-9);
  const points = losses.map((loss, i) => `${(300 * i / Math.max(1, losses.length - 1)).toFixed(1)},${(58 - 56 * loss / top).toFixed(1)}`);
  $("#job-curve polyline").setAttribute("points", points.join(" "));
  $("#job-events").replaceChildren(...events.slice(0, 50).map((e) => {
    const item = document.createElement("li");
    item.textContent = e.message;
    item.className = e.level === "error" ? "error" : "";
    return item;
  }));
  const shown = $(`#jobs tbody tr[data-job="${id}"]`);
  if (shown) shown.cells[3].textContent = jobs.loss;
}

function cancelJob(id) {
  jobsAction(async () => {
    const job = await api(`/v1/fine_tuning/jobs/${id}/cancel`, { method: "POST", admin: true, headers: adminHeaders() });
    return `${job.id}: ${job.status === "cancelled" ? "cancelled" : "cancelling at its next step"}`;
  });
}

function useTask(name) {
  loadTasks().then(() => {
    $("#task").value = name;
    $("#try-section").scrollIntoView();
  }).catch((error) => showError(error.message));
}

$("#file-form").addEventListener("submit", (event) => {
  event.preventDefault();
  jobsAction(async () => {
    const form = new FormData();
    form.append("purpose", "fine-tune");
    form.append("file", $("#job-file").files[0]);
    const file = await api("/v1/files", { method: "POST", admin: true, headers: adminHeaders(), body: form });
    await loadFiles();
    $("#job-training").value = file.id;
    return `uploaded ${file.filename}: ${file.id} (${file.status_details})`;
  });
});

$("#job-form").addEventListener("submit", (event) => {
  event.preventDefault();
  jobsAction(async () => {
    const text = $("#job-recipe").value.trim();
    let recipe;
    try { recipe = text ? JSON.parse(text) : undefined; } catch (_) { throw new Error("recipe: not JSON"); }
    const body = {
      model: $("#job-model").value.trim(), training_file: $("#job-training").value, softprompt: recipe,
      validation_file: $("#job-validation").value || undefined, suffix: $("#job-suffix").value.trim() || undefined,
      hyperparameters: { n_epochs: Number($("#job-epochs").value), batch_size: Number($("#job-batch").value) },
    };
    const job = await api("/v1/fine_tuning/jobs", {
      method: "POST", admin: true, headers: adminHeaders({ "Content-Type": "application/json" }), body: JSON.stringify(body),
    });
    jobs.selected = job.id;
    return `started ${job.id}: ${job.softprompt.steps.total} steps, publishes ${job.softprompt.task}`;
  });
});

async function pollJobs() {
  try {
    if (!$("#job-model").value && state.tasks.length) $("#job-model").value = state.tasks[0].base_model;
    await refreshJobs();
    const done = jobs.list.filter((job) => job.status === "succeeded").map((job) => job.fine_tuned_model);
    if (done.some((name) => !state.tasks.some((task) => task.name === name))) await loadTasks();
  } catch (_) { /* the page's other parts report errors */ }
}

loadFiles().catch(() => {});
pollJobs();
setInterval(pollJobs, 2000);
