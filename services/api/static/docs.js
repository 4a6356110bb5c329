// The API reference page: renders /openapi.json (no inline script: the pages' CSP).
function esc(s) { return String(s).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c])); }
function resolve(spec, schema) {
  if (schema && schema.$ref) return spec.components.schemas[schema.$ref.split("/").pop()];
  return schema;
}
fetch("/openapi.json").then(r => r.json()).then(spec => {
  document.getElementById("title").textContent = spec.info.title + " " + spec.info.version;
  const out = [];
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const auth = (op.security || []).map(s => Object.keys(s)[0]).join(", ") || "public";
      let body = "";
      if (op.requestBody) {
        const schema = resolve(spec, op.requestBody.content["application/json"].schema);
        body += "<h4>Request body</h4><pre>" + esc(JSON.stringify(schema, null, 2)) + "</pre>";
      }
      if (op.parameters) {
        body += "<h4>Parameters</h4><pre>" + esc(op.parameters.map(p => p.in + " " + p.name).join("\n")) + "</pre>";
      }
      body += "<h4>Responses</h4><pre>" + esc(Object.entries(op.responses).map(([s, r]) => s + "  " + r.description).join("\n")) + "</pre>";
      out.push(`<details class="op"><summary><span class="m ${method}">${method.toUpperCase()}</span>
        <code>${esc(path)}</code><span>${esc(op.summary || "")}</span>
        <span class="lock">${esc(auth)}</span></summary><div class="body">${body}</div></details>`);
    }
  }
  document.getElementById("ops").innerHTML = out.join("");
}).catch(e => { document.getElementById("ops").textContent = "Could not load the API description: " + e; });
