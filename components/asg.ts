// albAutoScaling: the ALB's targets are the instances of an Auto Scaling Group
// instead of the one EC2 instance. The release (the app tree, its wheelhouse and
// the host scripts that install it) is a bundle in an S3 bucket made here; each
// instance's user data (files/scripts/asg-user-data.sh) fetches it with the
// instance role, checks its sha256 and installs it as app-deploy.sh does on a
// single host. A release or setting change is a new launch template version,
// which the group rolls out by instance refresh (automatic rollback on failure).
// The instances have no public address and no SSH; they admit the app ports
// from the ALB's security group alone. See docs/asg.md.
import * as aws from "@pulumi/aws";
import * as pulumi from "@pulumi/pulumi";
import { mkdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { releaseBundle, releaseKey, renderUserData, type UserDataSettings } from "../lib/asg";
import { appPorts, EdgeConfig, PROJECT } from "../lib/config";
import { PythonDeps } from "../lib/pyapp";
import { renderAppEnv } from "../lib/units";
import { releaseId, venvArgs } from "./app";
import { hostPackages } from "./bootstrap";
import { EC2_ASSUME_ROLE_POLICY, hostOsAmi } from "./ec2";

export interface AutoScalingFleetArgs {
  config: EdgeConfig;
  tags: Record<string, string>;
  /** Directory the app source and wheelhouse are read from. */
  projectDir: string;
  /** The app's dependencies file: ALB mode always has one (uvicorn 0.33+, readAppRuntime). */
  deps: PythonDeps;
  vpcId: pulumi.Input<string>;
  /** uvicorn trusts forwarded headers from this block (the ALB's nodes have changing addresses in it). */
  vpcCidr: pulumi.Input<string>;
  /** The ALB's security group: the only source the instances admit the app ports from. */
  albSecurityGroupId: pulumi.Input<string>;
  /** One target group per app port, in port order (AlbFrontend with target kind autoScalingGroup). */
  targetGroups: aws.lb.TargetGroup[];
  /** The load balancer, for the request-count metric's resource label. */
  loadBalancer: aws.lb.LoadBalancer;
}

/** Where the bundle is written for upload: outside the project, named by its hash. */
function writeBundle(archive: Buffer, sha256: string): string {
  const dir = path.join(tmpdir(), `${PROJECT}-bundles`);
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${sha256}.tar.gz`);
  writeFileSync(file, archive);
  return file;
}

/** Where the launch template's user data fetches the release from (an s3:// object in AWS). */
export interface ReleaseSource {
  release: string;
  url: string;
  sha256: string;
  /** The S3 object's version ("" outside S3). */
  versionId: string;
  /** The bucket's region ("" outside S3). */
  region: string;
  /** The VPC's block: uvicorn trusts X-Forwarded-* from it (the ALB's nodes). */
  vpcCidr: string;
}

/** The user data's settings for a release (test/e2e/asg-user-data.test.ts runs them on a guest with an http:// URL). */
export function userDataSettings(c: EdgeConfig, deps: PythonDeps | null, r: ReleaseSource): UserDataSettings {
  return {
    RELEASE_ID: r.release,
    RELEASE_URL: r.url,
    RELEASE_SHA256: r.sha256,
    RELEASE_VERSION_ID: r.versionId,
    S3_REGION: r.region,
    PACKAGES: hostPackages(c, true).join(" "),
    APP_PORTS: appPorts(c).join(" "),
    HEALTH_PATH: c.appHealthPath,
    APP_VERSION: c.appVersion,
    HEALTH_TIMEOUT: String(c.appStartTimeout),
    DEPLOY_ARGS: venvArgs(c, deps, undefined).join(" "),
    APP_ENV: renderAppEnv(c, r.vpcCidr, true),
  };
}

export class AutoScalingFleet extends pulumi.ComponentResource {
  readonly release: string;
  readonly bucket: aws.s3.Bucket;
  readonly bundle: aws.s3.BucketObjectv2;
  readonly securityGroup: aws.ec2.SecurityGroup;
  readonly launchTemplate: aws.ec2.LaunchTemplate;
  readonly group: aws.autoscaling.Group;
  readonly scaling: aws.autoscaling.Policy;

  constructor(name: string, args: AutoScalingFleetArgs, opts?: pulumi.ComponentResourceOptions) {
    super("fastapi-edge:alb:AutoScalingFleet", name, {}, opts);
    const c = args.config;
    const parent = { parent: this };
    const ports = appPorts(c);

    // ------------------------------------------------------------ the release
    // readAppRuntime (index.ts) has checked appSource and appWheelhouse before any resource.
    const source = path.resolve(args.projectDir, c.appSource);
    const wheelhouse = c.appWheelhouse ? path.resolve(args.projectDir, c.appWheelhouse) : undefined;
    this.release = releaseId(c, source, args.deps, wheelhouse);
    const bundle = releaseBundle(source, wheelhouse);

    // The bucket holds only bundles the program rebuilds from the project, so destroy empties it.
    this.bucket = new aws.s3.Bucket(
      `${name}-releases`,
      { bucketPrefix: `${PROJECT}-releases-`, forceDestroy: true, tags: args.tags },
      parent,
    );
    const bucket = this.bucket.id;
    // Versioned: each launch template version names its bundle's object version, so a
    // rollback to an older version fetches exactly its bundle after the key moved on.
    const versioning = new aws.s3.BucketVersioning(
      `${name}-releases-versioning`,
      { bucket, versioningConfiguration: { status: "Enabled" } },
      parent,
    );
    const encryption = new aws.s3.BucketServerSideEncryptionConfiguration(
      `${name}-releases-sse`,
      { bucket, rules: [{ applyServerSideEncryptionByDefault: { sseAlgorithm: "AES256" }, bucketKeyEnabled: true }] },
      parent,
    );
    const publicBlock = new aws.s3.BucketPublicAccessBlock(
      `${name}-releases-public-block`,
      { bucket, blockPublicAcls: true, blockPublicPolicy: true, ignorePublicAcls: true, restrictPublicBuckets: true },
      parent,
    );
    new aws.s3.BucketPolicy(
      `${name}-releases-tls-only`,
      {
        bucket,
        policy: pulumi.jsonStringify({
          Version: "2012-10-17",
          Statement: [
            {
              Sid: "DenyWithoutTls",
              Effect: "Deny",
              Principal: "*",
              Action: "s3:*",
              Resource: [this.bucket.arn, pulumi.interpolate`${this.bucket.arn}/*`],
              Condition: { Bool: { "aws:SecureTransport": "false" } },
            },
          ],
        }),
      },
      { parent: this, dependsOn: [publicBlock] },
    );
    // Old bundles (the noncurrent versions a replaced release leaves) go after 30 days.
    new aws.s3.BucketLifecycleConfiguration(
      `${name}-releases-lifecycle`,
      {
        bucket,
        rules: [
          {
            id: "expire-old-bundles",
            status: "Enabled",
            filter: { prefix: "releases/" },
            noncurrentVersionExpiration: { noncurrentDays: 30 },
            abortIncompleteMultipartUpload: { daysAfterInitiation: 1 },
          },
        ],
      },
      { parent: this, dependsOn: [versioning] },
    );
    const key = releaseKey(this.release);
    this.bundle = new aws.s3.BucketObjectv2(
      `${name}-bundle`,
      {
        bucket,
        key,
        source: new pulumi.asset.FileAsset(writeBundle(bundle.archive, bundle.sha256)),
        contentType: "application/gzip",
        serverSideEncryption: "AES256",
        tags: args.tags,
      },
      { parent: this, dependsOn: [versioning, encryption] },
    );

    // ------------------------------------------------------ the instance role
    const role = new aws.iam.Role(
      `${name}-role`,
      {
        assumeRolePolicy: EC2_ASSUME_ROLE_POLICY,
        tags: args.tags,
      },
      parent,
    );
    // Read the bundles and nothing else (GetObjectVersion: the user data names the version).
    new aws.iam.RolePolicy(
      `${name}-read-releases`,
      {
        role: role.id,
        policy: pulumi.jsonStringify({
          Version: "2012-10-17",
          Statement: [
            {
              Effect: "Allow",
              Action: ["s3:GetObject", "s3:GetObjectVersion"],
              Resource: pulumi.interpolate`${this.bucket.arn}/releases/*`,
            },
          ],
        }),
      },
      parent,
    );
    const profile = new aws.iam.InstanceProfile(`${name}-profile`, { role: role.name, tags: args.tags }, parent);

    // ------------------------------------------------------- the network
    this.securityGroup = new aws.ec2.SecurityGroup(
      `${name}-sg`,
      { vpcId: args.vpcId, description: `${PROJECT} app instances: app ports from the ALB only, no SSH`, tags: args.tags },
      parent,
    );
    const sg = this.securityGroup.id;
    for (const [v, cidr] of [
      ["v4", { cidrIpv4: "0.0.0.0/0" }],
      ["v6", { cidrIpv6: "::/0" }],
    ] as const) {
      new aws.vpc.SecurityGroupEgressRule(
        `${name}-egress-${v}`,
        { securityGroupId: sg, ipProtocol: "-1", ...cidr, description: "all outbound (apt, S3, pip)" },
        parent,
      );
    }
    // One rule, seen from both groups, as in AlbFrontend's instance mode.
    const appPortRange = { ipProtocol: "tcp", fromPort: ports[0]!, toPort: ports[ports.length - 1]! };
    new aws.vpc.SecurityGroupEgressRule(
      `${name}-alb-to-app`,
      { securityGroupId: args.albSecurityGroupId, ...appPortRange, referencedSecurityGroupId: sg, description: "to the app instances" },
      parent,
    );
    new aws.vpc.SecurityGroupIngressRule(
      `${name}-app-from-alb`,
      {
        securityGroupId: sg,
        ...appPortRange,
        referencedSecurityGroupId: args.albSecurityGroupId,
        description: "app ports from the ALB only",
      },
      parent,
    );

    // ------------------------------------------------------ the launch template
    // Looked up by id too (whoever owns it: Debian's images are in Debian's account), for its root device's name.
    const ami = c.amiId ? aws.ec2.getAmiOutput({ filters: [{ name: "image-id", values: [c.amiId] }] }, parent) : hostOsAmi(c, parent);
    const userData = pulumi
      .all([args.vpcCidr, this.bundle.versionId, this.bucket.bucket, this.bucket.region])
      .apply(([cidr, versionId, bucketName, region]) =>
        renderUserData(
          userDataSettings(c, args.deps, {
            release: this.release,
            url: `s3://${bucketName}/${key}`,
            sha256: bundle.sha256,
            versionId: versionId ?? "",
            region,
            vpcCidr: cidr,
          }),
        ),
      );
    const instanceTags = { ...args.tags, Name: `${PROJECT}-${pulumi.getStack()}` };
    this.launchTemplate = new aws.ec2.LaunchTemplate(
      `${name}-lt`,
      {
        imageId: ami.id,
        instanceType: c.instanceType,
        iamInstanceProfile: { arn: profile.arn },
        metadataOptions: { httpTokens: "required", httpEndpoint: "enabled", httpPutResponseHopLimit: 1 },
        blockDeviceMappings: [
          {
            deviceName: ami.rootDeviceName,
            ebs: { volumeType: "gp3", volumeSize: c.rootVolumeGb, encrypted: "true", deleteOnTermination: "true" },
          },
        ],
        // Explicit: the default subnets would otherwise give every instance a public address.
        networkInterfaces: [{ deviceIndex: 0, associatePublicIpAddress: "false", securityGroups: [sg], deleteOnTermination: "true" }],
        userData: userData.apply((text) => Buffer.from(text).toString("base64")),
        updateDefaultVersion: true,
        tagSpecifications: [
          { resourceType: "instance", tags: instanceTags },
          { resourceType: "volume", tags: args.tags },
        ],
        tags: args.tags,
      },
      parent,
    );

    // ---------------------------------------------------------- the group
    const grace = c.albAsgHealthCheckGracePeriod;
    this.group = new aws.autoscaling.Group(
      `${name}-group`,
      {
        vpcZoneIdentifiers: c.albAsgSubnetIds,
        minSize: c.albAsgMinSize,
        maxSize: c.albAsgMaxSize,
        desiredCapacity: c.albAsgDesiredCapacity,
        targetGroupArns: args.targetGroups.map((tg) => tg.arn),
        healthCheckType: "ELB",
        healthCheckGracePeriod: grace,
        defaultInstanceWarmup: grace,
        // The version number, not "$Latest": a new version then changes this argument, which
        // is what starts an instance refresh (the provider starts one when launchTemplate
        // changes, and "$Latest" never does), and automatic rollback needs a version number.
        launchTemplate: { id: this.launchTemplate.id, version: this.launchTemplate.latestVersion.apply(String) },
        instanceRefresh: {
          strategy: "Rolling",
          preferences: {
            minHealthyPercentage: c.albAsgMinHealthyPercentage,
            // Launch before terminating: up to 100 points above the minimum, at most 200 %.
            maxHealthyPercentage: Math.min(200, c.albAsgMinHealthyPercentage + 100),
            instanceWarmup: String(grace),
            autoRollback: true,
          },
        },
        // On creation, wait for the first instances to pass the ELB health check (first boot: apt, the virtualenv).
        minElbCapacity: c.albAsgMinSize,
        waitForCapacityTimeout: `${Math.ceil(grace / 60) + 10}m`,
        tags: Object.entries(args.tags).map(([k, value]) => ({ key: k, value, propagateAtLaunch: false })),
      },
      // Target tracking moves the desired capacity: a later `pulumi up` must not put it back.
      { parent: this, ignoreChanges: ["desiredCapacity"] },
    );

    // Requests per minute per target (one app process) on the first port's target group:
    // the listener spreads requests evenly over the ports' groups, so it stands for all.
    this.scaling = new aws.autoscaling.Policy(
      `${name}-requests`,
      {
        autoscalingGroupName: this.group.name,
        // The warm-up is the group's defaultInstanceWarmup (a policy's own would override it).
        policyType: "TargetTrackingScaling",
        targetTrackingConfiguration: {
          predefinedMetricSpecification: {
            predefinedMetricType: "ALBRequestCountPerTarget",
            resourceLabel: pulumi.interpolate`${args.loadBalancer.arnSuffix}/${args.targetGroups[0]!.arnSuffix}`,
          },
          targetValue: c.albAsgTargetRequests,
        },
      },
      parent,
    );
    this.registerOutputs({ release: this.release, bucket: this.bucket.bucket, groupName: this.group.name });
  }
}
