// How the app's Python dependencies are installed on the host, decided from the
// app directory's files: a requirements.txt, or a pyproject.toml with
// [project].dependencies, gives each release its own virtualenv; neither keeps
// the distribution's packages (appPackages). Pure: no Pulumi import, no file reads.
import { parse as parseToml } from "smol-toml";

export type DepsFile = "requirements.txt" | "pyproject.toml";

export interface PythonDeps {
  /** The file pip installs from (relative to the app directory). */
  file: DepsFile;
  /** Normalised project names (PEP 503) of the direct requirements, for the cross-key checks. */
  names: string[];
}

/** PEP 503 normalisation: case-insensitive, runs of - _ . are one -. */
export function normaliseName(name: string): string {
  return name.toLowerCase().replace(/[-_.]+/g, "-");
}

const NAME_RE = /^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)/;

/** The project names a requirements.txt names directly (options, -r includes, URLs without a name and comments skipped). */
export function requirementNames(text: string): string[] {
  const names: string[] = [];
  const joined = text.replace(/\\\r?\n/g, " ");
  for (const raw of joined.split(/\r?\n/)) {
    const line = raw.replace(/(^|\s)#.*$/, "").trim();
    if (!line || line.startsWith("-")) continue;
    const m = NAME_RE.exec(line);
    if (m) names.push(normaliseName(m[1]!));
  }
  return [...new Set(names)];
}

/** The dependencies of a pyproject.toml, or null when it declares none. Throws on a file pip could not use. */
export function pyprojectDependencies(text: string): string[] | null {
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(text) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`pyproject.toml is not valid TOML: ${(e as Error).message.split("\n")[0]}`);
  }
  const project = doc["project"];
  if (typeof project !== "object" || project === null) return null;
  const p = project as Record<string, unknown>;
  const dynamic = Array.isArray(p["dynamic"]) ? (p["dynamic"] as unknown[]) : [];
  if (dynamic.includes("dependencies")) {
    throw new Error(
      "pyproject.toml declares its dependencies as dynamic: list them in [project].dependencies or in a requirements.txt next to it",
    );
  }
  const deps = p["dependencies"];
  if (deps === undefined) return null;
  if (!Array.isArray(deps) || !deps.every((d): d is string => typeof d === "string")) {
    throw new Error("pyproject.toml [project].dependencies must be an array of requirement strings");
  }
  return deps.length ? deps : null;
}

/** requirements.txt wins over pyproject.toml; null: no virtualenv (the distribution's packages). */
export function pythonDeps(files: { requirementsTxt?: string | undefined; pyprojectToml?: string | undefined }): PythonDeps | null {
  if (files.requirementsTxt !== undefined) return { file: "requirements.txt", names: requirementNames(files.requirementsTxt) };
  if (files.pyprojectToml !== undefined) {
    const deps = pyprojectDependencies(files.pyprojectToml);
    if (deps) return { file: "pyproject.toml", names: requirementNames(deps.join("\n")) };
  }
  return null;
}

/** The uvicorn that accepts a CIDR in --forwarded-allow-ips (ALB mode trusts the VPC's block). */
export const UVICORN_CIDR_SINCE = "0.33";

export interface RuntimeSettings {
  frontend: "nginx" | "alb";
  appRuntime?: "host" | "container" | undefined;
  appImage?: string | undefined;
  appWheelhouse?: string | undefined;
  appPackageIndex?: string | undefined;
}

/** The cross-key rules that need the app's files; each message names the key and what to do. */
export function runtimeErrors(c: RuntimeSettings, deps: PythonDeps | null): string[] {
  const errors: string[] = [];
  const none = "the app directory (appSource) has no requirements.txt and no pyproject.toml with [project].dependencies";
  if (!deps && c.appWheelhouse) errors.push(`fastapi-edge:appWheelhouse is set, but ${none}: add one or unset appWheelhouse`);
  if (!deps && c.appPackageIndex) errors.push(`fastapi-edge:appPackageIndex is set, but ${none}: add one or unset appPackageIndex`);
  if (c.appRuntime === "container" && !c.appImage && deps) {
    errors.push(
      `fastapi-edge:appRuntime container builds the image from Debian's FastAPI and uvicorn, so ${deps.file} would be ignored: build an image with your dependencies and set appImage, or use appRuntime host (a virtualenv per release)`,
    );
  }
  if (c.frontend === "alb") {
    if (!deps) {
      errors.push(
        `fastapi-edge:frontend alb needs uvicorn ${UVICORN_CIDR_SINCE} or newer (the ALB's addresses are trusted as a CIDR in --forwarded-allow-ips; every supported OS packages an older one), but ${none}: add a requirements.txt with uvicorn>=${UVICORN_CIDR_SINCE}`,
      );
    } else if (!deps.names.includes("uvicorn")) {
      errors.push(
        `fastapi-edge:frontend alb needs uvicorn ${UVICORN_CIDR_SINCE} or newer in the app's virtualenv, but ${deps.file} does not name uvicorn: add uvicorn>=${UVICORN_CIDR_SINCE}`,
      );
    }
  }
  return errors;
}
