// run.mjs drives the built keyhole binary with the official MCP clients:
// the TypeScript SDK (stdio and streamable HTTP) and the MCP Inspector CLI.
//
// It sets up a throwaway user (HOME, XDG dirs, config, data dir) through the
// binary itself, points one http tool at a recording upstream on 127.0.0.1,
// and checks for every client: initialize works, tools/list holds exactly
// the scope's tools, an allowed call returns the upstream's data and the
// upstream got the real key, a denied call is a tool error and the upstream
// got nothing, and no byte the client received holds the secret (raw,
// base64, base64url, hex). It prints one line per check and a final
// "N passed, M failed"; it exits non-zero on any failure.
//
// Usage: node run.mjs [path/to/keyhole]   (default ../bin/keyhole)

import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const BIN = path.resolve(process.argv[2] ?? path.join(here, "..", "bin", "keyhole"));
const SCOPE = "triage";
// The scope grants these tools; the config also defines "admin", which
// no list may show.
const SCOPE_TOOLS = ["github", "issue_titles"];
// A scope whose calls wait for `keyhole access approve`.
const REVIEW_SCOPE = "review";
// Alphanumeric, so no JSON or URL escaping can hide it from the checks.
const SECRET = "ghp_" + randomBytes(18).toString("hex");
const STEP_TIMEOUT_MS = 30_000;

const ISSUES = [
  { number: 1, title: "Crash on start", state: "open", body: "stack trace here", user: { login: "ana" } },
  { number: 2, title: "Typo in README", state: "closed", body: "teh", user: { login: "bo" } },
];

// ---- results ---------------------------------------------------------------

let passed = 0;
let failed = 0;

function check(name, ok, detail = "") {
  if (ok) {
    passed++;
    console.log(`ok    ${name}`);
  } else {
    failed++;
    console.log(`FAIL  ${name}${detail ? `\n      ${detail}` : ""}`);
  }
}

function secretForms(s) {
  const b = Buffer.from(s);
  return {
    raw: s,
    base64: b.toString("base64"),
    base64url: b.toString("base64url"),
    hex: b.toString("hex"),
    // A cut-down secret is still a leak.
    middle: s.slice(4, -4),
  };
}

// leaks names the encodings of the secret found in text.
function leaks(text) {
  return Object.entries(secretForms(SECRET))
    .filter(([, f]) => text.includes(f))
    .map(([k]) => k);
}

function checkNoSecret(name, text) {
  const found = leaks(text);
  check(`${name}: no form of the secret in ${text.length} bytes`, text.length > 0 && found.length === 0,
    found.length ? `found: ${found.join(", ")}` : "nothing was captured");
}

// ---- the recording upstream -----------------------------------------------

function startUpstream() {
  const reqs = [];
  const srv = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      reqs.push({ method: req.method, url: req.url, authorization: req.headers.authorization ?? "", body });
      const json = (status, v, headers = {}) => {
        res.writeHead(status, { "content-type": "application/json", ...headers });
        res.end(JSON.stringify(v));
      };
      if (req.method === "GET" && req.url === "/repos/acme/api/issues") return json(200, ISSUES);
      if (req.method === "POST" && req.url === "/repos/acme/api/issues/1/labels") return json(200, JSON.parse(body || "{}"));
      if (req.method === "GET" && req.url === "/echo") {
        // A careless upstream that reflects the credential every way it can.
        const auth = req.headers.authorization ?? "";
        const tok = auth.replace(/^Bearer /, "");
        return json(200, { authorization: auth, b64: Buffer.from(tok).toString("base64"), hex: Buffer.from(tok).toString("hex") },
          { "x-debug-token": tok, location: `https://example.com/?token=${tok}` });
      }
      json(404, { message: "Not Found" });
    });
  });
  return new Promise((resolve) => {
    srv.listen(0, "127.0.0.1", () => resolve({ srv, reqs, url: `http://127.0.0.1:${srv.address().port}` }));
  });
}

// ---- the throwaway keyhole user --------------------------------------------

function config(upstream) {
  return `version: 1
tools:
  github:
    kind: http
    description: Issue tracker API (test upstream).
    base_url: ${upstream}
    allow_private_network: true
    credential: {secret: github_token, inject: bearer}
    timeout: 5s
  issue_titles:
    kind: http
    description: Issue numbers and titles of one repository.
    base_url: ${upstream}
    allow_private_network: true
    method: GET
    path: /repos/{owner}/{repo}/issues
    input_schema: {type: object, required: [owner, repo], properties: {owner: {type: string}, repo: {type: string}}, additionalProperties: false}
    credential: {secret: github_token, inject: bearer}
    response: {fields: ["#.number", "#.title"]}
  admin:
    kind: http
    base_url: ${upstream}
    allow_private_network: true
    credential: {secret: github_token, inject: bearer}
scopes:
  ${SCOPE}:
    description: Read acme/api issues; nothing else.
    ttl: 1h
    grants:
      - tool: github
        methods: [GET]
        paths: [/repos/acme/api/issues, /repos/acme/api/issues/*, /echo]
      - tool: issue_titles
        paths: [/repos/acme/*/issues]
  ${REVIEW_SCOPE}:
    description: Label acme/api issues, each label once a person approves it.
    ttl: 1h
    approval: {wait: 5m}
    grants:
      - {tool: github, methods: [POST], paths: [/repos/acme/api/issues/*/labels], approve: true}
`;
}

function makeHome(upstream) {
  const dir = mkdtempSync(path.join(tmpdir(), "keyhole-clients-"));
  const env = {
    HOME: dir,
    XDG_CONFIG_HOME: path.join(dir, "config"),
    XDG_DATA_HOME: path.join(dir, "data"),
    KEYHOLE_CONFIG: path.join(dir, "keyhole.yaml"),
    PATH: process.env.PATH ?? "/usr/bin:/bin",
  };
  const kh = (args, input = "") => {
    const r = spawnSync(BIN, args, { cwd: dir, env, input, encoding: "utf8", timeout: STEP_TIMEOUT_MS });
    if (r.status !== 0) throw new Error(`keyhole ${args.join(" ")}: exit ${r.status}: ${r.stderr}`);
    return r;
  };
  kh(["init"]);
  writeFileSync(env.KEYHOLE_CONFIG, config(upstream));
  kh(["secret", "set", "github_token"], SECRET);
  kh(["config", "check"]);
  return { dir, env, kh };
}

// ---- capture -----------------------------------------------------------------

// captureMessages records every JSON-RPC message the transport hands the
// client, whatever the client does with it.
function captureMessages(transport, sink) {
  let handler;
  Object.defineProperty(transport, "onmessage", {
    configurable: true,
    get: () => handler,
    set: (fn) => {
      handler = fn && ((msg, extra) => {
        sink.push(JSON.stringify(msg));
        return fn(msg, extra);
      });
    },
  });
}

// capturingFetch is fetch that also keeps every byte of every response body.
function capturingFetch(sink) {
  return async (url, init) => {
    const res = await fetch(url, init);
    sink.push(`HTTP ${res.status}\n${[...res.headers].map(([k, v]) => `${k}: ${v}`).join("\n")}\n\n`);
    if (!res.body) return res;
    const [mine, copy] = res.body.tee();
    (async () => {
      const dec = new TextDecoder();
      for await (const chunk of copy) sink.push(dec.decode(chunk, { stream: true }));
    })().catch(() => {});
    return new Response(mine, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
}

// ---- the SDK client checks ---------------------------------------------------

function text(result) {
  return (result.content ?? []).filter((c) => c.type === "text").map((c) => c.text).join("\n");
}

async function sdkChecks(label, client, upstream, received) {
  const server = client.getServerVersion();
  check(`${label}: initialize (server ${server?.name} ${server?.version})`,
    server?.name === "keyhole" && client.getServerCapabilities()?.tools !== undefined,
    JSON.stringify({ server, caps: client.getServerCapabilities() }));

  const { tools } = await client.listTools();
  const names = tools.map((t) => t.name).sort();
  check(`${label}: tools/list is exactly the scope's tools`, JSON.stringify(names) === JSON.stringify(SCOPE_TOOLS),
    `got ${JSON.stringify(names)}`);

  let before = upstream.reqs.length;
  let res = await client.callTool({ name: "github", arguments: { method: "GET", path: "/repos/acme/api/issues" } });
  let got = upstream.reqs.slice(before);
  check(`${label}: allowed call returns the upstream's data`,
    !res.isError && res.structuredContent?.status === 200 &&
      JSON.stringify(res.structuredContent?.body) === JSON.stringify(ISSUES) && text(res).includes("Crash on start"),
    JSON.stringify(res).slice(0, 400));
  check(`${label}: upstream got the real key, once`,
    got.length === 1 && got[0].method === "GET" && got[0].url === "/repos/acme/api/issues" && got[0].authorization === `Bearer ${SECRET}`,
    `upstream saw ${got.length} request(s): ${JSON.stringify(got.map((r) => `${r.method} ${r.url}`))}`);

  res = await client.callTool({ name: "issue_titles", arguments: { owner: "acme", repo: "api" } });
  const want = ISSUES.map(({ number, title }) => ({ number, title }));
  check(`${label}: templated call returns only response.fields`,
    !res.isError && JSON.stringify(res.structuredContent?.body) === JSON.stringify(want),
    JSON.stringify(res.structuredContent ?? res).slice(0, 400));

  before = upstream.reqs.length;
  res = await client.callTool({ name: "github", arguments: { method: "GET", path: "/echo" } });
  got = upstream.reqs.slice(before);
  check(`${label}: an upstream that echoes the key is scrubbed`,
    !res.isError && got.length === 1 && got[0].authorization === `Bearer ${SECRET}` && leaks(JSON.stringify(res)).length === 0,
    `leaks: ${leaks(JSON.stringify(res))}`);

  for (const [what, name, args] of [
    ["DELETE outside the grant", "github", { method: "DELETE", path: "/repos/acme/api/issues/1" }],
    ["path outside the grant", "github", { method: "GET", path: "/repos/acme/secrets/issues" }],
  ]) {
    before = upstream.reqs.length;
    res = await client.callTool({ name, arguments: args });
    check(`${label}: denied call (${what}) is a tool error and the upstream got nothing`,
      res.isError === true && text(res).includes("not granted") && upstream.reqs.length === before,
      `isError=${res.isError} upstream+${upstream.reqs.length - before} text=${text(res)}`);
  }

  // A tool the scope does not grant is not registered for the session: the
  // server answers with a JSON-RPC error (unknown tool), never a call.
  before = upstream.reqs.length;
  const refused = await client.callTool({ name: "admin", arguments: { method: "GET", path: "/repos/acme/api/issues" } })
    .then((r) => `a result (isError=${r.isError})`, (err) => err);
  check(`${label}: a tool outside the scope is refused and the upstream got nothing`,
    refused instanceof Error && /not found/.test(refused.message) && upstream.reqs.length === before,
    `got ${refused}, upstream+${upstream.reqs.length - before}`);
  checkNoSecret(`${label}: every message received`, received.join("\n"));
}

async function withTimeout(p, what) {
  let timer;
  const t = new Promise((_, rej) => (timer = setTimeout(() => rej(new Error(`${what}: timed out`)), STEP_TIMEOUT_MS)));
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

async function sdkStdio(home, upstream) {
  const transport = new StdioClientTransport({
    command: BIN,
    args: ["stdio", "--standalone", "--scope", SCOPE],
    env: home.env,
    cwd: home.dir,
    stderr: "pipe",
  });
  let logs = "";
  transport.stderr?.on("data", (c) => (logs += c));
  const received = [];
  captureMessages(transport, received);
  const client = new Client({ name: "keyhole-client-tests", version: "1.0.0" });
  await withTimeout(client.connect(transport), "sdk stdio connect");
  try {
    await withTimeout(sdkChecks("sdk/stdio", client, upstream, received), "sdk stdio checks");
  } finally {
    await client.close();
  }
  checkNoSecret("sdk/stdio: keyhole's stderr", logs);
}

async function sdkHTTP(mcpURL, token, upstream) {
  const received = [];
  const transport = new StreamableHTTPClientTransport(new URL(mcpURL), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
    fetch: capturingFetch(received),
  });
  const client = new Client({ name: "keyhole-client-tests", version: "1.0.0" });
  await withTimeout(client.connect(transport), "sdk http connect");
  try {
    await withTimeout(sdkChecks("sdk/http", client, upstream, received), "sdk http checks");
  } finally {
    await client.close();
  }

  const res = await fetch(mcpURL, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json, text/event-stream" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "x", version: "1" } } }),
  });
  check("http: a request without a token is refused with 401", res.status === 401, `got ${res.status}`);
}

// sdkAccess: a call that needs a person's approval is held while the SDK
// waits; `keyhole access approve` lets it through, exactly as asked, once.
async function sdkAccess(home, mcpURL, upstream) {
  const token = home.kh(["session", "new", "--scope", REVIEW_SCOPE]).stdout.trim();
  const received = [];
  const transport = new StreamableHTTPClientTransport(new URL(mcpURL), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
    fetch: capturingFetch(received),
  });
  const client = new Client({ name: "keyhole-client-tests", version: "1.0.0" });
  await withTimeout(client.connect(transport), "sdk access connect");
  try {
    const before = upstream.reqs.length;
    const args = { method: "POST", path: "/repos/acme/api/issues/1/labels", body: { labels: ["bug"] } };
    // Settled either way, so a failure is reported by a check, not thrown.
    const held = client.callTool({ name: "github", arguments: args }).then((res) => ({ res }), (err) => ({ err }));
    let req;
    for (let i = 0; i < 300 && req === undefined; i++) {
      await new Promise((r) => setTimeout(r, 100));
      const out = home.kh(["access", "list", "--json"]).stdout;
      req = out.split("\n").filter(Boolean).map((l) => JSON.parse(l)).find((r) => r.waiting >= 1);
    }
    check("sdk/access: the call is held as an access request and the upstream got nothing",
      req !== undefined && upstream.reqs.length === before, JSON.stringify(req ?? null).slice(0, 300));
    if (req === undefined) return;
    home.kh(["access", "approve", req.id]);
    const { res, err } = await withTimeout(held, "sdk access held call");
    const got = upstream.reqs.slice(before);
    check("sdk/access: after keyhole access approve the held call completes once, exactly as asked",
      err === undefined && !res.isError && res.structuredContent?.status === 200 && got.length === 1 &&
        got[0].method === "POST" && got[0].url === args.path && got[0].body === JSON.stringify(args.body),
      `err=${err} isError=${res?.isError} upstream saw ${JSON.stringify(got.map((r) => `${r.method} ${r.url} ${r.body}`))}`);
    const used = home.kh(["access", "list", "--all", "--json"]).stdout;
    check("sdk/access: the approval was used", used.includes(`"id":"${req.id}","state":"used"`), used.slice(0, 300));
    checkNoSecret("sdk/access: every message received", received.join("\n"));
  } finally {
    await client.close();
  }
}

// ---- the Inspector CLI ------------------------------------------------------------

// inspector runs the Inspector CLI. It must not block: the upstream it
// reaches through keyhole is served by this very process.
function inspector(home, target, args) {
  const env = Object.entries(home.env).flatMap(([k, v]) => ["-e", `${k}=${v}`]);
  const isStdio = target[0] === BIN;
  const argv = ["--no-install", "@modelcontextprotocol/inspector", "--cli", ...(isStdio ? env : []), ...target, ...args];
  return new Promise((resolve) => {
    const proc = spawn("npx", argv, { cwd: here, env: { ...home.env, npm_config_update_notifier: "false" } });
    let stdout = "";
    let stderr = "";
    proc.stdout.on("data", (c) => (stdout += c));
    proc.stderr.on("data", (c) => (stderr += c));
    const timer = setTimeout(() => proc.kill("SIGKILL"), STEP_TIMEOUT_MS);
    proc.on("close", (status) => {
      clearTimeout(timer);
      let json;
      try {
        json = JSON.parse(stdout);
      } catch {
        json = undefined;
      }
      resolve({ status, stdout, stderr, json });
    });
  });
}

async function inspectorChecks(label, home, target, upstream) {
  let r = await inspector(home, target, ["--method", "tools/list"]);
  const names = (r.json?.tools ?? []).map((t) => t.name).sort();
  check(`${label}: tools/list is exactly the scope's tools`, r.status === 0 && JSON.stringify(names) === JSON.stringify(SCOPE_TOOLS),
    `exit ${r.status} stdout=${r.stdout.slice(0, 300)} stderr=${r.stderr.slice(-300)}`);
  let all = r.stdout;

  let before = upstream.reqs.length;
  r = await inspector(home, target, ["--method", "tools/call", "--tool-name", "issue_titles", "--tool-arg", "owner=acme", "--tool-arg", "repo=api"]);
  let got = upstream.reqs.slice(before);
  check(`${label}: allowed tools/call returns the projected upstream data`,
    r.status === 0 && r.json?.isError !== true &&
      JSON.stringify(r.json?.structuredContent?.body) === JSON.stringify(ISSUES.map(({ number, title }) => ({ number, title }))),
    `exit ${r.status} stdout=${r.stdout.slice(0, 400)} stderr=${r.stderr.slice(-300)}`);
  check(`${label}: upstream got the real key`, got.length === 1 && got[0].authorization === `Bearer ${SECRET}`,
    `upstream saw ${got.length} request(s)`);
  all += r.stdout + r.stderr;

  before = upstream.reqs.length;
  r = await inspector(home, target, ["--method", "tools/call", "--tool-name", "github", "--tool-arg", "method=DELETE", "--tool-arg", "path=/repos/acme/api/issues/1"]);
  check(`${label}: denied tools/call is isError and the upstream got nothing`,
    r.json?.isError === true && upstream.reqs.length === before,
    `exit ${r.status} upstream+${upstream.reqs.length - before} stdout=${r.stdout.slice(0, 400)} stderr=${r.stderr.slice(-300)}`);
  all += r.stdout + r.stderr;

  r = await inspector(home, target, ["--method", "tools/call", "--tool-name", "github", "--tool-arg", "method=GET", "--tool-arg", "path=/echo"]);
  check(`${label}: echoing upstream call succeeds`, r.json?.isError !== true && r.json?.structuredContent?.status === 200,
    `exit ${r.status} stdout=${r.stdout.slice(0, 400)}`);
  all += r.stdout + r.stderr;
  checkNoSecret(`${label}: all its output`, all);
}

// ---- keyhole serve --------------------------------------------------------------

// startServe runs `keyhole serve --http 127.0.0.1:0` and resolves with the
// process, its MCP URL (from its JSON log) and a function returning its
// stderr so far.
function startServe(home) {
  const proc = spawn(BIN, ["--log-format", "json", "serve", "--http", "127.0.0.1:0"], { cwd: home.dir, env: home.env, stdio: ["ignore", "ignore", "pipe"] });
  let logs = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`keyhole serve did not report its URL: ${logs}`)), STEP_TIMEOUT_MS);
    proc.on("exit", (code) => reject(new Error(`keyhole serve exited ${code}: ${logs}`)));
    proc.stderr.on("data", (c) => {
      logs += c;
      for (const line of logs.split("\n")) {
        try {
          const rec = JSON.parse(line);
          if (rec.url) {
            clearTimeout(timer);
            resolve({ proc, url: rec.url, logs: () => logs });
          }
        } catch {
          // a partial line; wait for the rest
        }
      }
    });
  });
}

async function stopServe(serve) {
  if (serve.proc.exitCode !== null) return;
  const exited = new Promise((r) => serve.proc.once("exit", r));
  serve.proc.kill("SIGTERM");
  await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
  if (serve.proc.exitCode === null) serve.proc.kill("SIGKILL");
}

// ---- main ------------------------------------------------------------------------

async function main() {
  const upstream = await startUpstream();
  const home = makeHome(upstream.url);
  let serve;
  try {
    // stdio --standalone owns the data dir, so the stdio clients run
    // before the broker does.
    await sdkStdio(home, upstream);
    await inspectorChecks("inspector/stdio", home, [BIN, "stdio", "--standalone", "--scope", SCOPE], upstream);

    serve = await startServe(home);
    const token = home.kh(["session", "new", "--scope", SCOPE]).stdout.trim();
    check("session new printed a phantom token", token.startsWith("khs_") && leaks(token).length === 0, token.slice(0, 8));
    await sdkHTTP(serve.url, token, upstream);
    await sdkAccess(home, serve.url, upstream);
    await inspectorChecks("inspector/http", home, [serve.url, "--transport", "http", "--header", `Authorization: Bearer ${token}`], upstream);

    await stopServe(serve);
    checkNoSecret("keyhole serve's stderr", serve.logs());
    const audit = home.kh(["audit", "export"]).stdout;
    checkNoSecret("the audit export", audit);
  } catch (err) {
    check("run completed", false, err?.stack ?? String(err));
  } finally {
    if (serve) await stopServe(serve);
    upstream.srv.close();
    rmSync(home.dir, { recursive: true, force: true });
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exitCode = failed === 0 ? 0 : 1;
}

await main();
