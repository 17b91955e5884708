// appRuntime container under mocks: the resource graph of a built image shipped over SSH and
// of a registry image, the secret the registry password stays, and what config refuses.
// The built path runs the real scripts/build-app-image.sh (podman; cached after the first build).
import { describe, expect, it } from "vitest";
import { containerPrerequisiteMissing } from "../helpers/container";
import { FAKE_PRIVATE_KEY, isSecretValue, runProgram, unwrap } from "../helpers/mocks";

const existing = {
  domain: "api.example.com",
  email: "ops@example.com",
  hostMode: "existing",
  hostAddress: "192.0.2.5",
  appRuntime: "container",
};
const secrets = { secrets: { hostPrivateKey: FAKE_PRIVATE_KEY } };
const DIGEST = `ghcr.io/acme/api@sha256:${"ab".repeat(32)}`;
const missing = containerPrerequisiteMissing();

type Run = Awaited<ReturnType<typeof runProgram>>;
function line(run: Run, resource: string, script: string): string {
  const { stdin } = unwrap<{ stdin: string }>(run.one("command:remote:Command", resource).inputs);
  const found = stdin.split("\n").filter((l) => l.startsWith(`/opt/fastapi-edge/bin/${script} `));
  expect(found, stdin).toHaveLength(1);
  return found[0]!.replace(/'/g, "");
}

describe.skipIf(missing !== null)("appRuntime container, image built where pulumi runs (mocks)", () => {
  it("builds the image, ships the archive beside the release, and deploys it by id and sha256", async () => {
    const run = await runProgram(existing, secrets);
    const release = run.outputs["appRelease"] as string;
    const image = unwrap<{ source: unknown; remotePath: string; triggers: unknown[] }>(
      run.one("command:remote:CopyToRemote", "app-image-upload").inputs,
    );
    expect(image.remotePath).toBe(`/var/tmp/fastapi-edge-image-${release}/image.tar`);
    expect(image.source).toMatchObject({ __pulumiAsset: true }); // a file asset: the archive build-app-image.sh saved
    const deploy = line(run, "app-deploy", "container-deploy.sh");
    expect(deploy).toMatch(
      new RegExp(
        `--release ${release} --upload /var/tmp/fastapi-edge-upload-${release} --archive /var/tmp/fastapi-edge-image-${release}/image.tar --image-id sha256:[0-9a-f]{64} --sha256 [0-9a-f]{64} .* 8000 8001$`,
      ),
    );
    expect(image.triggers).toContain(/--image-id (\S+)/.exec(deploy)![1]);
    const { stdin, delete: del } = unwrap<{ stdin: string; delete: string }>(run.one("command:remote:Command", "app-deploy").inputs);
    expect(stdin).toContain("/etc/fastapi-edge/container.env.candidate");
    expect(stdin).toContain("APP_VERSION=1\n");
    expect(stdin).toContain("CONTAINER_PORT_GUARD=nft\n"); // conmon's port socket is reset, never left hanging
    expect(stdin).not.toContain("FORWARDED_ALLOW_IPS");
    expect(del).toContain(`container-remove.sh ${release}`);
    // podman without its recommends (buildah, criu, an initramfs rebuild: minutes on a small host), on a line of its own
    const { stdin: boot } = unwrap<{ stdin: string }>(run.one("command:remote:Command", "bootstrap-install").inputs);
    const installs = boot.split("\n").filter((l) => l.startsWith("/opt/fastapi-edge/bin/install-packages.sh "));
    expect(installs).toHaveLength(2);
    expect(installs[0]).not.toMatch(/podman|python3-fastapi/);
    expect(installs[1]?.replace(/'/g, "")).toBe(
      "/opt/fastapi-edge/bin/install-packages.sh --no-install-recommends podman netavark iptables nftables",
    );
  }, 600_000);
});

describe("appRuntime container, image from a registry (mocks)", () => {
  it("pulls the pinned image; the password reaches the host only on stdin, and the step stays a secret", async () => {
    const run = await runProgram(
      { ...existing, appImage: DIGEST, appRegistryUsername: "deploy-bot" },
      { secrets: { hostPrivateKey: FAKE_PRIVATE_KEY, appRegistryPassword: "s3cret-token" } },
    );
    expect(run.ofType("command:remote:CopyToRemote").map((r) => r.name)).toEqual(["app-upload"]);
    const inputs = run.one("command:remote:Command", "app-deploy").inputs as { stdin: unknown };
    expect(isSecretValue(inputs.stdin)).toBe(true);
    const stdin = unwrap<{ stdin: string }>(inputs).stdin;
    expect(stdin).toContain("export REGISTRY_USERNAME=deploy-bot");
    const cmd = stdin.split("\n").find((l) => l.includes("container-deploy.sh"))!;
    expect(cmd).toContain(`--pull '${DIGEST}'`);
    expect(cmd).not.toContain("s3cret-token");
    expect(stdin).toMatch(/<<'FASTAPI_EDGE_REGISTRY_[0-9A-F]{12}'\ns3cret-token\nFASTAPI_EDGE_REGISTRY_[0-9A-F]{12}\n/);
  });

  it("refuses, before any resource, what this runtime cannot honour", async () => {
    const reject = (cfg: Record<string, string>, re: RegExp, sec: Record<string, string> = {}) =>
      expect(runProgram(cfg, { secrets: { hostPrivateKey: FAKE_PRIVATE_KEY, ...sec } })).rejects.toThrow(re);
    await reject({ ...existing, appImage: "ghcr.io/acme/api:latest" }, /appImage.*pinned by digest/);
    await reject({ ...existing, appRuntime: "host", appImage: DIGEST }, /appImage.*only used with appRuntime container/);
    await reject({ ...existing, appRegistryUsername: "bot" }, /appRegistryUsername.*only used with appImage/);
    await reject({ ...existing, appImage: DIGEST, appRegistryUsername: "bot" }, /appRegistryPassword is required/);
    await reject({ ...existing, appImage: DIGEST }, /appRegistryPassword is only used with appRegistryUsername/, {
      appRegistryPassword: "x",
    });
    await reject(
      { ...existing, appSource: "test/fixtures/app-venv" },
      /appRuntime container builds the image from Debian's FastAPI.*requirements\.txt would be ignored/,
    );
    await reject({ ...existing, appVenvSystemPackages: "true" }, /container takes the app's packages from the image/);
    await expect(
      runProgram(
        { domain: "api.example.com", frontend: "alb", route53ZoneId: "Z0123456789ABC", appRuntime: "container", appImage: DIGEST },
        {},
      ),
    ).rejects.toThrow(/container is for frontend nginx/);
  });
});
