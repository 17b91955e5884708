// nginx in front of the app on the host, with a certificate from certbot.
//
// First certificate without the chicken-and-egg: `nginx -t` fails while
// ssl_certificate names a missing file, yet HTTP-01 needs nginx on port 80.
// So: (1) while no certificate exists, push an HTTP-only config that serves
// the ACME webroot; (2) certbot certonly --webroot; (3) push the full config.
// Every push goes through nginx-apply.sh: the candidate tree passes
// `nginx -t` before anything live changes, and nginx is reloaded, never
// restarted.
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { acmeDirectory, EdgeConfig } from "../lib/config";
import { REMOTE, renderCertbotDropIn, renderNginxDropIn } from "../lib/hostfiles";
import { hostLayout, PUBLIC_LISTEN } from "../lib/hostpaths";
import { renderAcmeBootstrap, renderSite, StageFile } from "../lib/nginx";
import { shipped } from "../lib/shipped";
import { stepShell, stageShell, shq, fileWriteLines } from "../lib/shell";
import { HostTarget, hostStep } from "./remote";

export interface NginxFrontendArgs {
  config: EdgeConfig;
  target: HostTarget;
  projectDir: string;
}

const APPLY = `${REMOTE.binDir}/nginx-apply.sh`;

function stage(files: StageFile[]) {
  return files.map((f) => ({ path: f.path, content: f.content }));
}

export class NginxFrontend extends pulumi.ComponentResource {
  readonly site: command.remote.Command;
  readonly certificate: command.remote.Command;
  /** The rendered site text, as pushed (for tests and `pulumi stack output`). */
  readonly renderedSite: string;

  constructor(name: string, args: NginxFrontendArgs, opts?: pulumi.ComponentResourceOptions) {
    super("fastapi-edge:nginx:Frontend", name, {}, opts);
    const c = args.config;
    const layout = hostLayout(c, `${REMOTE.appDir}/${c.appStaticDir}`);
    const certFile = `${layout.certDir}/fullchain.pem`;

    // (1) HTTP-only config, only while no certificate exists: once the full
    // site is live this step never replaces it.
    // Rendered from the domain and the layout alone, so changing any setting
    // never re-runs this step.
    const bootstrapFiles = renderAcmeBootstrap({ domain: c.domain, layout, listen: PUBLIC_LISTEN });
    const bootstrap = hostStep(
      `${name}-acme-bootstrap`,
      {
        target: args.target,
        stdin: stageShell(stage(bootstrapFiles), APPLY, [
          `if [ -s ${shq(certFile)} ]; then echo "certificate present: HTTP-only bootstrap not needed"; exit 0; fi`,
          `install -d -m 0755 ${shq(layout.acmeWebroot)}`,
        ]),
      },
      { parent: this },
    );

    // (2) The certificate. Private ACME servers come with a CA bundle that
    // certbot (and its scheduled renewals, via a certbot.service drop-in) trusts.
    const caPem = c.acmeCaBundle ? readFileSync(path.resolve(args.projectDir, c.acmeCaBundle), "utf8") : undefined;
    if (caPem !== undefined && !/^-----BEGIN CERTIFICATE-----/m.test(caPem)) {
      throw new Error(`fastapi-edge:acmeCaBundle must be a PEM file of certificates (got ${c.acmeCaBundle})`);
    }
    const certFiles = [
      { path: REMOTE.deployHook, content: shipped("scripts/certbot-deploy-hook.sh"), mode: 0o755 },
      ...(caPem !== undefined ? [{ path: REMOTE.acmeCaBundle, content: caPem }, { path: REMOTE.certbotDropIn, content: renderCertbotDropIn() }] : []),
    ];
    const certArgs = [
      `--domain ${shq(c.domain)}`,
      `--email ${shq(c.email!)}`,
      `--server ${shq(acmeDirectory(c))}`,
      `--webroot ${shq(layout.acmeWebroot)}`,
      ...(caPem !== undefined ? [`--ca-bundle ${shq(REMOTE.acmeCaBundle)}`] : []),
    ];
    this.certificate = hostStep(
      `${name}-certificate`,
      {
        target: args.target,
        stdin: stepShell(certFiles, [
          ...(caPem === undefined ? [`rm -f ${REMOTE.acmeCaBundle} ${REMOTE.certbotDropIn}`] : []),
          "if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi",
          `${REMOTE.binDir}/obtain-cert.sh ${certArgs.join(" ")}`,
        ]),
      },
      // Certificates are kept on destroy (Let's Encrypt rate-limits re-issuing).
      { parent: this, dependsOn: [bootstrap], protect: c.protect },
    );

    // (3) The full site. Its text is this command's input: preview --diff shows
    // the nginx lines that change, and an unchanged site runs nothing.
    const siteFiles = renderSite(c, { layout, listen: PUBLIC_LISTEN });
    this.renderedSite = siteFiles.map((f) => `# ${f.path}\n${f.content}`).join("\n");
    this.site = hostStep(
      `${name}-site`,
      {
        target: args.target,
        stdin: stageShell(
          stage(siteFiles),
          APPLY,
          [
            // LimitNOFILE for the nginx master; applies from nginx's next start.
            ...fileWriteLines([{ path: REMOTE.nginxDropIn, content: renderNginxDropIn(c) }]),
            "if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi",
          ],
        ),
        onDelete: [`${APPLY} --remove || true`, `rm -f ${REMOTE.nginxDropIn}`].join("\n"),
      },
      { parent: this, dependsOn: [this.certificate] },
    );
    this.registerOutputs({});
  }
}
