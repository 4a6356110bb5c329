// The generation form, the live queue status card and the review queue.
// Plain JavaScript against the HTTP API; the API key stays in this browser's localStorage.
"use strict";

const $ = (id) => document.getElementById(id);
const TYPES = { instagram: ["reel", "story"], tiktok: ["short"], youtube: ["short"] };
const FINAL = new Set(["ready", "approved", "rejected", "failed", "canceled"]);
let models = [];
let current = null;

function key() { return localStorage.getItem("influgen.apiKey") || ""; }

async function api(method, path, body) {
  const resp = await fetch(path, {
    method, headers: { "Authorization": `Bearer ${key()}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = resp.status === 204 ? null : await resp.json();
  if (!resp.ok) { const err = new Error(data.title || resp.statusText); err.problem = data; throw err; }
  return data;
}

function text(el, value) { el.textContent = value; }

function request() {
  const tags = $("hashtags").value.split(/[\s,]+/).filter(Boolean);
  const body = {
    character_id: $("character").value, scene_description: $("scene").value,
    platform: $("platform").value, type: $("type").value,
    duration_seconds: Number($("duration").value), aspect_ratio: $("aspect").value,
    model_id: $("model").value, quality_tier: $("tier").value, hashtags: tags,
  };
  if ($("planned").value) body.planned_date = $("planned").value;
  if ($("caption").value) body.caption = $("caption").value;
  if ($("cta").value) body.cta = $("cta").value;
  return body;
}

function showErrors(problem) {
  const list = $("form-errors");
  list.replaceChildren();
  for (const e of (problem && problem.errors) || (problem ? [{ field: "", message: problem.detail || problem.title }] : [])) {
    const li = document.createElement("li");
    li.textContent = e.field ? `${e.field}: ${e.message}` : e.message;
    list.append(li);
  }
}

function fillTypes() {
  const types = TYPES[$("platform").value];
  $("type").replaceChildren(...types.map((t) => new Option(t, t)));
}

function fillTiers() {
  const model = models.find((m) => m.id === $("model").value);
  if (!model) return;
  $("tier").replaceChildren(...Object.keys(model.tiers).map((t) => new Option(t, t, false, t === "standard")));
}

let checkTimer = null;
function scheduleCheck() { clearTimeout(checkTimer); checkTimer = setTimeout(check, 250); }

async function check() {
  text($("duration-out"), $("duration").value);
  if (!key() || !$("character").value) return;
  if (!$("scene").value.trim()) { markChecklist([]); showErrors(null); text($("quote"), ""); return; }
  try {
    const result = await api("POST", "/v1/videos?dry_run=true", request());
    markChecklist(result.scene_feedback.present, result.scene_feedback.hints);
    text($("quote"), `Quote: ${result.credits.quoted} credits`);
    showErrors(null);
  } catch (err) { showErrors(err.problem); }
}

function markChecklist(present, hints = {}) {
  for (const li of $("checklist").children) {
    const ok = present.includes(li.dataset.aspect);
    li.dataset.present = ok ? "true" : "false";
    li.setAttribute("aria-label", `${li.textContent}: ${ok ? "present" : "missing"}`);
  }
  $("hints").replaceChildren(...Object.entries(hints).map(([aspect, hint]) => {
    const li = document.createElement("li"); li.textContent = `${aspect}: ${hint}`; return li;
  }));
}

async function loadWorkspace() {
  const [chars, catalog, credits] = await Promise.all([
    api("GET", "/v1/characters"), api("GET", "/v1/models"), api("GET", "/v1/credits")]);
  $("character").replaceChildren(...chars.items.map((c) => new Option(`${c.name} (${c.review_mode})`, c.id)));
  models = catalog.items;
  $("model").replaceChildren(...models.map((m) => new Option(m.id, m.id, false, m.default)));
  $("model").value = catalog.default_model;
  fillTiers();
  text($("credits"), `Credits available: ${credits.available}`);
  await loadQueue();
  scheduleCheck();
}

async function loadQueue() {
  const ready = await api("GET", "/v1/videos?status=ready&limit=20");
  $("review-queue").replaceChildren(...ready.items.map((v) => {
    const li = document.createElement("li");
    li.textContent = `${v.scene_description.slice(0, 60)}… `;
    for (const decision of ["approve", "reject"]) {
      const b = document.createElement("button");
      b.type = "button"; b.textContent = decision;
      b.addEventListener("click", async () => { await api("POST", `/v1/videos/${v.id}/review`, { decision }); await loadQueue(); });
      li.append(b);
    }
    return li;
  }));
}

function render(video) {
  text($("card-status"), video.status);
  text($("card-job"), `${video.job.state} (attempt ${video.job.attempts})`);
  text($("card-queue"), video.job.queue_position ? ` · queue position ${video.job.queue_position}` : "");
  $("card-progress").value = video.job.progress;
  const err = $("card-error");
  err.hidden = !video.job.error;
  if (video.job.error) text(err, `${video.job.error.code}: ${video.job.error.message}`);
  if (video.media) {
    $("card-media").hidden = false;
    if ($("card-video").src !== video.media.video_url) $("card-video").src = video.media.video_url;
    $("card-thumb").src = video.media.thumbnail_url;
    text($("card-facts"), `${video.media.duration_seconds} s · ${video.media.aspect_ratio} · ${video.media.width}×${video.media.height} · review: ${video.review_state}`);
  }
  $("card-review").hidden = video.status !== "ready";
}

async function follow(videoId) {
  // EventSource cannot send an Authorization header, so read the stream with fetch.
  const started = performance.now();
  const timer = setInterval(() => text($("card-elapsed"), ((performance.now() - started) / 1000).toFixed(1)), 100);
  try {
    const resp = await fetch(`/v1/videos/${videoId}/events`, { headers: { "Authorization": `Bearer ${key()}` } });
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end); buffer = buffer.slice(end + 2);
        const data = block.split("\n").find((l) => l.startsWith("data:"));
        if (!data) continue;
        const change = JSON.parse(data.slice(5));
        render({ ...current, status: change.status, review_state: change.review_state,
                 job: { ...current.job, ...change.job, queue_position: null } });
      }
    }
  } finally { clearInterval(timer); }
  current = await api("GET", `/v1/videos/${videoId}`);
  render(current);
  text($("credits"), `Credits available: ${(await api("GET", "/v1/credits")).available}`);
  await loadQueue();
}

async function review(decision) {
  current = await api("POST", `/v1/videos/${current.id}/review`, { decision });
  render(current);
  await loadQueue();
}

$("key-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  localStorage.setItem("influgen.apiKey", $("api-key").value.trim());
  try { await loadWorkspace(); showErrors(null); } catch (err) { showErrors(err.problem); }
});
$("create-character").addEventListener("click", async () => {
  try {
    await api("POST", "/v1/characters", { name: $("new-character-name").value, review_mode: $("new-character-mode").value });
    await loadWorkspace();
  } catch (err) { showErrors(err.problem); }
});
$("platform").addEventListener("change", () => { fillTypes(); scheduleCheck(); });
$("model").addEventListener("change", () => { fillTiers(); scheduleCheck(); });
for (const id of ["scene", "character", "type", "duration", "aspect", "tier", "planned", "caption", "hashtags", "cta"]) {
  $(id).addEventListener("input", scheduleCheck);
  $(id).addEventListener("change", scheduleCheck);
}
$("video-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    current = await api("POST", "/v1/videos", request());
    showErrors(null);
    $("card").hidden = false;
    $("card-media").hidden = true;
    render(current);
    await follow(current.id);
  } catch (err) { showErrors(err.problem); }
});
$("approve").addEventListener("click", () => review("approve"));
$("reject").addEventListener("click", () => review("reject"));

fillTypes();
if (key()) { $("api-key").value = key(); loadWorkspace().catch((err) => showErrors(err.problem)); }
