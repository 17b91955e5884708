// npm run render -- --stack NAME --out DIR [--phase full|acme-bootstrap]
//
// Writes exactly the files `pulumi up` pushes for a stack, from Pulumi.yaml
// defaults and Pulumi.NAME.yaml, with no cloud access and no Pulumi CLI.
// Exits non-zero with the validation message on bad config.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { ConfigError } from "../lib/config";
import { loadStackConfig } from "../lib/stackfile";
import { HostFile, readAcmeCaBundle, readOriginPullCa, renderHostFiles } from "../lib/hostfiles";

function main(): number {
  const { values } = parseArgs({
    options: {
      stack: { type: "string", default: "dev" },
      out: { type: "string", default: "out/render" },
      phase: { type: "string", default: "full" },
    },
  });
  const phase = values.phase === "acme-bootstrap" ? "acme-bootstrap" : "full";
  try {
    const cfg = loadStackConfig(path.resolve(__dirname, ".."), values.stack!);
    const projectDir = path.resolve(__dirname, "..");
    const stackFile = readFileSync(path.join(projectDir, `Pulumi.${values.stack}.yaml`), "utf8");
    const region = /^\s*aws:region:\s*([a-z0-9-]+)\s*$/m.exec(stackFile)?.[1];
    const acmeCaBundlePem = readAcmeCaBundle(cfg, projectDir);
    const originPullCaPem = readOriginPullCa(cfg, projectDir);
    const set = renderHostFiles(cfg, {
      phase,
      ...(region ? { region } : {}),
      ...(acmeCaBundlePem !== undefined ? { acmeCaBundlePem } : {}),
      ...(originPullCaPem !== undefined ? { originPullCaPem } : {}),
    });
    const files: HostFile[] = [
      ...set.nginx.map((f) => ({ ...f, path: path.join("nginx-stage", f.path) })),
      ...set.system.map((f) => ({ ...f, path: path.join("root", f.path) })),
    ];
    for (const f of files) {
      const dest = path.join(values.out!, f.path);
      mkdirSync(path.dirname(dest), { recursive: true });
      writeFileSync(dest, f.content, { mode: f.mode ?? 0o644 });
      console.log(dest);
    }
    return 0;
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(e.message);
      return 2;
    }
    throw e;
  }
}

process.exit(main());
