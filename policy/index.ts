// fastapi-edge-baseline: the guardrails every stack of this project must pass.
//
//   pulumi preview --policy-pack policy     (or: pulumi up --policy-pack policy)
//
// Pulumi starts this file as an analyzer plugin (PulumiPolicy.yaml, runtime
// nodejs); constructing the PolicyPack starts its gRPC server. The policies
// themselves live in policies.ts and the pure rules in rules.ts.
import { PolicyPack } from "@pulumi/policy";
import { policies } from "./policies";

new PolicyPack("fastapi-edge-baseline", {
  description: "Baseline guardrails for fastapi-edge: no public SSH, IMDSv2, encrypted EBS, TLS 1.2+ listeners, no plaintext keys.",
  enforcementLevel: "mandatory",
  policies,
});
