// Pure validation rules for the fastapi-edge baseline policy pack.
//
// Every function takes the plain property bag the Pulumi engine hands a policy
// (resource inputs for resource policies, each resource's final outputs for
// stack policies) and returns the violation messages; an empty array means
// compliant. They have no Pulumi dependencies so they can be unit-tested with
// literal objects; `policies.ts` wires them into the pack's policies.
//
// Unknown values: during `pulumi preview` a property that depends on another
// resource's output is an "unknown" and the engine's proxy throws when a
// policy reads it. The resource rules let that error propagate (the policy
// SDK then reports "can't run policy during preview" as advisory, and the
// rule is enforced for real during `pulumi up`, when the value is known).
// The credential scan walks whole objects, so it takes an `isUnknownError`
// predicate and skips unknown leaves instead of giving up on the resource.

export type Props = Readonly<Record<string, unknown>>;

export const TYPES = {
  securityGroup: "aws:ec2/securityGroup:SecurityGroup",
  securityGroupRule: "aws:ec2/securityGroupRule:SecurityGroupRule",
  vpcIngressRule: "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
  instance: "aws:ec2/instance:Instance",
  ebsVolume: "aws:ebs/volume:Volume",
  lbListener: "aws:lb/listener:Listener",
  albListener: "aws:alb/listener:Listener",
  launchTemplate: "aws:ec2/launchTemplate:LaunchTemplate",
  autoScalingGroup: "aws:autoscaling/group:Group",
  stack: "pulumi:pulumi:Stack",
} as const;

export const LISTENER_TYPES: readonly string[] = [TYPES.lbListener, TYPES.albListener];

/** TCP port that must never be reachable from the whole internet. */
export const SSH_PORT = 22;

/**
 * ELB security policies whose minimum protocol is TLS 1.2. Anything else
 * (ELBSecurityPolicy-2016-08, the API default, and every *-1-0-* / *-1-1-*
 * policy) still negotiates TLS 1.0 or 1.1.
 */
export const TLS12_PLUS_SSL_POLICIES: ReadonlySet<string> = new Set([
  // TLS 1.3 + 1.2 (2021-06 family)
  "ELBSecurityPolicy-TLS13-1-2-2021-06",
  "ELBSecurityPolicy-TLS13-1-2-Res-2021-06",
  "ELBSecurityPolicy-TLS13-1-2-Ext1-2021-06",
  "ELBSecurityPolicy-TLS13-1-2-Ext2-2021-06",
  "ELBSecurityPolicy-TLS13-1-3-2021-06",
  // FIPS (2023-04 family)
  "ELBSecurityPolicy-TLS13-1-2-FIPS-2023-04",
  "ELBSecurityPolicy-TLS13-1-2-Res-FIPS-2023-04",
  "ELBSecurityPolicy-TLS13-1-2-Ext0-FIPS-2023-04",
  "ELBSecurityPolicy-TLS13-1-2-Ext1-FIPS-2023-04",
  "ELBSecurityPolicy-TLS13-1-2-Ext2-FIPS-2023-04",
  "ELBSecurityPolicy-TLS13-1-3-FIPS-2023-04",
  // Hybrid post-quantum key exchange (2025-09 family)
  "ELBSecurityPolicy-TLS13-1-2-PQ-2025-09",
  "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09",
  "ELBSecurityPolicy-TLS13-1-2-Ext1-PQ-2025-09",
  "ELBSecurityPolicy-TLS13-1-2-Ext2-PQ-2025-09",
  "ELBSecurityPolicy-TLS13-1-3-PQ-2025-09",
  "ELBSecurityPolicy-TLS13-1-2-FIPS-PQ-2025-09",
  "ELBSecurityPolicy-TLS13-1-2-Res-FIPS-PQ-2025-09",
  "ELBSecurityPolicy-TLS13-1-2-Ext0-FIPS-PQ-2025-09",
  "ELBSecurityPolicy-TLS13-1-2-Ext1-FIPS-PQ-2025-09",
  "ELBSecurityPolicy-TLS13-1-2-Ext2-FIPS-PQ-2025-09",
  "ELBSecurityPolicy-TLS13-1-3-FIPS-PQ-2025-09",
  // TLS 1.2 only
  "ELBSecurityPolicy-TLS-1-2-2017-01",
  "ELBSecurityPolicy-TLS-1-2-Ext-2018-06",
  "ELBSecurityPolicy-FS-1-2-2019-08",
  "ELBSecurityPolicy-FS-1-2-Res-2019-08",
  "ELBSecurityPolicy-FS-1-2-Res-2020-10",
]);

// ---------------------------------------------------------------------------
// small helpers
// ---------------------------------------------------------------------------

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function asRecord(v: unknown): Record<string, unknown> | undefined {
  return isRecord(v) ? v : undefined;
}

function asArray(v: unknown): readonly unknown[] {
  return Array.isArray(v) ? v : [];
}

function asStrings(v: unknown): string[] {
  return asArray(v).filter((x): x is string => typeof x === "string");
}

function asNumber(v: unknown): number | undefined {
  if (typeof v === "number" && Number.isFinite(v)) return v;
  if (typeof v === "string" && /^-?\d+$/.test(v.trim())) return Number(v.trim());
  return undefined;
}

// ---------------------------------------------------------------------------
// (a) no SSH from the whole internet
// ---------------------------------------------------------------------------

/** True for a CIDR that matches every IPv4 or every IPv6 address (prefix length 0). */
export function isWorldCidr(cidr: string): boolean {
  const m = /^\s*([0-9a-fA-F:.]+)\/(\d+)\s*$/.exec(cidr);
  return m !== null && Number(m[2]) === 0;
}

/**
 * True if a rule with this protocol/port range admits TCP port 22.
 * Protocol "-1" / "all" means every protocol and every port; "tcp" or "6"
 * uses the range (a missing or negative bound counts as open-ended, which is
 * how AWS treats -1). Other protocols (udp, icmp, ...) can't carry SSH.
 */
export function ruleCoversSsh(protocol: unknown, fromPort: unknown, toPort: unknown): boolean {
  const proto = typeof protocol === "string" ? protocol.trim().toLowerCase() : String(protocol ?? "");
  if (proto === "-1" || proto === "all") return true;
  if (proto !== "tcp" && proto !== "6") return false;
  const from = asNumber(fromPort);
  const to = asNumber(toPort);
  const lo = from === undefined || from < 0 ? 0 : from;
  const hi = to === undefined || to < 0 ? 65535 : to;
  return lo <= SSH_PORT && SSH_PORT <= hi;
}

function describeRange(protocol: unknown, fromPort: unknown, toPort: unknown): string {
  const proto = String(protocol ?? "?");
  if (proto === "-1" || proto.toLowerCase() === "all") return "all traffic";
  return `${proto} ${String(fromPort ?? "*")}-${String(toPort ?? "*")}`;
}

/** inline `ingress` blocks of aws:ec2/securityGroup:SecurityGroup */
export function securityGroupSshFindings(props: Props): string[] {
  const out: string[] = [];
  asArray(props["ingress"]).forEach((raw, i) => {
    const rule = asRecord(raw);
    if (!rule) return;
    if (!ruleCoversSsh(rule["protocol"], rule["fromPort"], rule["toPort"])) return;
    const world = [...asStrings(rule["cidrBlocks"]), ...asStrings(rule["ipv6CidrBlocks"])].filter(isWorldCidr);
    if (world.length > 0) {
      out.push(
        `ingress[${i}] (${describeRange(rule["protocol"], rule["fromPort"], rule["toPort"])}) opens SSH port 22 to ${world.join(", ")}; ` +
          `restrict it to the operator CIDRs (sshAllowedCidrs) or drop it.`,
      );
    }
  });
  return out;
}

/** aws:ec2/securityGroupRule:SecurityGroupRule (type ingress) */
export function securityGroupRuleSshFindings(props: Props): string[] {
  if (String(props["type"] ?? "").toLowerCase() !== "ingress") return [];
  if (!ruleCoversSsh(props["protocol"], props["fromPort"], props["toPort"])) return [];
  const world = [...asStrings(props["cidrBlocks"]), ...asStrings(props["ipv6CidrBlocks"])].filter(isWorldCidr);
  if (world.length === 0) return [];
  return [
    `ingress rule (${describeRange(props["protocol"], props["fromPort"], props["toPort"])}) opens SSH port 22 to ${world.join(", ")}; ` +
      `restrict it to the operator CIDRs (sshAllowedCidrs) or drop it.`,
  ];
}

/** aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule */
export function vpcIngressRuleSshFindings(props: Props): string[] {
  if (!ruleCoversSsh(props["ipProtocol"], props["fromPort"], props["toPort"])) return [];
  const world = [props["cidrIpv4"], props["cidrIpv6"]].filter((c): c is string => typeof c === "string" && isWorldCidr(c));
  if (world.length === 0) return [];
  return [
    `ingress rule (${describeRange(props["ipProtocol"], props["fromPort"], props["toPort"])}) opens SSH port 22 to ${world.join(", ")}; ` +
      `restrict it to the operator CIDRs (sshAllowedCidrs) or drop it.`,
  ];
}

/** Dispatch on resource type; [] for types this rule doesn't cover. */
export function sshOpenToWorldFindings(type: string, props: Props): string[] {
  switch (type) {
    case TYPES.securityGroup:
      return securityGroupSshFindings(props);
    case TYPES.securityGroupRule:
      return securityGroupRuleSshFindings(props);
    case TYPES.vpcIngressRule:
      return vpcIngressRuleSshFindings(props);
    default:
      return [];
  }
}

// ---------------------------------------------------------------------------
// (b) IMDSv2 only
// ---------------------------------------------------------------------------

/** aws:ec2/instance:Instance must set metadataOptions.httpTokens = "required". */
export function imdsv2Findings(props: Props): string[] {
  const mo = asRecord(props["metadataOptions"]);
  const tokens = mo?.["httpTokens"];
  if (tokens === "required") return [];
  return [
    `metadataOptions.httpTokens is ${tokens === undefined ? 'not set (AWS defaults to "optional", i.e. IMDSv1 allowed)' : JSON.stringify(tokens)}; ` +
      `set metadataOptions: { httpTokens: "required" } so only IMDSv2 session tokens are accepted.`,
  ];
}

// ---------------------------------------------------------------------------
// (c) encrypted EBS
// ---------------------------------------------------------------------------

/** Root volume (and any inline EBS volumes) of aws:ec2/instance:Instance must be encrypted. */
export function instanceEncryptionFindings(props: Props): string[] {
  const out: string[] = [];
  const root = asRecord(props["rootBlockDevice"]);
  if (root?.["encrypted"] !== true) {
    out.push(
      root === undefined
        ? `rootBlockDevice is not set, so root-volume encryption depends on the account's EBS default; set rootBlockDevice: { encrypted: true }.`
        : `rootBlockDevice.encrypted is ${JSON.stringify(root["encrypted"] ?? null)}; set it to true.`,
    );
  }
  asArray(props["ebsBlockDevices"]).forEach((raw, i) => {
    const dev = asRecord(raw);
    if (dev && dev["encrypted"] !== true) {
      out.push(`ebsBlockDevices[${i}] (${String(dev["deviceName"] ?? "?")}) is not encrypted; set encrypted: true.`);
    }
  });
  return out;
}

/** aws:ebs/volume:Volume must be encrypted. */
export function ebsVolumeEncryptionFindings(props: Props): string[] {
  if (props["encrypted"] === true) return [];
  return [`encrypted is ${JSON.stringify(props["encrypted"] ?? null)}; EBS volumes must set encrypted: true.`];
}

// ---------------------------------------------------------------------------
// (f) launch templates and Auto Scaling Groups
// ---------------------------------------------------------------------------

/** A launch template's boolean-as-string fields ("true"/"false"), or a real boolean. */
function isTrue(v: unknown): boolean {
  return v === true || v === "true";
}

/**
 * aws:ec2/launchTemplate:LaunchTemplate: the instances it launches require IMDSv2,
 * encrypt every EBS volume it declares (and declare at least one, so the root
 * volume's encryption does not rest on the account's default), and get no public
 * address (a network interface must say associatePublicIpAddress "false": the
 * subnet's own setting, true in a default VPC, applies otherwise).
 */
export function launchTemplateFindings(props: Props): string[] {
  const out: string[] = [];
  const tokens = asRecord(props["metadataOptions"])?.["httpTokens"];
  if (tokens !== "required") {
    out.push(
      `metadataOptions.httpTokens is ${tokens === undefined ? "not set (IMDSv1 allowed)" : JSON.stringify(tokens)}; ` +
        `set metadataOptions: { httpTokens: "required" } so instances accept only IMDSv2 session tokens.`,
    );
  }
  const ebs = asArray(props["blockDeviceMappings"])
    .map((raw) => asRecord(raw))
    .filter((m): m is Record<string, unknown> => m !== undefined && asRecord(m["ebs"]) !== undefined);
  if (ebs.length === 0) {
    out.push(
      "blockDeviceMappings declares no EBS volume, so root-volume encryption depends on the account's EBS default; " +
        'declare the root device with ebs: { encrypted: "true" }.',
    );
  }
  for (const m of ebs) {
    const enc = asRecord(m["ebs"])!["encrypted"];
    if (!isTrue(enc)) {
      out.push(
        `blockDeviceMappings (${String(m["deviceName"] ?? "?")}) ebs.encrypted is ${JSON.stringify(enc ?? null)}; set it to "true".`,
      );
    }
  }
  const nics = asArray(props["networkInterfaces"]).map((raw) => asRecord(raw) ?? {});
  nics.forEach((nic, i) => {
    if (isTrue(nic["associatePublicIpAddress"])) {
      out.push(`networkInterfaces[${i}].associatePublicIpAddress is true; instances behind a load balancer need no public address.`);
    }
  });
  if (!nics.some((nic) => nic["associatePublicIpAddress"] === "false" || nic["associatePublicIpAddress"] === false)) {
    out.push(
      'no network interface sets associatePublicIpAddress "false", so the subnet decides (a default VPC\'s subnets assign public addresses); ' +
        'set networkInterfaces: [{ deviceIndex: 0, associatePublicIpAddress: "false", securityGroups: [...] }].',
    );
  }
  return out;
}

/** aws:autoscaling/group:Group behind a load balancer must replace instances the load balancer finds unhealthy. */
export function autoScalingGroupFindings(props: Props): string[] {
  const behindLb =
    asArray(props["targetGroupArns"]).length > 0 ||
    asArray(props["loadBalancers"]).length > 0 ||
    asArray(props["trafficSources"]).length > 0;
  if (!behindLb) return [];
  const type = props["healthCheckType"];
  if (type === "ELB") return [];
  return [
    `healthCheckType is ${type === undefined ? "not set (EC2: only a stopped or impaired instance is replaced)" : JSON.stringify(type)} ` +
      'but the group is behind a load balancer; set healthCheckType: "ELB" (with a healthCheckGracePeriod) so an instance whose app fails the health check is replaced.',
  ];
}

// ---------------------------------------------------------------------------
// (g) the app instances behind the nginx edge (appHostCount)
// ---------------------------------------------------------------------------
//
// components/ec2-app-hosts.ts tags everything it creates (the instances, their
// security group and its rules) with APP_HOST_ROLE_TAG; that tag, not a
// resource name, is how these rules tell an app host from the edge. The
// tag-less aws:ec2/securityGroupRule:SecurityGroupRule can't carry the marker,
// so the component uses aws:vpc/securityGroupIngressRule rules.

/** The tag components/ec2-app-hosts.ts puts on the app instances, their security group and its rules. */
export const APP_HOST_ROLE_TAG = { key: "fastapi-edge:role", value: "app-host" } as const;

/** True if the resource's `tags` carry APP_HOST_ROLE_TAG. */
export function isAppHostResource(props: Props): boolean {
  return asRecord(props["tags"])?.[APP_HOST_ROLE_TAG.key] === APP_HOST_ROLE_TAG.value;
}

/** An app host (aws:ec2/instance:Instance with APP_HOST_ROLE_TAG) must set associatePublicIpAddress: false. */
export function appInstancePrivateFindings(props: Props): string[] {
  if (!isAppHostResource(props)) return [];
  const pub = props["associatePublicIpAddress"];
  if (pub === false) return [];
  return [
    `associatePublicIpAddress is ${pub === undefined ? "not set, so the subnet decides (a default VPC's subnets assign public addresses)" : JSON.stringify(pub)}; ` +
      `app hosts are reached through the edge only: set associatePublicIpAddress: false.`,
  ];
}

const EDGE_ONLY_FIX = "admit the app hosts' ports only from the edge's security group";

/** Inline `ingress` of an app hosts' aws:ec2/securityGroup:SecurityGroup: security-group sources only. */
export function appSecurityGroupIngressFindings(props: Props): string[] {
  if (!isAppHostResource(props)) return [];
  const out: string[] = [];
  asArray(props["ingress"]).forEach((raw, i) => {
    const rule = asRecord(raw);
    if (!rule) return;
    const range = describeRange(rule["protocol"], rule["fromPort"], rule["toPort"]);
    for (const key of ["cidrBlocks", "ipv6CidrBlocks", "prefixListIds"]) {
      const sources = asStrings(rule[key]);
      if (sources.length > 0) {
        out.push(`ingress[${i}] (${range}) admits ${key} ${sources.join(", ")}; ${EDGE_ONLY_FIX} (securityGroups) and drop ${key}.`);
      }
    }
    if (asStrings(rule["securityGroups"]).length === 0) {
      out.push(
        `ingress[${i}] (${range}) names no source security group; ${EDGE_ONLY_FIX}: set securityGroups: [<edge security group id>].`,
      );
    }
  });
  return out;
}

/** An app hosts' aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule: a referenced security group, no CIDR or prefix list. */
export function appVpcIngressRuleFindings(props: Props): string[] {
  if (!isAppHostResource(props)) return [];
  const range = describeRange(props["ipProtocol"], props["fromPort"], props["toPort"]);
  const out: string[] = [];
  for (const key of ["cidrIpv4", "cidrIpv6", "prefixListId"]) {
    const source = props[key];
    if (typeof source === "string" && source !== "") {
      out.push(`ingress rule (${range}) admits ${key} ${source}; ${EDGE_ONLY_FIX} (referencedSecurityGroupId) and drop ${key}.`);
    }
  }
  const ref = props["referencedSecurityGroupId"];
  if (typeof ref !== "string" || ref === "") {
    out.push(
      `ingress rule (${range}) has no referencedSecurityGroupId; ${EDGE_ONLY_FIX}: set referencedSecurityGroupId to the edge security group's id.`,
    );
  }
  return out;
}

/** Dispatch on resource type; [] for types (and resources without APP_HOST_ROLE_TAG) this rule doesn't cover. */
export function appPortsFromEdgeOnlyFindings(type: string, props: Props): string[] {
  switch (type) {
    case TYPES.securityGroup:
      return appSecurityGroupIngressFindings(props);
    case TYPES.vpcIngressRule:
      return appVpcIngressRuleFindings(props);
    default:
      return [];
  }
}

// ---------------------------------------------------------------------------
// (d) load balancer listeners: TLS 1.2+ and HTTP only redirects
// ---------------------------------------------------------------------------

/**
 * HTTPS/TLS listeners must name an ssl policy from TLS12_PLUS_SSL_POLICIES
 * (a missing sslPolicy means the API default ELBSecurityPolicy-2016-08, which
 * allows TLS 1.0). HTTP listeners (also the default when protocol is unset)
 * may only answer with redirects to HTTPS.
 */
export function listenerFindings(props: Props): string[] {
  const protocol = String(props["protocol"] ?? "HTTP").toUpperCase();
  if (protocol === "HTTPS" || protocol === "TLS") {
    const policy = props["sslPolicy"];
    if (typeof policy === "string" && TLS12_PLUS_SSL_POLICIES.has(policy)) return [];
    return [
      `${protocol} listener uses sslPolicy ${policy === undefined ? "(unset: ELBSecurityPolicy-2016-08, allows TLS 1.0)" : JSON.stringify(policy)}; ` +
        `use a TLS 1.2+ policy such as ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09.`,
    ];
  }
  if (protocol !== "HTTP") return [];
  const actions = asArray(props["defaultActions"]);
  if (actions.length === 0) return [`HTTP listener has no defaultActions; it must redirect to HTTPS.`];
  const out: string[] = [];
  actions.forEach((raw, i) => {
    const action = asRecord(raw) ?? {};
    const type = String(action["type"] ?? "");
    const redirect = asRecord(action["redirect"]);
    const target = String(redirect?.["protocol"] ?? "");
    if (type !== "redirect") {
      out.push(
        `HTTP listener defaultActions[${i}] is ${JSON.stringify(type)}; plain HTTP may only redirect to HTTPS (type "redirect", redirect.protocol "HTTPS").`,
      );
    } else if (target.toUpperCase() !== "HTTPS") {
      out.push(
        `HTTP listener defaultActions[${i}] redirects to protocol ${JSON.stringify(target || "#{protocol}")}; it must redirect to "HTTPS".`,
      );
    }
  });
  return out;
}

// ---------------------------------------------------------------------------
// (e) credentials and private keys must be stored as secrets
// ---------------------------------------------------------------------------
//
// What a policy can and cannot see: the policy SDK (@pulumi/policy 1.21,
// deserialize.ts) unwraps secret values into plain values before validation,
// so `pulumi.secret(x)` is invisible to validateResource/validateStack. What
// *is* visible is the resource option `additionalSecretOutputs`, and every
// generated Pulumi SDK puts each schema-secret property there (tls.PrivateKey:
// privateKeyPem/privateKeyOpenssh/privateKeyPemPkcs8; command.remote.Command:
// connection; aws.rds.Instance: password; ssm.Parameter: value; ...) and also
// wraps the matching input in pulumi.secret(). The engine (pulumi 3.259,
// step_executor.go) marks every output listed there secret in state.
//
// So the rule is: a property that holds a credential must be listed (by its
// top-level name) in the resource's additionalSecretOutputs. A credential is
//   - a non-empty string containing private-key material (PEM/OpenSSH
//     "-----BEGIN ... PRIVATE KEY-----", also inside base64 such as userData),
//     wherever it appears; this is how a tls.PrivateKey's output is traced
//     into any consumer (userData, a command script, a tag, ...); or
//   - a non-empty string under a key whose name says credential
//     (privateKey, password, passphrase, secret) - except names that are
//     references to a credential rather than the credential itself
//     (...Arn, ...Id, ...Name, ...Version, ...Length, write-only ...Wo).
// A value that is secret only because the program wrapped it in
// pulumi.secret() is still reported, because no policy can verify that; the
// fix is to pass it as a secret *and* list the property in the resource's
// `additionalSecretOutputs`, which makes the secrecy explicit and checkable
// (and keeps the provider's copy in the outputs encrypted as well).

export const CREDENTIAL_NAME = /private_?key|passw(or)?d|passphrase|secret/i;
export const REFERENCE_NAME =
  /(arn|arns|id|ids|name|names|version|versions|versionid|stage|stages|length|count|type|wo|woversion|enabled|required|path|file|rotation|rotationrules|days)$/i;
const PRIVATE_KEY_MARKER = /-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----/;
const BASE64_BLOB = /^[A-Za-z0-9+/\r\n]+={0,2}\s*$/;

/** True if the string is, contains, or base64-encodes private key material. */
export function containsPrivateKeyMaterial(value: string): boolean {
  if (PRIVATE_KEY_MARKER.test(value)) return true;
  const compact = value.replace(/\s+/g, "");
  if (compact.length >= 64 && BASE64_BLOB.test(value)) {
    const decoded = Buffer.from(compact, "base64").toString("latin1");
    return PRIVATE_KEY_MARKER.test(decoded);
  }
  return false;
}

export function isCredentialName(key: string): boolean {
  return CREDENTIAL_NAME.test(key) && !REFERENCE_NAME.test(key);
}

export interface CredentialLeaf {
  /** dotted path, e.g. `connection.privateKey`, `ingress[0].description` */
  readonly path: string;
  /** the resource's top-level property the leaf lives under */
  readonly topLevel: string;
  readonly reason: "private-key-material" | "credential-name";
}

/** Default predicate: never treat an error as an unknown value. */
const noUnknowns = (): boolean => false;

/**
 * Walk a property bag and list the string leaves that hold credentials.
 * `isUnknownError` recognises the error the policy SDK's proxy throws when a
 * value is unknown during preview; such leaves are skipped.
 */
export function findCredentialLeaves(props: Props, isUnknownError: (e: unknown) => boolean = noUnknowns): CredentialLeaf[] {
  const found: CredentialLeaf[] = [];
  const seen = new Set<unknown>();

  const read = (obj: object, key: string | number): { ok: true; value: unknown } | { ok: false } => {
    try {
      return { ok: true, value: (obj as Record<string | number, unknown>)[key] };
    } catch (e) {
      if (isUnknownError(e)) return { ok: false };
      throw e;
    }
  };

  const visit = (value: unknown, path: string, topLevel: string, nameIsCredential: boolean, inTags: boolean): void => {
    if (typeof value === "string") {
      if (value.length === 0) return;
      if (containsPrivateKeyMaterial(value)) {
        found.push({ path, topLevel, reason: "private-key-material" });
      } else if (nameIsCredential && !inTags) {
        found.push({ path, topLevel, reason: "credential-name" });
      }
      return;
    }
    if (typeof value !== "object" || value === null) return;
    if (seen.has(value)) return;
    seen.add(value);
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) {
        const r = read(value, i);
        if (r.ok) visit(r.value, `${path}[${i}]`, topLevel, nameIsCredential, inTags);
      }
      return;
    }
    for (const key of Object.keys(value)) {
      const r = read(value, key);
      if (r.ok) visit(r.value, `${path}.${key}`, topLevel, isCredentialName(key), inTags);
    }
  };

  for (const key of Object.keys(props)) {
    let value: unknown;
    try {
      value = props[key];
    } catch (e) {
      if (isUnknownError(e)) continue;
      throw e;
    }
    // Tag maps are metadata: their keys are free text ("secret-rotation"), so
    // only their values are checked, and only for key material.
    const inTags = key === "tags" || key === "tagsAll";
    visit(value, key, key, isCredentialName(key), inTags);
  }
  return found;
}

/**
 * Credential leaves whose top-level property is not declared secret via
 * additionalSecretOutputs. `pulumi:pulumi:Stack` is skipped: stack outputs
 * carry no additionalSecretOutputs and their secret markers are stripped
 * before policies run, so no policy can tell a secret export from a plain one.
 */
export function plaintextCredentialFindings(
  type: string,
  props: Props,
  additionalSecretOutputs: readonly string[],
  isUnknownError: (e: unknown) => boolean = noUnknowns,
): string[] {
  if (type === TYPES.stack) return [];
  const secret = new Set(additionalSecretOutputs);
  const leaves = findCredentialLeaves(props, isUnknownError).filter((l) => !secret.has(l.topLevel));
  return leaves.map((l) =>
    l.reason === "private-key-material"
      ? `property "${l.path}" contains private key material but "${l.topLevel}" is not a secret property of ${type}; ` +
        `do not copy keys into it (userData, scripts, tags are readable in plain text), or list "${l.topLevel}" in additionalSecretOutputs.`
      : `property "${l.path}" looks like a credential but "${l.topLevel}" is not a secret property of ${type}; ` +
        `pass it as a secret and list "${l.topLevel}" in the resource's additionalSecretOutputs (a pulumi.secret() wrapper alone is invisible to policies), or pass a reference (ARN/ID) instead.`,
  );
}
