// lib/shell.ts, the quoting boundary between TypeScript values and the shell
// text of a host step: what it quotes, what it refuses, and (run through a
// real bash) that what it emits means exactly what it was given.
import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { commandLine, DELETE_DELIMITER, FILE_DELIMITER, fileWriteLines, heredocCommand, shq, stageShell, stepShell } from "../../lib/shell";

const scratch = mkdtempSync(path.join(tmpdir(), "fe-shell-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function bash(text: string, input?: string): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync("bash", ["-c", text], { encoding: "utf8", ...(input !== undefined ? { input } : {}) });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** What bash makes of each quoted word: one line per word, NUL-free. */
function echoWords(words: string[]): string[] {
  const r = bash(words.map((w) => `printf '%s\\n' ${w}`).join("\n"));
  expect(r.stderr).toBe("");
  return r.stdout.split("\n").slice(0, -1);
}

const SAFE_CHARS = "ABCXYZabcxyz0189._/@+:=,-";

describe("shq", () => {
  it("single-quotes plain words and paths", () => {
    expect(shq("api.example.com")).toBe("'api.example.com'");
    expect(shq("/etc/fastapi-edge/acme-ca.pem")).toBe("'/etc/fastapi-edge/acme-ca.pem'");
    expect(shq("https://acme-v02.api.letsencrypt.org/directory")).toBe("'https://acme-v02.api.letsencrypt.org/directory'");
    expect(shq("ops+alerts@example.com")).toBe("'ops+alerts@example.com'");
    expect(shq("")).toBe("''");
  });

  it("bash reads back exactly the value it was given", () => {
    const values = ["api.example.com", "", "--", "-n", "-e", "a=b", "k:v,w", "@", "/", "1.2.3+build-4", SAFE_CHARS];
    expect(echoWords(values.map((v) => shq(v)))).toEqual(values);
  });

  it.each([
    ["a space", "two words"],
    ["a tab", "a\tb"],
    ["a newline", "line1\nline2"],
    ["a carriage return", "a\rb"],
    ["a single quote", "it's"],
    ["a double quote", 'say "hi"'],
    ["a dollar sign", "$HOME"],
    ["a command substitution", "$(id)"],
    ["a backtick", "`id`"],
    ["a backslash", "a\\b"],
    ["a semicolon", "a;reboot"],
    ["a pipe", "a|b"],
    ["an ampersand", "a&b"],
    ["redirections", "a>b<c"],
    ["a glob", "*"],
    ["brackets", "[a]"],
    ["braces", "{a,b}"],
    ["parentheses", "(a)"],
    ["a tilde", "~root"],
    ["a percent sign", "100%"],
    ["a hash", "#comment"],
    ["an exclamation mark", "a!b"],
    ["a NUL byte", "a\0b"],
    ["non-ASCII letters", "bücher.example"],
    ["an emoji", "🚀"],
    ["a non-breaking space", "a\u00a0b"],
    ["a right-to-left mark", "a\u200fb"],
  ])("refuses %s", (_what, value) => {
    expect(() => shq(value)).toThrow(/refusing to pass argument/);
  });

  it("names what it refused", () => {
    expect(() => shq("a b", "package")).toThrow('refusing to pass package "a b" to a shell command');
  });

  it("for any string: refuses it, or bash reads the quoted form back unchanged", () => {
    const chars = fc.constantFrom(...SAFE_CHARS.split(""), " ", "'", '"', "$", "`", "\\", "\n", ";", "*", "é", "😀", "~", "%");
    const accepted: string[] = [];
    fc.assert(
      fc.property(fc.string({ unit: chars, maxLength: 12 }), (v) => {
        let quoted: string;
        try {
          quoted = shq(v);
        } catch {
          expect([...v].some((ch) => !SAFE_CHARS.includes(ch))).toBe(true);
          return;
        }
        expect([...v].every((ch) => SAFE_CHARS.includes(ch))).toBe(true);
        expect(quoted).toBe(`'${v}'`);
        accepted.push(v);
      }),
      { numRuns: 400 },
    );
    expect(accepted.length).toBeGreaterThan(0);
    expect(echoWords(accepted.map((v) => shq(v)))).toEqual(accepted);
  });
});

describe("commandLine", () => {
  const printer = path.join(scratch, "print-args.sh");
  writeFileSync(printer, '#!/bin/sh\nfor a in "$@"; do printf \'[%s]\\n\' "$a"; done\n');
  chmodSync(printer, 0o755);

  it("keeps the program and --flags bare and quotes every other argument", () => {
    expect(commandLine("/opt/fastapi-edge/bin/obtain-cert.sh", "--domain", "api.example.com", "--webroot", "/var/www/letsencrypt")).toBe(
      "/opt/fastapi-edge/bin/obtain-cert.sh --domain 'api.example.com' --webroot '/var/www/letsencrypt'",
    );
    expect(commandLine("/opt/fastapi-edge/bin/install-packages.sh", "nginx", "certbot")).toBe(
      "/opt/fastapi-edge/bin/install-packages.sh 'nginx' 'certbot'",
    );
    expect(commandLine("/opt/fastapi-edge/bin/cert-expiry-timer.sh")).toBe("/opt/fastapi-edge/bin/cert-expiry-timer.sh");
  });

  it("the program receives each argument as one word, unchanged", () => {
    const args = ["--release", "0123456789abcdef", "--upload", "/var/tmp/fastapi-edge-upload-x", "", "-n", "8000"];
    const r = bash(commandLine(printer, ...args));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(args.map((a) => `[${a}]\n`).join(""));
  });

  it("refuses a relative or unusual program path and unsafe arguments", () => {
    expect(() => commandLine("obtain-cert.sh")).toThrow(/not a plain absolute path/);
    expect(() => commandLine("/opt/my bin/x.sh")).toThrow(/not a plain absolute path/);
    expect(() => commandLine("/opt/$(id)/x.sh")).toThrow(/not a plain absolute path/);
    expect(() => commandLine("/bin/echo", "--flag value")).toThrow(/refusing to pass/);
    expect(() => commandLine("/bin/echo", "--Flag")).not.toThrow(); // not a flag word: quoted, same argv
    expect(commandLine("/bin/echo", "--Flag")).toBe("/bin/echo '--Flag'");
  });
});

describe("stepShell and fileWriteLines", () => {
  const tricky = [
    "plain line",
    "$HOME ${PATH} $(id) `id`",
    "quotes ' \" and a backslash \\ at the end\\",
    "unicode: grüße, 日本語, 🚀",
    `${FILE_DELIMITER} is fine inside a line`,
    "\ttab-indented, trailing spaces   ",
    "",
  ].join("\n");

  it("writes each file byte for byte, with its mode, through a real bash", () => {
    const root = mkdtempSync(path.join(scratch, "root-"));
    const files = [
      { path: `${root}/etc/a.conf`, content: tricky },
      { path: `${root}/bin/run.sh`, content: "#!/bin/sh\necho hi\n", mode: 0o755 },
      { path: `${root}/no-newline.txt`, content: "no final newline" },
    ];
    const r = bash(stepShell(files, [`echo done > '${root}/done'`]));
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(`${root}/etc/a.conf`, "utf8")).toBe(tricky);
    expect(readFileSync(`${root}/bin/run.sh`, "utf8")).toBe("#!/bin/sh\necho hi\n");
    expect(statSync(`${root}/bin/run.sh`).mode & 0o777).toBe(0o755);
    expect(statSync(`${root}/etc/a.conf`).mode & 0o777).toBe(0o644);
    // A file always ends with a newline on the host.
    expect(readFileSync(`${root}/no-newline.txt`, "utf8")).toBe("no final newline\n");
    expect(readFileSync(`${root}/done`, "utf8")).toBe("done\n");
    // Written atomically: no temp file left behind.
    expect(readdirSync(`${root}/etc`)).toEqual(["a.conf"]);
  });

  it("starts strict and stops at the first failing command", () => {
    const text = stepShell([], ["false", "echo not reached"]);
    expect(text.startsWith("set -euo pipefail\numask 022\n")).toBe(true);
    const r = bash(text);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe("");
  });

  it("refuses a file that holds the delimiter as a line", () => {
    expect(() => fileWriteLines([{ path: "/etc/x", content: `a\n${FILE_DELIMITER}\nb` }])).toThrow(/contains the heredoc delimiter/);
  });

  it.each([["/etc/a b"], ["/etc/../shadow"], ["conf/../../x"], ["/etc/$(id)"], ["/etc/'x'"], ["/etc/x\ny"], ["/etc/ü"], [""]])(
    "refuses the path %j",
    (p) => {
      expect(() => fileWriteLines([{ path: p, content: "x" }])).toThrow(/unsafe path/);
    },
  );
});

describe("stageShell", () => {
  it("stages files in a temp dir, hands it to the apply command, and removes it afterwards", () => {
    const copy = path.join(scratch, "staged-copy");
    const apply = path.join(scratch, "apply.sh");
    writeFileSync(apply, `#!/bin/sh\nset -e\ncp -a "$1" '${copy}'\necho "$1" > '${copy}.path'\n`);
    chmodSync(apply, 0o755);
    const text = stageShell(
      [
        { path: "conf/nginx.conf", content: "events {}\n" },
        { path: "extra/var/www/fastapi-edge/maintenance.html", content: "<p>$maintenance</p>" },
      ],
      apply,
      ["echo before"],
    );
    const r = bash(text);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe("before\n");
    expect(readFileSync(path.join(copy, "conf/nginx.conf"), "utf8")).toBe("events {}\n");
    expect(readFileSync(path.join(copy, "extra/var/www/fastapi-edge/maintenance.html"), "utf8")).toBe("<p>$maintenance</p>\n");
    const stageDir = readFileSync(`${copy}.path`, "utf8").trim();
    expect(stageDir).toMatch(/^\/tmp\/fastapi-edge-stage\./);
    expect(() => statSync(stageDir)).toThrow(); // trap removed it
  });
});

describe("heredocCommand", () => {
  it("feeds the body to the shell unexpanded", () => {
    const body = "echo 'one'\necho \"$((1 + 1))\"\ncat <<'X'\n$HOME `id`\nX";
    const text = heredocCommand("bash -s", body);
    expect(text).toBe(`bash -s <<'${DELETE_DELIMITER}'\n${body}\n${DELETE_DELIMITER}`);
    const r = bash(text);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe("one\n2\n$HOME `id`\n");
  });

  it("refuses a body that holds the delimiter as a line", () => {
    expect(() => heredocCommand("bash -s", `true\n${DELETE_DELIMITER}\nreboot`)).toThrow(/heredoc delimiter/);
  });
});
