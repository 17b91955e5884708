// Live test of files/app/main.py under real uvicorn, started the way the
// systemd unit does it: through files/scripts/run-app.sh.
import http from "node:http";
import net from "node:net";
import { readFileSync } from "node:fs";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import {
  APP_DIR,
  SYSTEM_PYTHON,
  freePort,
  freePorts,
  httpJson,
  httpRequest,
  script,
  startProcess,
  stopAll,
  waitForHttp,
  type StartedProcess,
} from "../helpers/proc";

interface Health {
  status: string;
  version: string;
  port: number | null;
}
interface WhoAmI {
  client: string | null;
  scheme: string;
  host: string | null;
  /** The address the answering uvicorn listens on. */
  server: string | null;
  forwarded: Record<"x-forwarded-for" | "x-forwarded-proto" | "x-real-ip", string | null>;
}
interface Stats {
  connections: number;
  requests: number;
}
interface TokenResponse {
  access_token: string;
  token_type: string;
  expires_in: number;
  username: string | null;
}

const VERSION = "9.9.9-test";
let trustedPort = 0; // FORWARDED_ALLOW_IPS=127.0.0.1, FASTAPI_EDGE_STATS=1
let untrustedPort = 0; // FORWARDED_ALLOW_IPS=10.255.255.1, stats off
let trusted: StartedProcess;
let pycache = "";

function appEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  return {
    ...process.env,
    APP_MODULE: "main:app",
    APP_DIR,
    PYTHON: SYSTEM_PYTHON,
    PYTHONPYCACHEPREFIX: pycache,
    APP_VERSION: VERSION,
    ...extra,
  };
}

function base(port: number): string {
  return `http://127.0.0.1:${port}`;
}

beforeAll(async () => {
  pycache = mkdtempSync(path.join(os.tmpdir(), "fastapi-edge-pycache-"));
  [trustedPort, untrustedPort] = await freePorts(2);
  trusted = startProcess(script("run-app.sh"), [String(trustedPort)], {
    env: appEnv({ FORWARDED_ALLOW_IPS: "127.0.0.1", FASTAPI_EDGE_STATS: "1" }),
  });
  const untrusted = startProcess(script("run-app.sh"), [String(untrustedPort)], {
    env: appEnv({ FORWARDED_ALLOW_IPS: "10.255.255.1" }),
  });
  await Promise.all([
    waitForHttp(`${base(trustedPort)}/healthz`, 20_000, 200, trusted),
    waitForHttp(`${base(untrustedPort)}/healthz`, 20_000, 200, untrusted),
  ]);
});

afterAll(async () => {
  await stopAll();
  if (pycache !== "") rmSync(pycache, { recursive: true, force: true });
});

describe("run-app.sh + main.py under uvicorn", () => {
  it("GET /healthz reports status, APP_VERSION and the port", async () => {
    const { status, json } = await httpJson<Health>(`${base(trustedPort)}/healthz`);
    expect(status).toBe(200);
    expect(json).toEqual({ status: "ok", version: VERSION, port: trustedPort });
  });

  it("GET /api/version and /api/hello", async () => {
    expect((await httpJson<{ version: string }>(`${base(trustedPort)}/api/version`)).json).toEqual({ version: VERSION });
    const hello = await httpJson<{ message: string; version: string }>(`${base(trustedPort)}/api/hello?name=edge`);
    expect(hello.status).toBe(200);
    expect(hello.json.message).toBe("hello, edge");
    expect(hello.json.version).toBe(VERSION);
  });

  it("does not log access lines (--no-access-log)", async () => {
    await httpRequest(`${base(trustedPort)}/api/hello`);
    expect(trusted.output()).not.toMatch(/GET \/api\/hello/);
  });

  it("GET /api/whoami without proxy headers", async () => {
    const { json } = await httpJson<WhoAmI>(`${base(trustedPort)}/api/whoami`);
    expect(json).toEqual({
      client: "127.0.0.1",
      scheme: "http",
      host: `127.0.0.1:${trustedPort}`,
      server: `127.0.0.1:${trustedPort}`,
      forwarded: { "x-forwarded-for": null, "x-forwarded-proto": null, "x-real-ip": null },
    });
  });

  it("honours X-Forwarded-For/-Proto from a trusted proxy (127.0.0.1)", async () => {
    const headers = {
      "X-Forwarded-For": "203.0.113.9",
      "X-Forwarded-Proto": "https",
      "X-Real-IP": "203.0.113.9",
      Host: "edge.example.com",
    };
    const { json } = await httpJson<WhoAmI>(`${base(trustedPort)}/api/whoami`, { headers });
    expect(json.client).toBe("203.0.113.9");
    expect(json.scheme).toBe("https");
    expect(json.host).toBe("edge.example.com");
    expect(json.forwarded).toEqual({ "x-forwarded-for": "203.0.113.9", "x-forwarded-proto": "https", "x-real-ip": "203.0.113.9" });
  });

  it("ignores proxy headers when 127.0.0.1 is not in FORWARDED_ALLOW_IPS", async () => {
    const headers = { "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https" };
    const { json } = await httpJson<WhoAmI>(`${base(untrustedPort)}/api/whoami`, { headers });
    expect(json.client).toBe("127.0.0.1");
    expect(json.scheme).toBe("http");
    expect(json.forwarded["x-forwarded-for"]).toBe("203.0.113.9");
    expect(json.forwarded["x-forwarded-proto"]).toBe("https");
  });

  it("POST /auth/token with a form body and with JSON", async () => {
    const form = await httpJson<TokenResponse>(`${base(trustedPort)}/auth/token`, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: "username=alice&password=secret",
    });
    expect(form.status).toBe(200);
    expect(form.json.token_type).toBe("bearer");
    expect(form.json.access_token.length).toBeGreaterThanOrEqual(20);
    expect(form.json.username).toBe("alice");
    const json = await httpJson<TokenResponse>(`${base(trustedPort)}/auth/token`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: "bob", password: "x" }),
    });
    expect(json.json.username).toBe("bob");
    expect(json.json.access_token).not.toBe(form.json.access_token);
    const bad = await httpRequest(`${base(trustedPort)}/auth/token`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: "{not json",
    });
    expect(bad.status).toBe(400);
  });

  it("GET /api/slow sleeps ms and bounds it to 10 s", async () => {
    const t0 = Date.now();
    const res = await httpJson<{ slept_ms: number }>(`${base(trustedPort)}/api/slow?ms=300`);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
    expect(res.json).toEqual({ slept_ms: 300 });
    expect((await httpRequest(`${base(trustedPort)}/api/slow?ms=10001`)).status).toBe(422);
    expect((await httpRequest(`${base(trustedPort)}/api/slow?ms=-1`)).status).toBe(422);
  });

  it("GET /api/bytes returns exactly n bytes, bounded to 10 MiB", async () => {
    const small = await httpRequest(`${base(trustedPort)}/api/bytes?n=12345`);
    expect(small.status).toBe(200);
    expect(small.body.length).toBe(12345);
    expect(small.headers["content-type"]).toBe("application/octet-stream");
    const max = await httpRequest(`${base(trustedPort)}/api/bytes?n=${10 * 1024 * 1024}`);
    expect(max.body.length).toBe(10 * 1024 * 1024);
    expect((await httpRequest(`${base(trustedPort)}/api/bytes?n=${10 * 1024 * 1024 + 1}`)).status).toBe(422);
    expect((await httpRequest(`${base(trustedPort)}/api/bytes?n=0`)).body.length).toBe(0);
  });

  it("GET / is the app's <main> in the static index page's frame (one shared head)", async () => {
    const home = await httpRequest(`${base(trustedPort)}/`);
    expect(home.status).toBe(200);
    expect(home.headers["content-type"]).toMatch(/^text\/html/);
    const index = readFileSync(path.join(APP_DIR, "static", "index.html"), "utf8");
    const around = (page: string): [string, string] => [page.slice(0, page.indexOf("<main>")), page.slice(page.indexOf("</main>"))];
    expect(home.text).toMatch(/<main>[^]*<\/main>/);
    expect(around(home.text)).toEqual(around(index));
    expect(home.text).toContain("<h1>fastapi-edge is serving</h1>");
    expect(home.text).toContain(`version <strong>${VERSION}</strong>`);
  });

  it("serves /static from the static dir beside main.py", async () => {
    const index = await httpRequest(`${base(trustedPort)}/static/index.html`);
    expect(index.status).toBe(200);
    expect(index.headers["content-type"]).toMatch(/^text\/html/);
    expect(index.text).toBe(readFileSync(path.join(APP_DIR, "static", "index.html"), "utf8"));
    const css = await httpRequest(`${base(trustedPort)}/static/style.css`);
    expect(css.status).toBe(200);
    expect(css.headers["content-type"]).toMatch(/^text\/css/);
    expect((await httpRequest(`${base(trustedPort)}/static/missing.txt`)).status).toBe(404);
  });

  it("echoes text and binary WebSocket messages on /ws/echo", async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${trustedPort}/ws/echo`);
    const received: Array<{ data: string; binary: boolean }> = [];
    await new Promise<void>((resolve, reject) => {
      ws.once("error", reject);
      ws.once("open", () => {
        ws.send("hello edge");
        ws.send(Buffer.from([1, 2, 3]));
      });
      ws.on("message", (data: WebSocket.RawData, isBinary: boolean) => {
        const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(new Uint8Array(data));
        received.push({ data: isBinary ? buf.toString("hex") : buf.toString("utf8"), binary: isBinary });
        if (received.length === 2) resolve();
      });
    });
    ws.close();
    expect(received).toEqual([
      { data: "hello edge", binary: false },
      { data: "010203", binary: true },
    ]);
  });

  it("/_stats counts distinct TCP connections and requests (FASTAPI_EDGE_STATS=1)", async () => {
    const stats = (): Promise<Stats> => httpJson<Stats>(`${base(trustedPort)}/_stats`).then((r) => r.json);
    const reset = await httpJson<Stats>(`${base(trustedPort)}/_stats`, { method: "DELETE" });
    expect(reset.json).toEqual({ connections: 0, requests: 0 });

    // 5 requests over one keep-alive connection, as a proxy would send them
    // (X-Forwarded-For makes uvicorn report port 0; the real peer still counts).
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    for (let i = 0; i < 5; i++) {
      const res = await httpRequest(`${base(trustedPort)}/api/hello`, { agent, headers: { "X-Forwarded-For": "198.51.100.1" } });
      expect(res.status).toBe(200);
    }
    agent.destroy();
    expect(await stats()).toEqual({ connections: 1, requests: 5 });

    // 3 requests on 3 fresh connections.
    for (let i = 0; i < 3; i++) {
      await httpRequest(`${base(trustedPort)}/api/hello`, { headers: { Connection: "close" } });
    }
    expect(await stats()).toEqual({ connections: 4, requests: 8 });

    // 2 connections one after the other from the same local port (the server
    // closes first, so the port is free again at once): 2 connections, not 1,
    // as happens to a proxy that opens one connection per request.
    const localPort = await freePort();
    for (let i = 0; i < 2; i++) {
      const reply = await new Promise<string>((resolve, reject) => {
        const sock = net.connect({ host: "127.0.0.1", port: trustedPort, localAddress: "127.0.0.1", localPort });
        let data = "";
        sock.setEncoding("utf8");
        sock.on("error", reject);
        sock.on("connect", () => sock.write("GET /api/hello HTTP/1.1\r\nHost: stats.test\r\nConnection: close\r\n\r\n"));
        sock.on("data", (chunk: string) => (data += chunk));
        sock.on("close", () => resolve(data));
      });
      expect(reply).toMatch(/^HTTP\/1\.1 200 /);
    }
    expect(await stats()).toEqual({ connections: 6, requests: 10 });
  });

  it("/_stats does not exist without FASTAPI_EDGE_STATS=1", async () => {
    expect((await httpRequest(`${base(untrustedPort)}/_stats`)).status).toBe(404);
  });
});
