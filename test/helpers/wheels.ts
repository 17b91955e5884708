// The wheelhouse the venv tests deploy from: edge-probe (a package no distribution
// ships), uvicorn 0.53, click and h11, built by build-wheels.sh (PyPI is unreachable
// here) and cached. scripts/test-all.sh builds it before vitest.
import { execFileSync } from "node:child_process";
import { cpSync, mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { CHROOT_BUILD_TIMEOUT_MS } from "./chroot";

const BUILD = path.resolve(__dirname, "build-wheels.sh");
const CACHE =
  process.env["FASTAPI_EDGE_CACHE"] ?? path.join(process.env["XDG_CACHE_HOME"] ?? path.join(os.homedir(), ".cache"), "fastapi-edge");

/** The cached wheelhouse (built on first use). */
export function testWheelhouse(): string {
  const out = execFileSync("bash", [BUILD, path.join(CACHE, "test-wheelhouse")], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    timeout: CHROOT_BUILD_TIMEOUT_MS,
  });
  return out.trim().split("\n").pop()!;
}

/** A private copy of the wheelhouse (app-deploy.sh removes its --wheelhouse once the virtualenv is built). */
export function wheelhouseCopy(into: string): string {
  const dir = mkdtempSync(path.join(into, "wheels-"));
  cpSync(testWheelhouse(), dir, { recursive: true });
  return dir;
}
