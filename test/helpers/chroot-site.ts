// A live fastapi-edge site served by a NEWER nginx than the host's: the nginx
// of a cached Debian chroot (scripts/get-chroot.sh; edge-trixie has nginx 1.26
// with OpenSSL 3.5, edge-sid nginx 1.30 with OpenSSL 3.6, both built with the
// HTTP/3 module, plus curl with HTTP/3 and the openssl client of that release).
//
// The renderer's output is written under ROOT/tmp/fe-chroot-XXXX with every
// path as nginx sees it inside the chroot; the sample app runs on the host
// (uvicorn with Debian 12's FastAPI) and nginx reaches it over the shared
// loopback. Ports come from 23000-23999 and are checked free for TCP and UDP
// (QUIC listens on UDP). stop() stops nginx (master, then any worker) and the
// app by PID and removes the scratch tree.
import { spawnSync } from "node:child_process";
import dgram from "node:dgram";
import { chmodSync, cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { EdgeConfig, parseConfig, RawConfig } from "../../lib/config";
import { readOriginPullCa } from "../../lib/hostfiles";
import { HostLayout, Listen, renderSite, StageFile } from "../../lib/nginx";
import { EDGE_SID, EDGE_TRIXIE, getChroot as getSpecChroot, SYSTEM_PATH } from "./chroot";
import { stopNginx } from "./live-site";
import { prepareLayout, testLayout } from "./nginx-fixture";
import { APP_DIR, REPO_ROOT, script, startProcess, stopPid, SYSTEM_PYTHON, waitForHttp, waitForPort, type StartedProcess } from "./proc";

export { CHROOT_BUILD_TIMEOUT_MS } from "./chroot";

/** The shared chroots (test/helpers/chroot.ts holds their names and package lists). */
export const CHROOTS = { trixie: EDGE_TRIXIE, sid: EDGE_SID } as const;

/** Path of a shared chroot, built on first use (needs root). */
export function getChroot(which: keyof typeof CHROOTS): string {
  return getSpecChroot(CHROOTS[which]);
}

export interface ChrootRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Run a program inside the chroot with a clean environment. */
export function inChroot(root: string, argv: string[], opts: { input?: string; timeoutMs?: number } = {}): ChrootRun {
  const r = spawnSync("chroot", [root, "/usr/bin/env", "-i", `PATH=${SYSTEM_PATH}`, "LANG=C.UTF-8", ...argv], {
    encoding: "utf8",
    input: opts.input ?? "",
    timeout: opts.timeoutMs ?? 30_000,
  });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** "nginx/1.26.3" and "OpenSSL 3.5.9" of the chroot's nginx (`nginx -V`). */
export function chrootNginxVersions(root: string): { nginx: string; openssl: string; modules: string } {
  const r = inChroot(root, ["nginx", "-V"]);
  const nginx = /nginx\/([0-9.]+)/.exec(r.stderr)?.[1];
  // "running with OpenSSL X" when it differs from the build's, else "built with OpenSSL X".
  const openssl = /running with OpenSSL ([0-9.]+)/.exec(r.stderr)?.[1] ?? /built with OpenSSL ([0-9.]+)/.exec(r.stderr)?.[1];
  if (!nginx || !openssl) throw new Error(`cannot read nginx -V in ${root}:\n${r.stderr}`);
  return { nginx, openssl, modules: r.stderr };
}

function tcpFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once("error", () => resolve(false));
    srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
  });
}

function udpFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = dgram.createSocket("udp4");
    sock.once("error", () => {
      sock.close();
      resolve(false);
    });
    sock.bind(port, "127.0.0.1", () => sock.close(() => resolve(true)));
  });
}

/** n ports in 23000-23999, free for TCP and UDP on 127.0.0.1 a moment ago (random start: parallel runs rarely collide). */
export async function reservePorts(n: number): Promise<number[]> {
  const out: number[] = [];
  const start = 23000 + Math.floor(Math.random() * 1000);
  for (let i = 0; i < 1000 && out.length < n; i++) {
    const p = 23000 + ((start - 23000 + i) % 1000);
    if ((await tcpFree(p)) && (await udpFree(p))) out.push(p);
  }
  if (out.length < n) throw new Error(`fewer than ${n} free ports in 23000-23999`);
  return out;
}

export interface ChrootSite {
  readonly root: string;
  readonly domain: string;
  readonly config: EdgeConfig;
  readonly httpPort: number;
  readonly httpsPort: number;
  readonly appPort: number;
  /** The local CA's certificate, as seen inside the chroot and from the host. */
  readonly caInside: string;
  readonly caHost: string;
  /** The scratch prefix as seen inside the chroot. */
  readonly prefix: string;
  readonly files: StageFile[];
  readonly errorLog: string;
  nginxPid(): number;
  stop(): Promise<void>;
}

export interface ChrootSiteOptions {
  /** Raw config merged over {domain, email, hostMode existing}. */
  config?: RawConfig;
  /** Renderer overrides (default: the chroot nginx's own versions). */
  nginxVersion?: string;
  opensslVersion?: string;
  /** Change the rendered files before they are installed (experiments the renderer would never emit). */
  edit?: (files: StageFile[]) => StageFile[];
  startTimeoutMs?: number;
}

export const CHROOT_DOMAIN = "edge.fastapi-edge.test";

/** PIDs started here and not yet stopped: SIGTERM when the Node process exits (a test run that dies mid-way). */
const livePids = new Set<number>();
let exitHook = false;
function track(pid: number): void {
  livePids.add(pid);
  if (exitHook) return;
  exitHook = true;
  process.on("exit", () => {
    for (const p of livePids) {
      try {
        process.kill(p, "SIGTERM");
      } catch {
        // already gone
      }
    }
  });
}

/** Render, install and start the site on the chroot's nginx, with the app on the host. */
export async function startChrootSite(root: string, o: ChrootSiteOptions = {}): Promise<ChrootSite> {
  const domain = CHROOT_DOMAIN;
  const config = parseConfig({
    domain,
    email: "ops@fastapi-edge.test",
    hostMode: "existing",
    hostAddress: "127.0.0.1",
    ...(o.config ?? {}),
  });
  const versions = chrootNginxVersions(root);
  const [httpPort, httpsPort, appPort] = (await reservePorts(3)) as [number, number, number];
  const listen: Listen = { address: "127.0.0.1", http: httpPort, https: httpsPort };
  const hostDir = mkdtempSync(path.join(root, "tmp", "fe-chroot-"));
  chmodSync(hostDir, 0o755);
  const prefix = `/${path.relative(root, hostDir)}`;
  const layout: HostLayout = testLayout(prefix);
  const host = (p: string): string => path.join(root, p);
  const timeout = o.startTimeoutMs ?? 30_000;

  let nginx: StartedProcess | null = null;
  let app: StartedProcess | null = null;
  const stop = async (): Promise<void> => {
    if (nginx) {
      await stopNginx(nginx.pid);
      livePids.delete(nginx.pid);
    }
    nginx = null;
    if (app) {
      await stopPid(app.pid);
      livePids.delete(app.pid);
    }
    app = null;
    rmSync(hostDir, { recursive: true, force: true });
  };

  try {
    const ca = prepareLayout(layout, domain, path.join(hostDir, "ca"), host);
    cpSync(path.join(APP_DIR, "static"), host(layout.staticDir), { recursive: true });
    const rendered = renderSite(config, {
      layout,
      listen,
      nginxVersion: o.nginxVersion ?? versions.nginx,
      opensslVersion: o.opensslVersion ?? versions.openssl,
      upstreamPorts: [appPort],
    });
    const files = o.edit ? o.edit(rendered) : rendered;
    for (const f of files) {
      const inside = f.path.startsWith("conf/") ? path.join(layout.nginxConfDir, f.path.slice(5)) : `/${f.path.slice("extra/".length)}`;
      if (!inside.startsWith(`${prefix}/`)) throw new Error(`${f.path} maps outside ${prefix}`);
      mkdirSync(path.dirname(host(inside)), { recursive: true });
      writeFileSync(host(inside), f.content);
    }

    app = startProcess(script("run-app.sh"), [String(appPort)], {
      env: {
        ...process.env,
        APP_MODULE: config.appModule,
        APP_DIR,
        STATIC_DIR: host(layout.staticDir),
        PYTHON: SYSTEM_PYTHON,
        APP_HOST: "127.0.0.1",
        FORWARDED_ALLOW_IPS: "127.0.0.1",
        APP_VERSION: config.appVersion,
        APP_PORT: String(appPort),
        PYTHONUNBUFFERED: "1",
        PYTHONDONTWRITEBYTECODE: "1",
        PYTHONPYCACHEPREFIX: path.join(hostDir, "pycache"),
      },
    });
    track(app.pid);
    await waitForHttp(`http://127.0.0.1:${appPort}/healthz`, timeout, 200, app);

    const conf = path.join(layout.nginxConfDir, "nginx.conf");
    const started = startProcess("chroot", [
      root,
      "/usr/bin/env",
      "-i",
      `PATH=${SYSTEM_PATH}`,
      "nginx",
      "-e",
      "stderr",
      "-c",
      conf,
      "-g",
      "daemon off;",
    ]);
    nginx = started;
    track(started.pid);
    await waitForPort(httpsPort, timeout, "127.0.0.1", started);
    await waitForPort(httpPort, timeout, "127.0.0.1", started);

    return {
      root,
      domain,
      config,
      httpPort,
      httpsPort,
      appPort,
      caInside: path.join(prefix, "ca", "ca.pem"),
      caHost: ca.caCert,
      prefix,
      files,
      errorLog: host(path.join(layout.logDir, "error.log")),
      nginxPid: () => started.pid,
      stop,
    };
  } catch (e) {
    const out = nginx ? `\nnginx output:\n${(nginx as StartedProcess).output()}` : "";
    await stop();
    throw new Error(`chroot site failed to start: ${(e as Error).message}${out}`);
  }
}

/** A rendered tree written under ROOT/tmp (paths as nginx sees them inside the chroot). */
export interface ChrootTree {
  /** The scratch prefix as seen inside the chroot. */
  prefix: string;
  /** The same directory from the host (remove it when done). */
  hostDir: string;
  /** nginx.conf as seen inside the chroot. */
  conf: string;
  files: StageFile[];
}

/** Render `c` under a fresh prefix in the chroot, with a throwaway certificate, ready for `nginx -t`. */
export function renderTreeInChroot(
  root: string,
  c: EdgeConfig,
  o: { listen: Listen; nginxVersion: string; opensslVersion: string; layout?: (l: HostLayout) => HostLayout },
): ChrootTree {
  const hostDir = mkdtempSync(path.join(root, "tmp", "fe-chroot-"));
  const prefix = `/${path.relative(root, hostDir)}`;
  const layout = (o.layout ?? ((l: HostLayout) => l))(testLayout(prefix));
  const host = (p: string): string => path.join(root, p);
  prepareLayout(layout, c.domain, path.join(hostDir, "ca"), host);
  if (layout.loadDistroModules) mkdirSync(host(path.join(layout.nginxConfDir, "modules-enabled")), { recursive: true });
  const pem = readOriginPullCa(c, REPO_ROOT);
  const files = renderSite(c, {
    layout,
    listen: o.listen,
    nginxVersion: o.nginxVersion,
    opensslVersion: o.opensslVersion,
    ...(pem === undefined ? {} : { originPullCaPem: pem }),
  });
  for (const f of files) {
    const inside = f.path.startsWith("conf/") ? path.join(layout.nginxConfDir, f.path.slice(5)) : `/${f.path.slice("extra/".length)}`;
    if (!inside.startsWith(`${prefix}/`)) throw new Error(`${f.path} maps outside ${prefix}`);
    mkdirSync(path.dirname(host(inside)), { recursive: true });
    writeFileSync(host(inside), f.content);
  }
  return { prefix, hostDir, conf: path.join(layout.nginxConfDir, "nginx.conf"), files };
}

/** Lines of `nginx -t` output other than the two that say all is well. */
export function unexpectedNginxTestLines(output: string): string[] {
  return output
    .split("\n")
    .filter((l) => l.trim() !== "")
    .filter(
      (l) => !/^nginx: the configuration file \S+ syntax is ok$/.test(l) && !/^nginx: configuration file \S+ test is successful$/.test(l),
    );
}
