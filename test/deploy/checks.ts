/**
 * Offline checks of deploy/: each function takes file contents (or parsed documents) and returns the
 * problems it finds, one line each, so the tests can run it on the real files (no problem) and on
 * broken copies (the problem named). Nothing here talks to a registry, a Docker daemon or a cluster.
 *
 * - YAML: every document parses (yaml, strict: duplicate keys are errors).
 * - Compose: the Compose Specification's JSON schema (deploy/schemas/compose-spec/, from compose-go),
 *   on the file as written and after interpolating ${VAR} the way `docker compose` does.
 * - Kubernetes: kubernetes-models' validators (the Kubernetes OpenAPI schemas) and
 *   @kubernetes-models/keda's (KEDA's CRD schemas) for each kind, on the kustomize output rendered here.
 * - Dockerfiles: dockerfile-utils' validator (syntax) plus the rules below (pinned FROM, non-root USER,
 *   no ADD of URLs, no secrets in ENV/ARG).
 * - Consistency with the code: task queues, environment variables, search attributes.
 */
import fs from 'node:fs';
import path from 'node:path';

import Ajv2020 from 'ajv/dist/2020';
import addFormats from 'ajv-formats';
import { DockerfileParser } from 'dockerfile-ast';
import { validate as validateDockerfileSyntax } from 'dockerfile-utils';
import { parseAllDocuments } from 'yaml';

import { SECRET_NAME, passedToTrainer } from '../../activities/env';

export const REPO = path.resolve(__dirname, '..', '..');
export const DEPLOY = path.join(REPO, 'deploy');

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
export type Obj = { [k: string]: Json };

export function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Every file under a folder, relative to it, sorted. */
export function filesUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(path.relative(dir, p));
    }
  };
  walk(dir);
  return out.sort();
}

// ---------------------------------------------------------------------------------------------
// YAML

/**
 * The documents of a YAML text, or the parse problems (duplicate keys count: compose and kubectl
 * refuse them). `<<` merge keys are resolved, as compose does.
 */
export function parseYaml(text: string, name: string): { docs: Json[]; problems: string[] } {
  const problems: string[] = [];
  const docs: Json[] = [];
  for (const doc of parseAllDocuments(text, { uniqueKeys: true, merge: true, prettyErrors: false })) {
    for (const e of doc.errors) problems.push(`${name}: YAML: ${e.message.split('\n')[0]}`);
    if (doc.errors.length === 0 && doc.contents !== null) docs.push(doc.toJS({ maxAliasCount: 100 }) as Json);
  }
  return { docs, problems };
}

// ---------------------------------------------------------------------------------------------
// Compose

const COMPOSE_SCHEMA_FILE = path.join(DEPLOY, 'schemas', 'compose-spec', 'compose-spec.json');

/** Go's time.ParseDuration syntax, the custom format compose-go registers. */
const GO_DURATION = /^[-+]?(0|(\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$/;

let composeValidator: ReturnType<Ajv2020['compile']> | undefined;
function composeSchemaValidator(): ReturnType<Ajv2020['compile']> {
  if (!composeValidator) {
    const ajv = new Ajv2020({ allErrors: true, strict: false });
    addFormats(ajv);
    ajv.addFormat('duration', GO_DURATION);
    composeValidator = ajv.compile(JSON.parse(fs.readFileSync(COMPOSE_SCHEMA_FILE, 'utf8')) as object);
  }
  return composeValidator;
}

/** Problems of one Compose document against the Compose Specification schema. */
export function composeSchemaProblems(doc: Json, name: string): string[] {
  const validate = composeSchemaValidator();
  if (validate(doc)) return [];
  return (validate.errors ?? []).map((e) => `${name}: compose schema: ${e.instancePath || '/'} ${e.message ?? ''}`.trim());
}

/** A .env file's variables (KEY=VALUE; `#` comments, also after a value following whitespace). */
export function parseDotenv(text: string): Map<string, string> {
  const vars = new Map<string, string>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (!m) throw new Error(`.env: not KEY=VALUE: ${line}`);
    vars.set(m[1] as string, (m[2] as string).replace(/\s+#.*$/, '').trim());
  }
  return vars;
}

/**
 * `docker compose`'s interpolation of every string in a document: ${VAR}, ${VAR:-default},
 * ${VAR-default}, ${VAR:?message}, ${VAR?message}, $VAR and `$$` for a literal `$`. A required
 * variable that is missing is a problem.
 */
export function interpolate(doc: Json, vars: ReadonlyMap<string, string>, problems: string[]): Json {
  const one = (s: string): string =>
    s.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])((?:[^}])*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (all, name?: string, op?: string, arg?: string, bare?: string) => {
      if (all === '$$') return '$';
      const key = (name ?? bare) as string;
      const value = vars.get(key);
      const unsetOrEmpty = value === undefined || value === '';
      switch (op) {
        case ':-':
          return unsetOrEmpty ? one(arg ?? '') : (value as string);
        case '-':
          return value === undefined ? one(arg ?? '') : value;
        case ':?':
          if (unsetOrEmpty) problems.push(`required variable ${key} is not set: ${arg ?? ''}`);
          return value ?? '';
        case '?':
          if (value === undefined) problems.push(`required variable ${key} is not set: ${arg ?? ''}`);
          return value ?? '';
        default:
          return value ?? '';
      }
    });
  if (typeof doc === 'string') return one(doc);
  if (Array.isArray(doc)) return doc.map((d) => interpolate(d, vars, problems));
  if (isObj(doc)) return Object.fromEntries(Object.entries(doc).map(([k, v]) => [k, interpolate(v, vars, problems)]));
  return doc;
}

/** A compose service's environment as a map (both the map and the KEY=VALUE list forms). */
export function serviceEnvironment(service: Obj): Map<string, string> {
  const env = service.environment;
  const out = new Map<string, string>();
  if (Array.isArray(env)) {
    for (const item of env) {
      const [k, ...v] = String(item).split('=');
      out.set(k as string, v.join('='));
    }
  } else if (isObj(env)) {
    for (const [k, v] of Object.entries(env)) out.set(k, v === null ? '' : String(v));
  }
  return out;
}

/** A value that is wholly a ${VAR…} reference (no literal text that could be a secret). */
const ONLY_A_REFERENCE = /^\$\{[A-Za-z_][A-Za-z0-9_]*(?::?[-?][^}]*)?\}$/;

/** Credentials written into the compose file instead of referenced from the environment. */
export function composeSecretProblems(doc: Json, name: string): string[] {
  const problems: string[] = [];
  const services = isObj(doc) && isObj(doc.services) ? doc.services : {};
  for (const [svc, def] of Object.entries(services)) {
    if (!isObj(def)) continue;
    for (const [k, v] of serviceEnvironment(def)) {
      if ((SECRET_NAME.test(k) || /PASSWORD|PWD$/.test(k)) && v !== '' && !ONLY_A_REFERENCE.test(v)) {
        problems.push(`${name}: service ${svc} sets ${k} to a literal value: use a \${VAR} reference`);
      }
    }
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

interface Validatable {
  validate(): void;
}
type ModelClass = new (data: Obj) => Validatable;

/** apiVersion/kind → the kubernetes-models class whose validate() checks the kind's schema. */
export async function kubernetesModels(): Promise<Map<string, ModelClass>> {
  const [{ Deployment }, { ConfigMap }, { Namespace }, { ServiceAccount }, { Secret }, { Job }, { ScaledObject }, { TriggerAuthentication }] = await Promise.all([
    import('kubernetes-models/apps/v1/Deployment'),
    import('kubernetes-models/v1/ConfigMap'),
    import('kubernetes-models/v1/Namespace'),
    import('kubernetes-models/v1/ServiceAccount'),
    import('kubernetes-models/v1/Secret'),
    import('kubernetes-models/batch/v1/Job'),
    import('@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject'),
    import('@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication'),
  ]);
  const classes = [Deployment, ConfigMap, Namespace, ServiceAccount, Secret, Job, ScaledObject, TriggerAuthentication] as unknown as Array<
    ModelClass & { apiVersion: string; kind: string }
  >;
  return new Map(classes.map((c) => [`${c.apiVersion}/${c.kind}`, c]));
}

/** Problems of Kubernetes objects against their kinds' schemas; an unknown kind is a problem. */
export function kubernetesSchemaProblems(objects: readonly Json[], models: ReadonlyMap<string, ModelClass>, name: string): string[] {
  const problems: string[] = [];
  for (const o of objects) {
    if (!isObj(o)) {
      problems.push(`${name}: a document that is not an object`);
      continue;
    }
    const id = `${String(o.apiVersion)}/${String(o.kind)}`;
    const label = `${name}: ${id} ${isObj(o.metadata) ? String(o.metadata.name) : '?'}`;
    const Model = models.get(id);
    if (!Model) {
      problems.push(`${label}: no schema known for this apiVersion/kind`);
      continue;
    }
    try {
      new Model(o).validate();
    } catch (err) {
      problems.push(`${label}: ${(err as Error).message.split('\n').slice(0, 3).join(' ')}`);
    }
  }
  return problems;
}

const CLUSTER_SCOPED = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'CustomResourceDefinition']);

/** RFC 7386 JSON merge patch (what kustomize applies to custom resources: lists are replaced whole). */
export function mergePatch(target: Json, patch: Json): Json {
  if (!isObj(patch)) return patch;
  const out: Obj = isObj(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k] ?? null, v);
  }
  return out;
}

/**
 * The objects `kubectl kustomize DIR` would print, for the features these kustomizations use:
 * `resources` (files and folders with a kustomization.yaml, recursively), `patches` (a file, applied
 * as a merge patch to the objects its `target` names), `namespace` (set on namespaced objects) and
 * `images` (newName/newTag). Anything else in a kustomization is refused, so a feature added later
 * is not silently skipped here. A missing file is an exception naming it.
 */
export function renderKustomization(dir: string, read: (file: string) => string = (f) => fs.readFileSync(f, 'utf8')): Obj[] {
  const file = path.join(dir, 'kustomization.yaml');
  const { docs, problems } = parseYaml(read(file), path.relative(REPO, file));
  if (problems.length > 0) throw new Error(problems.join('; '));
  const k = docs[0];
  if (!isObj(k) || k.kind !== 'Kustomization') throw new Error(`${file}: not a Kustomization`);
  const known = new Set(['apiVersion', 'kind', 'resources', 'patches', 'namespace', 'images', 'labels']);
  for (const key of Object.keys(k)) if (!known.has(key)) throw new Error(`${file}: field ${key} is not rendered by this check`);
  let objects: Obj[] = [];
  for (const r of (k.resources ?? []) as string[]) {
    const p = path.join(dir, r);
    if (fs.existsSync(p) && fs.statSync(p).isDirectory()) {
      objects.push(...renderKustomization(p, read));
    } else {
      const parsed = parseYaml(read(p), path.relative(REPO, p));
      if (parsed.problems.length > 0) throw new Error(parsed.problems.join('; '));
      objects.push(...parsed.docs.filter(isObj));
    }
  }
  for (const patch of (k.patches ?? []) as Obj[]) {
    const target = patch.target as Obj;
    const pdoc = parseYaml(read(path.join(dir, String(patch.path))), String(patch.path)).docs[0] ?? null;
    let hits = 0;
    objects = objects.map((o) => {
      if (o.kind !== target.kind || !isObj(o.metadata) || o.metadata.name !== target.name) return o;
      hits += 1;
      return mergePatch(o, pdoc) as Obj;
    });
    if (hits === 0) throw new Error(`${file}: patch ${String(patch.path)} matches no object`);
  }
  if (typeof k.namespace === 'string') {
    const ns = k.namespace;
    objects = objects.map((o) => (CLUSTER_SCOPED.has(String(o.kind)) ? o : { ...o, metadata: { ...(o.metadata as Obj), namespace: ns } }));
  }
  for (const img of (k.images ?? []) as Obj[]) {
    objects = objects.map((o) => {
      const text = JSON.stringify(o);
      const name = String(img.name);
      const replaced = text.replace(new RegExp(`"image":"${name.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}(:[^"]*)?"`, 'g'), (_m, tag?: string) => {
        const newName = typeof img.newName === 'string' ? img.newName : name;
        const newTag = typeof img.newTag === 'string' ? `:${img.newTag}` : (tag ?? '');
        return `"image":"${newName}${newTag}"`;
      });
      return JSON.parse(replaced) as Obj;
    });
  }
  return objects;
}

// ---------------------------------------------------------------------------------------------
// Dockerfiles

/** A secret in an ENV/ARG name: the worker's own rule (activities/env.ts SECRET_NAME). */
function secretEnvName(name: string): boolean {
  return SECRET_NAME.test(name);
}

/**
 * Lint of one Dockerfile: dockerfile-utils' syntax diagnostics (errors), then
 * - every FROM names an earlier stage, or an image with a version tag (a digit in it, not `latest`)
 *   or a digest; no `${ARG}` in FROM (the pin would live elsewhere);
 * - the final stage has a USER, its last USER is not root (name or uid 0);
 * - no ADD of a URL (http, https, git);
 * - no ENV or ARG whose name is a credential's (KEY, SECRET, TOKEN, PASSWORD, CREDENTIALS).
 */
export function dockerfileProblems(text: string, name: string): string[] {
  const problems: string[] = [];
  for (const d of validateDockerfileSyntax(text)) {
    // LSP's DiagnosticSeverity.Error (dockerfile-utils returns language-server diagnostics).
    if (d.severity === 1) problems.push(`${name}:${d.range.start.line + 1}: ${d.message}`);
  }
  const df = DockerfileParser.parse(text);
  const stages: string[] = [];
  let finalUser: string | undefined;
  let stageCount = 0;
  for (const ins of df.getInstructions()) {
    const line = ins.getRange().start.line + 1;
    const kw = ins.getKeyword();
    const args = ins.getArguments().map((a) => a.getValue());
    if (kw === 'FROM') {
      stageCount += 1;
      finalUser = undefined;
      const image = args.find((a) => !a.startsWith('--')) ?? '';
      const asIdx = args.findIndex((a) => a.toUpperCase() === 'AS');
      if (image.includes('$')) problems.push(`${name}:${line}: FROM ${image}: a variable in FROM hides the pin`);
      else if (!stages.includes(image)) {
        const digest = image.includes('@sha256:');
        const tag = /:([^/:@]+)$/.exec(image)?.[1];
        if (!digest && (tag === undefined || tag === 'latest' || !/\d/.test(tag))) {
          problems.push(`${name}:${line}: FROM ${image}: not pinned (give a version tag or a digest)`);
        }
      }
      if (asIdx >= 0 && args[asIdx + 1]) stages.push(args[asIdx + 1] as string);
    } else if (kw === 'USER') {
      finalUser = args[0];
    } else if (kw === 'ADD') {
      for (const a of args) if (/^(https?:\/\/|git@|git:\/\/)/.test(a)) problems.push(`${name}:${line}: ADD ${a}: fetch with a pinned, checked download in RUN, or COPY`);
    } else if (kw === 'ENV' || kw === 'ARG') {
      const names: string[] = [];
      if (kw === 'ENV' && args.length >= 2 && !args[0]?.includes('=')) names.push(args[0] as string); // ENV KEY value
      else for (const a of args) names.push(a.split('=')[0] as string);
      for (const n of names) if (secretEnvName(n)) problems.push(`${name}:${line}: ${kw} ${n}: a credential must come from the environment at run time, not the image`);
    }
  }
  if (stageCount === 0) problems.push(`${name}: no FROM`);
  if (finalUser === undefined) problems.push(`${name}: the final stage has no USER (it would run as root)`);
  else if (/^(root|0)(:.*)?$/.test(finalUser)) problems.push(`${name}: the final stage runs as ${finalUser}`);
  return problems;
}

/** The ENV names a Dockerfile's final stage sets. */
export function dockerfileFinalEnv(text: string): string[] {
  const df = DockerfileParser.parse(text);
  let names: string[] = [];
  for (const ins of df.getInstructions()) {
    const kw = ins.getKeyword();
    if (kw === 'FROM') names = [];
    if (kw === 'ENV') for (const a of ins.getArguments()) if (a.getValue().includes('=')) names.push(a.getValue().split('=')[0] as string);
  }
  return names;
}

// ---------------------------------------------------------------------------------------------
// Consistency with the code

/**
 * The variables the worker's settings schema reads: the keys of `const Env = z.object({...})` in
 * activities/env.ts (the object is not exported; the test proves this list against parseWorkerEnv).
 */
export function workerEnvKeys(source: string = fs.readFileSync(path.join(REPO, 'activities', 'env.ts'), 'utf8')): string[] {
  const start = source.indexOf('const Env = z.object({');
  const end = source.indexOf('\n});', start);
  if (start < 0 || end < 0) throw new Error('activities/env.ts: `const Env = z.object({` … `});` not found');
  return [...source.slice(start, end).matchAll(/^ {2}([A-Z][A-Z0-9_]*): /gm)].map((m) => m[1] as string);
}

/** Read by the AWS SDK's default credential chain (README: credentials come from it), not by env.ts. */
export const AWS_SDK_VARS = new Set(['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_PROFILE', 'AWS_REGION', 'AWS_ROLE_ARN', 'AWS_WEB_IDENTITY_TOKEN_FILE']);
/** Set by the images for the process itself, not settings of the worker. */
export const RUNTIME_VARS = new Set(['NODE_ENV', 'UV_PYTHON_INSTALL_DIR', 'UV_LINK_MODE', 'UV_COMPILE_BYTECODE']);

/**
 * Whether a variable set for a worker is one something reads: a key of activities/env.ts, one of the
 * AWS SDK's, or (not a VALUEDRIFT_ name, which must be env.ts's) one the worker passes on to the
 * trainer (activities/env.ts passedToTrainer: HF_*, NVIDIA_*, …).
 */
export function unreadVariables(names: Iterable<string>, envKeys: ReadonlySet<string>): string[] {
  const out: string[] = [];
  for (const n of names) {
    if (envKeys.has(n) || AWS_SDK_VARS.has(n) || RUNTIME_VARS.has(n)) continue;
    if (!n.startsWith('VALUEDRIFT_') && passedToTrainer(n)) continue;
    out.push(n);
  }
  return out;
}

/** Variables a Deployment's containers get: env names and the keys of ConfigMaps they load with envFrom. */
export function deploymentVariables(deployment: Obj, objects: readonly Obj[]): string[] {
  const names: string[] = [];
  const spec = ((deployment.spec as Obj).template as Obj).spec as Obj;
  for (const c of spec.containers as Obj[]) {
    for (const e of (c.env ?? []) as Obj[]) names.push(String(e.name));
    for (const from of (c.envFrom ?? []) as Obj[]) {
      if (!isObj(from.configMapRef)) continue;
      const cmName = from.configMapRef.name;
      const cm = objects.find((o) => o.kind === 'ConfigMap' && isObj(o.metadata) && o.metadata.name === cmName);
      if (!cm) names.push(`<missing ConfigMap ${String(cmName)}>`);
      else names.push(...Object.keys((cm.data ?? {}) as Obj));
    }
  }
  return names;
}

/** The search attribute names a shell loop `for name in A B C; do` registers. */
export function searchAttributesInScript(script: string): string[] {
  const m = /for name in ([^;]+); do/.exec(script);
  return m ? (m[1] as string).trim().split(/\s+/) : [];
}

/** The attributes a `tcld namespace search-attributes add` command adds (`--sa "Name=Type"`), with their types. */
export function tcldSearchAttributes(text: string): Map<string, string> {
  const cmd = /tcld namespace search-attributes add((?:[^\n]*\\\n)*[^\n]*)/.exec(text);
  const out = new Map<string, string>();
  if (!cmd) return out;
  for (const m of (cmd[1] as string).matchAll(/--(?:search-attribute|sa) "?([A-Za-z0-9_]+)=([A-Za-z]+)"?/g)) out.set(m[1] as string, m[2] as string);
  return out;
}

/** The role a Deployment's containers set with VALUEDRIFT_WORKER_ROLE. */
function deploymentRole(d: Obj): string | undefined {
  const containers = (((d.spec as Obj).template as Obj).spec as Obj).containers as Obj[];
  const e = containers.flatMap((c) => (c.env ?? []) as Obj[]).find((x) => x.name === 'VALUEDRIFT_WORKER_ROLE');
  return e === undefined ? undefined : String(e.value);
}

/**
 * The ScaledObjects must scale each worker Deployment on exactly the queues its role polls, every
 * trigger of type `temporal`, and all of them together cover every task queue.
 */
export function scaledObjectQueueProblems(objects: readonly Obj[], roleQueues: Readonly<Record<string, readonly string[]>>, allQueues: readonly string[]): string[] {
  const problems: string[] = [];
  const seen: string[] = [];
  for (const so of objects.filter((o) => o.kind === 'ScaledObject')) {
    const name = String((so.metadata as Obj).name);
    const spec = so.spec as Obj;
    const targetName = (spec.scaleTargetRef as Obj).name;
    const target = objects.find((o) => o.kind === 'Deployment' && (o.metadata as Obj).name === targetName);
    if (!target) {
      problems.push(`${name}: scaleTargetRef ${String(targetName)} is no Deployment here`);
      continue;
    }
    const role = deploymentRole(target);
    const want = [...(roleQueues[String(role)] ?? [])].sort();
    const triggers = (spec.triggers ?? []) as Obj[];
    for (const t of triggers) if (t.type !== 'temporal') problems.push(`${name}: trigger type ${String(t.type)}, not temporal`);
    const got = triggers.map((t) => String((t.metadata as Obj).taskQueue)).sort();
    if (JSON.stringify(got) !== JSON.stringify(want)) problems.push(`${name}: queues ${got.join(', ')}; the ${String(role)} role polls ${want.join(', ')}`);
    seen.push(...got);
  }
  for (const q of allQueues) if (!seen.includes(q)) problems.push(`no ScaledObject watches ${q}`);
  return problems;
}
