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
import { acmeDirectory, EdgeConfig } from "../lib/config";
import { acmeBootstrapStage, certificateFiles, installedScript, readAcmeCaBundle, readOriginPullCa, siteFiles } from "../lib/hostfiles";
import { HOST_PATHS, hostLayout } from "../lib/hostpaths";
import { commandLine, fileWriteLines, stageShell, stepShell } from "../lib/shell";
import { HostTarget, hostStep } from "./remote";

export interface NginxFrontendArgs {
  config: EdgeConfig;
  target: HostTarget;
  projectDir: string;
  /**
   * App hosts' private addresses (appHosts / appHostCount): the upstream lists every
   * ADDRESS:port. Unset: the app on this host, 127.0.0.1:port, as before.
   */
  upstreamHosts?: pulumi.Input<string[]>;
}

export class NginxFrontend extends pulumi.ComponentResource {
  readonly site: command.remote.Command;
  readonly certificate: command.remote.Command;
  /** The rendered site text, as pushed (for tests and `pulumi stack output`). */
  readonly renderedSite: pulumi.Output<string>;

  constructor(name: string, args: NginxFrontendArgs, opts?: pulumi.ComponentResourceOptions) {
    super("fastapi-edge:nginx:Frontend", name, {}, opts);
    const c = args.config;
    const layout = hostLayout(c);
    const systemdReload = installedScript("systemd-reload.sh");

    // (1) HTTP-only config, only while no certificate exists: once the full
    // site is live this step never replaces it (acme-bootstrap.sh).
    const acmeBootstrap = hostStep(
      `${name}-acme-bootstrap`,
      {
        target: args.target,
        stdin: stageShell(
          acmeBootstrapStage(c),
          commandLine(installedScript("acme-bootstrap.sh"), "--cert", `${layout.certDir}/fullchain.pem`, "--webroot", layout.acmeWebroot),
        ),
      },
      { parent: this },
    );

    // (2) The certificate. Private ACME servers come with a CA bundle that
    // certbot (and its scheduled renewals, via a certbot.service drop-in) trusts;
    // without one, a bundle and drop-in from an earlier config are removed.
    const caPem = readAcmeCaBundle(c, args.projectDir);
    this.certificate = hostStep(
      `${name}-certificate`,
      {
        target: args.target,
        stdin: stepShell(certificateFiles(caPem), [
          commandLine(
            systemdReload,
            ...(caPem === undefined ? ["--remove", HOST_PATHS.acmeCaBundle, "--remove", HOST_PATHS.certbotDropIn] : []),
          ),
          commandLine(
            installedScript("obtain-cert.sh"),
            ...["--domain", c.domain, "--email", c.email!, "--server", acmeDirectory(c), "--webroot", layout.acmeWebroot],
            ...(caPem !== undefined ? ["--ca-bundle", HOST_PATHS.acmeCaBundle] : []),
            ...(c.acmeProfile !== undefined ? ["--profile", c.acmeProfile] : []),
          ),
        ]),
      },
      // Certificates are kept on destroy (Let's Encrypt rate-limits re-issuing).
      { parent: this, dependsOn: [acmeBootstrap], protect: c.protect },
    );

    // (3) The full site. Its text is this command's input: preview --diff shows
    // the nginx lines that change, and an unchanged site runs nothing. The
    // nginx.service drop-in (LimitNOFILE for the master) applies from nginx's
    // next start. With originPullCaFile the CA travels in the stage, so the
    // candidate tree's nginx -t checks it together with the config.
    const originPullCa = readOriginPullCa(c, args.projectDir);
    const site = pulumi.output(args.upstreamHosts ?? []).apply((hosts) => siteFiles(c, originPullCa, hosts));
    this.renderedSite = site.apply((s) => s.stage.map((f) => `# ${f.path}\n${f.content}`).join("\n"));
    this.site = hostStep(
      `${name}-site`,
      {
        target: args.target,
        stdin: site.apply((s) =>
          stageShell(s.stage, installedScript("nginx-apply.sh"), [...fileWriteLines([s.dropIn]), commandLine(systemdReload)]),
        ),
        onDelete: commandLine(installedScript("nginx-remove.sh"), "--drop-in", HOST_PATHS.nginxDropIn),
      },
      { parent: this, dependsOn: [this.certificate] },
    );
    this.registerOutputs({});
  }
}
