// Paths and environment of the systemd stand-ins (fake-systemctl.sh,
// fake-journalctl.sh) shared by the live and stress rollout tests.
import path from "node:path";
import { APP_DIR, REPO_ROOT, SYSTEM_PYTHON, script } from "./proc";

export const FAKE_SYSTEMCTL = path.join(REPO_ROOT, "test", "helpers", "fake-systemctl.sh");
export const FAKE_JOURNALCTL = path.join(REPO_ROOT, "test", "helpers", "fake-journalctl.sh");

/**
 * Environment for fake-systemctl.sh (and app-rollout.sh driving it): the
 * fake's state dir and run-app.sh, plus the app's settings as
 * /etc/fastapi-edge/app.env holds them. `extra` goes on top.
 */
export function fakeSystemdEnv(state: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    ...process.env,
    SYSTEMCTL: FAKE_SYSTEMCTL,
    JOURNALCTL: FAKE_JOURNALCTL,
    FAKE_STATE: state,
    FAKE_RUN_APP: script("run-app.sh"),
    APP_MODULE: "main:app",
    APP_DIR,
    FORWARDED_ALLOW_IPS: "127.0.0.1",
    PYTHON: SYSTEM_PYTHON,
    PYTHONDONTWRITEBYTECODE: "1",
    ...extra,
  };
}
