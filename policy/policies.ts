// The policies of the fastapi-edge-baseline pack. Kept apart from index.ts
// (which starts the analyzer gRPC server) so tests can import and call the
// very same policy objects the pack serves.
import * as policySdk from "@pulumi/policy";
import type {
  ReportViolation,
  ResourceValidationArgs,
  ResourceValidationPolicy,
  StackValidationArgs,
  StackValidationPolicy,
} from "@pulumi/policy";
import {
  LISTENER_TYPES,
  TYPES,
  appInstancePrivateFindings,
  appPortsFromEdgeOnlyFindings,
  autoScalingGroupFindings,
  launchTemplateFindings,
  ebsVolumeEncryptionFindings,
  imdsv2Findings,
  instanceEncryptionFindings,
  listenerFindings,
  plaintextCredentialFindings,
  sshOpenToWorldFindings,
  type Props,
} from "./rules";

/**
 * The policy SDK throws UnknownValueError (exported at runtime, but its type
 * declaration is stripped from the published .d.ts) when a policy reads a
 * value that is unknown during preview.
 */
type ErrorClass = abstract new (...args: never[]) => Error;
const unknownValueError: ErrorClass | undefined = (policySdk as unknown as { UnknownValueError?: ErrorClass }).UnknownValueError;

export function isUnknownValueError(e: unknown): boolean {
  if (unknownValueError !== undefined && e instanceof unknownValueError) return true;
  return e instanceof Error && / can't be known during preview$/.test(e.message);
}

function report(findings: readonly string[], reportViolation: ReportViolation, urn?: string): void {
  for (const message of findings) reportViolation(message, urn);
}

/** Resource policy that only looks at the given types (pure rules do the work). */
function forTypes(
  types: readonly string[],
  check: (props: Props, args: ResourceValidationArgs) => string[],
): (args: ResourceValidationArgs, reportViolation: ReportViolation) => void {
  return (args, reportViolation) => {
    if (!types.includes(args.type)) return;
    report(check(args.props, args), reportViolation);
  };
}

export const noSshFromInternet: ResourceValidationPolicy = {
  name: "no-ssh-from-internet",
  description: "Security groups must not allow TCP port 22 (or a range or protocol covering it) from 0.0.0.0/0 or ::/0.",
  enforcementLevel: "mandatory",
  severity: "critical",
  validateResource: forTypes([TYPES.securityGroup, TYPES.securityGroupRule, TYPES.vpcIngressRule], (props, args) =>
    sshOpenToWorldFindings(args.type, props),
  ),
};

export const instanceRequiresImdsv2: ResourceValidationPolicy = {
  name: "instance-requires-imdsv2",
  description: 'EC2 instances must require IMDSv2 (metadataOptions.httpTokens = "required").',
  enforcementLevel: "mandatory",
  severity: "high",
  validateResource: forTypes([TYPES.instance], (props) => imdsv2Findings(props)),
};

export const ebsEncrypted: ResourceValidationPolicy = {
  name: "ebs-encrypted",
  description: "EC2 root and inline EBS volumes, and aws.ebs.Volume, must be encrypted.",
  enforcementLevel: "mandatory",
  severity: "high",
  validateResource: forTypes([TYPES.instance, TYPES.ebsVolume], (props, args) =>
    args.type === TYPES.instance ? instanceEncryptionFindings(props) : ebsVolumeEncryptionFindings(props),
  ),
};

export const listenerTls12AndRedirect: ResourceValidationPolicy = {
  name: "lb-listener-tls12-and-https-redirect",
  description: "HTTPS/TLS load balancer listeners must use a TLS 1.2+ ssl policy; HTTP listeners may only redirect to HTTPS.",
  enforcementLevel: "mandatory",
  severity: "high",
  validateResource: forTypes(LISTENER_TYPES, (props) => listenerFindings(props)),
};

export const launchTemplateHardened: ResourceValidationPolicy = {
  name: "launch-template-hardened",
  description:
    'Launch templates must require IMDSv2, encrypt every EBS volume they declare (at least the root), and set associatePublicIpAddress "false".',
  enforcementLevel: "mandatory",
  severity: "high",
  validateResource: forTypes([TYPES.launchTemplate], (props) => launchTemplateFindings(props)),
};

export const asgElbHealthCheck: ResourceValidationPolicy = {
  name: "asg-elb-health-check",
  description: 'Auto Scaling Groups behind a load balancer must use healthCheckType "ELB".',
  enforcementLevel: "mandatory",
  severity: "medium",
  validateResource: forTypes([TYPES.autoScalingGroup], (props) => autoScalingGroupFindings(props)),
};

export const appInstancesPrivate: ResourceValidationPolicy = {
  name: "app-instances-private",
  description: 'App instances (tagged "fastapi-edge:role" = "app-host", appHostCount) must set associatePublicIpAddress: false.',
  enforcementLevel: "mandatory",
  severity: "high",
  validateResource: forTypes([TYPES.instance], (props) => appInstancePrivateFindings(props)),
};

export const appPortsFromEdgeOnly: ResourceValidationPolicy = {
  name: "app-ports-from-edge-only",
  description:
    'The app instances\' security group and its ingress rules (tagged "fastapi-edge:role" = "app-host") may only admit security groups: no CIDR or prefix list sources.',
  enforcementLevel: "mandatory",
  severity: "high",
  validateResource: forTypes([TYPES.securityGroup, TYPES.vpcIngressRule], (props, args) => appPortsFromEdgeOnlyFindings(args.type, props)),
};

export const noPlaintextCredentialInputs: ResourceValidationPolicy = {
  name: "no-plaintext-credential-inputs",
  description:
    "Before a resource is created: properties holding private keys or passwords must be secret (listed in additionalSecretOutputs).",
  enforcementLevel: "mandatory",
  severity: "critical",
  validateResource: (args, reportViolation) => {
    report(
      plaintextCredentialFindings(args.type, args.props, args.opts.additionalSecretOutputs ?? [], isUnknownValueError),
      reportViolation,
    );
  },
};

export const noPlaintextCredentialsInState: StackValidationPolicy = {
  name: "no-plaintext-credentials-in-state",
  description:
    "After preview/update, no resource in the stack (its final state) may hold private key material or a password outside a secret property.",
  enforcementLevel: "mandatory",
  severity: "critical",
  validateStack: (args: StackValidationArgs, reportViolation: ReportViolation) => {
    for (const r of args.resources) {
      report(
        plaintextCredentialFindings(r.type, r.props, r.opts.additionalSecretOutputs ?? [], isUnknownValueError).map(
          (m) => `${r.name}: ${m}`,
        ),
        reportViolation,
        r.urn,
      );
    }
  },
};

export const policies: (ResourceValidationPolicy | StackValidationPolicy)[] = [
  noSshFromInternet,
  instanceRequiresImdsv2,
  ebsEncrypted,
  listenerTls12AndRedirect,
  noPlaintextCredentialInputs,
  noPlaintextCredentialsInState,
  launchTemplateHardened,
  asgElbHealthCheck,
  appInstancesPrivate,
  appPortsFromEdgeOnly,
];
