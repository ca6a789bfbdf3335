/**
 * deploy/ validated offline: every YAML parses; the compose file against the Compose Specification
 * schema; the Kubernetes manifests (rendered from their kustomizations) against the Kubernetes and
 * KEDA schemas; the Dockerfiles linted; queue names, variables and search attributes checked against
 * the code. Each check is also run on a broken copy and must name the break.
 */
import fs from 'node:fs';
import path from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { parseWorkerEnv } from '../../activities/env';
import { gpuTaskQueue, SEARCH_ATTRIBUTES, TASK_QUEUES } from '../../common/config';
import {
  DEPLOY,
  REPO,
  type Obj,
  composeSchemaProblems,
  composeSecretProblems,
  deploymentVariables,
  dockerfileFinalEnv,
  dockerfileProblems,
  filesUnder,
  interpolate,
  isObj,
  kubernetesModels,
  kubernetesSchemaProblems,
  parseDotenv,
  parseYaml,
  renderKustomization,
  scaledObjectQueueProblems,
  searchAttributesInScript,
  serviceEnvironment,
  tcldSearchAttributes,
  unreadVariables,
  workerEnvKeys,
} from './checks';

const read = (rel: string) => fs.readFileSync(path.join(REPO, rel), 'utf8');
const clone = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T;

const COMPOSE = 'deploy/compose/compose.yaml';
const K8S_DIRS = ['deploy/k8s', 'deploy/k8s/overlays/temporal-cloud'];
const DOCKERFILES = ['deploy/docker/worker-cpu.Dockerfile', 'deploy/docker/worker-gpu.Dockerfile', 'deploy/docker/s3server.Dockerfile'];
/** Which task queues each worker role polls (worker/main.ts runWorkers). */
/** The GPUs of a gpu pod in deploy/k8s (worker-gpu.yaml's VALUEDRIFT_GPUS and nvidia.com/gpu). */
const POD_GPUS = 8;
/** A gpu worker with POD_GPUS GPUs polls the plain gpu queue and the queue of trainings on each 1..POD_GPUS GPUs (worker/main.ts). */
const GPU_QUEUES = [TASK_QUEUES.gpu, ...Array.from({ length: POD_GPUS }, (_, i) => gpuTaskQueue(i + 1))];
const ROLE_QUEUES: Record<string, string[]> = { cpu: [TASK_QUEUES.workflows, TASK_QUEUES.cpu], gpu: GPU_QUEUES };
const ALL_QUEUES = [...Object.values(TASK_QUEUES), ...GPU_QUEUES.slice(1)];

/** .env.example with a value for each "set me" left empty, as an operator's .env would be. */
function exampleEnv(): Map<string, string> {
  const vars = parseDotenv(read('deploy/compose/.env.example'));
  for (const [k, v] of vars) if (v === '' && /PASSWORD|SECRET|ACCESS_KEY/.test(k)) vars.set(k, `example-${k.toLowerCase()}`);
  return vars;
}

function composeDoc(): Obj {
  const { docs, problems } = parseYaml(read(COMPOSE), COMPOSE);
  expect(problems).toEqual([]);
  return docs[0] as Obj;
}

const ENV_KEYS = new Set(workerEnvKeys());

describe('YAML', () => {
  it('every YAML file under deploy/ parses, without duplicate keys', () => {
    const yamlFiles = filesUnder(DEPLOY).filter((f) => /\.ya?ml$/.test(f));
    expect(yamlFiles.length).toBeGreaterThanOrEqual(15);
    const problems = yamlFiles.flatMap((f) => {
      const r = parseYaml(fs.readFileSync(path.join(DEPLOY, f), 'utf8'), f);
      return r.docs.length === 0 ? [...r.problems, `${f}: no document`] : r.problems;
    });
    expect(problems).toEqual([]);
  });

  it('a broken copy (bad indentation, a duplicate key) is refused', () => {
    expect(parseYaml('a:\n  b: 1\n c: 2\n', 'x').problems.length).toBeGreaterThan(0);
    expect(parseYaml('a: 1\na: 2\n', 'x').problems.join()).toMatch(/unique|duplicate/i);
  });
});

describe('compose file', () => {
  it('is valid against the Compose Specification schema, as written and interpolated with .env.example', () => {
    const doc = composeDoc();
    expect(composeSchemaProblems(doc, COMPOSE)).toEqual([]);
    const problems: string[] = [];
    const resolved = interpolate(doc, exampleEnv(), problems);
    expect(problems).toEqual([]);
    expect(composeSchemaProblems(resolved, `${COMPOSE} (interpolated)`)).toEqual([]);
  });

  it('runs Temporal on PostgreSQL, the UI, the project S3 server and both workers, the gpu one with a device reservation', () => {
    const services = composeDoc().services as Obj;
    expect(Object.keys(services).sort()).toEqual(['postgresql', 's3', 'temporal', 'temporal-setup', 'temporal-ui', 'worker-cpu', 'worker-gpu']);
    expect(serviceEnvironment(services.temporal as Obj).get('DB')).toBe('postgres12');
    expect(((services.s3 as Obj).build as Obj).dockerfile).toBe('deploy/docker/s3server.Dockerfile');
    const gpu = services['worker-gpu'] as Obj;
    const devices = (((gpu.deploy as Obj).resources as Obj).reservations as Obj).devices as Obj[];
    expect(devices[0]).toMatchObject({ driver: 'nvidia', capabilities: ['gpu'] });
    expect(serviceEnvironment(gpu).get('VALUEDRIFT_WORKER_ROLE')).toBe('gpu');
    expect(serviceEnvironment(services['worker-cpu'] as Obj).get('VALUEDRIFT_WORKER_ROLE')).toBe('cpu');
    // Every Dockerfile a service builds exists.
    for (const s of Object.values(services)) {
      if (isObj(s) && isObj(s.build)) expect(fs.existsSync(path.join(REPO, 'deploy/compose', String(s.build.context), String(s.build.dockerfile)))).toBe(true);
    }
  });

  it('holds no secret: credentials are ${VAR} references, and .env.example leaves them empty', () => {
    expect(composeSecretProblems(composeDoc(), COMPOSE)).toEqual([]);
    for (const [k, v] of parseDotenv(read('deploy/compose/.env.example'))) {
      if (/PASSWORD|SECRET|_KEY$|TOKEN/.test(k)) expect({ k, v }).toEqual({ k, v: '' });
    }
  });

  it('a broken copy is refused: a wrong type, an unknown field, a literal secret, a missing required variable', () => {
    const wrongType = clone(composeDoc());
    (((((wrongType.services as Obj)['worker-gpu'] as Obj).deploy as Obj).resources as Obj).reservations as Obj).devices = [{ driver: 'nvidia', capabilities: 'gpu' }];
    expect(composeSchemaProblems(wrongType, 'broken').join('\n')).toMatch(/capabilities/);

    const unknownField = clone(composeDoc());
    ((unknownField.services as Obj).s3 as Obj).restart_policy = 'always';
    expect(composeSchemaProblems(unknownField, 'broken').join('\n')).toMatch(/\/services\/s3 must NOT have unevaluated properties/);

    const literal = clone(composeDoc());
    (((literal.services as Obj)['worker-cpu'] as Obj).environment as Obj).AWS_SECRET_ACCESS_KEY = 'hunter2hunter2';
    expect(composeSecretProblems(literal, 'broken')).toEqual(['broken: service worker-cpu sets AWS_SECRET_ACCESS_KEY to a literal value: use a ${VAR} reference']);

    const problems: string[] = [];
    const env = exampleEnv();
    env.delete('TEMPORAL_DB_PASSWORD');
    interpolate(composeDoc(), env, problems);
    expect(problems[0]).toMatch(/required variable TEMPORAL_DB_PASSWORD is not set/);
  });

  it('interpolates as docker compose does', () => {
    const vars = new Map([['A', 'a'], ['E', '']]);
    const p: string[] = [];
    expect(interpolate(['${A}', '${B:-d}', '${E:-d}', '${E-d}', '$$A', 'x${A}y', '$A'], vars, p)).toEqual(['a', 'd', 'd', '', '$A', 'xay', 'a']);
    interpolate(['${B:?say it}', '${E?never}'], vars, p);
    expect(p).toEqual(['required variable B is not set: say it']);
    p.length = 0;
    expect(p).toEqual([]);
  });
});

describe('Kubernetes manifests', () => {
  let models: Awaited<ReturnType<typeof kubernetesModels>>;
  beforeAll(async () => {
    models = await kubernetesModels();
  });

  it.each(K8S_DIRS)('%s renders and every object is valid against its kind’s schema', (dir) => {
    const objects = renderKustomization(path.join(REPO, dir));
    expect(objects.length).toBeGreaterThanOrEqual(7);
    expect(kubernetesSchemaProblems(objects, models, dir)).toEqual([]);
    for (const o of objects) if (o.kind !== 'Namespace') expect((o.metadata as Obj).namespace).toBe('valuedrift');
  });

  it('the self-hosted search-attribute Job is a valid batch/v1 Job', () => {
    const job = parseYaml(read('deploy/k8s/self-hosted/search-attributes-job.yaml'), 'job').docs;
    expect(kubernetesSchemaProblems(job, models, 'job')).toEqual([]);
  });

  it('a broken copy is refused: a wrong type, an unknown kind, a ScaledObject without triggers, a missing file', () => {
    const objects = renderKustomization(path.join(REPO, 'deploy/k8s'));
    const dep = clone(objects.find((o) => o.kind === 'Deployment') as Obj);
    (dep.spec as Obj).replicas = 'two';
    expect(kubernetesSchemaProblems([dep], models, 'broken').join()).toMatch(/replicas/);
    expect(kubernetesSchemaProblems([{ apiVersion: 'v1', kind: 'Podd', metadata: { name: 'x' } }], models, 'broken')).toEqual([
      'broken: v1/Podd x: no schema known for this apiVersion/kind',
    ]);
    const so = clone(objects.find((o) => o.kind === 'ScaledObject') as Obj);
    delete (so.spec as Obj).triggers;
    expect(kubernetesSchemaProblems([so], models, 'broken').join()).toMatch(/triggers/);
    const readMissing = (f: string) => (f.endsWith('worker-gpu.yaml') ? fs.readFileSync(path.join(REPO, 'no-such-file.yaml'), 'utf8') : fs.readFileSync(f, 'utf8'));
    expect(() => renderKustomization(path.join(REPO, 'deploy/k8s'), readMissing)).toThrow(/no-such-file/);
  });

  it('the gpu Deployment requests GPUs (request = limit = VALUEDRIFT_GPUS), selects GPU nodes, and every container has requests', () => {
    const objects = renderKustomization(path.join(REPO, 'deploy/k8s'));
    const deployments = objects.filter((o) => o.kind === 'Deployment');
    expect(deployments.map((d) => (d.metadata as Obj).name).sort()).toEqual(['valuedrift-worker-cpu', 'valuedrift-worker-gpu']);
    for (const d of deployments) {
      for (const c of (((d.spec as Obj).template as Obj).spec as Obj).containers as Obj[]) {
        expect(Object.keys(((c.resources as Obj).requests ?? {}) as Obj)).toEqual(expect.arrayContaining(['cpu', 'memory']));
      }
    }
    const gpu = deployments.find((d) => (d.metadata as Obj).name === 'valuedrift-worker-gpu') as Obj;
    const podSpec = ((gpu.spec as Obj).template as Obj).spec as Obj;
    const c = (podSpec.containers as Obj[])[0] as Obj;
    const res = c.resources as Obj;
    expect((res.requests as Obj)['nvidia.com/gpu']).toBe((res.limits as Obj)['nvidia.com/gpu']);
    const gpus = ((c.env as Obj[]).find((e) => e.name === 'VALUEDRIFT_GPUS') as Obj).value;
    expect(Number(gpus)).toBe((res.limits as Obj)['nvidia.com/gpu']);
    expect(Object.keys(podSpec.nodeSelector as Obj).length).toBeGreaterThan(0);
    expect(c.image).toBe('valuedrift/worker-gpu:dev');
  });
});

describe('Helm values for the Temporal chart', () => {
  /** Problems: each datastore on postgres12, a password only through existingSecret. */
  const helmProblems = (values: Obj): string[] => {
    const stores = ((((values.server as Obj).config as Obj).persistence as Obj).datastores ?? {}) as Obj;
    const problems: string[] = [];
    for (const store of ['default', 'visibility']) {
      const sql = isObj(stores[store]) ? ((stores[store] as Obj).sql as Obj | undefined) : undefined;
      if (!sql) problems.push(`${store}: no sql datastore`);
      else {
        if (sql.pluginName !== 'postgres12') problems.push(`${store}: pluginName ${String(sql.pluginName)}`);
        if ('password' in sql) problems.push(`${store}: a password in the values file`);
        if (typeof sql.existingSecret !== 'string') problems.push(`${store}: no existingSecret`);
      }
    }
    return problems;
  };
  const values = () => parseYaml(read('deploy/helm/temporal-values.yaml'), 'values').docs[0] as Obj;

  it('puts persistence and visibility on PostgreSQL, the password in a Secret', () => {
    expect(helmProblems(values())).toEqual([]);
  });

  it('a broken copy is refused', () => {
    const broken = clone(values());
    const sql = ((((((broken.server as Obj).config as Obj).persistence as Obj).datastores as Obj).visibility as Obj).sql as Obj);
    sql.password = 'temporal';
    sql.pluginName = 'mysql8';
    expect(helmProblems(broken)).toEqual(['visibility: pluginName mysql8', 'visibility: a password in the values file']);
  });
});

describe('consistency with the code', () => {
  it('the variable list read from activities/env.ts is the schema parseWorkerEnv applies', () => {
    expect(ENV_KEYS.size).toBeGreaterThanOrEqual(20);
    for (const key of ENV_KEYS) {
      // A key the schema knows is either refused by name or kept; an unknown one would be dropped silently.
      let kept = false;
      try {
        kept = (parseWorkerEnv({ [key]: '12' }) as unknown as Record<string, unknown>)[key] !== undefined;
      } catch (err) {
        kept = (err as Error).message.includes(key);
      }
      expect({ key, kept }).toEqual({ key, kept: true });
    }
    expect((parseWorkerEnv({ NOT_A_SETTING: '12' }) as unknown as Record<string, unknown>).NOT_A_SETTING).toBeUndefined();
  });

  it.each(K8S_DIRS)('%s: the ScaledObjects scale each Deployment on exactly the task queues its role polls (TASK_QUEUES)', (dir) => {
    const objects = renderKustomization(path.join(REPO, dir));
    expect(objects.filter((o) => o.kind === 'ScaledObject')).toHaveLength(2);
    expect(scaledObjectQueueProblems(objects, ROLE_QUEUES, ALL_QUEUES)).toEqual([]);
  });

  it('a ScaledObject with a stale queue name, another trigger type or a wrong target is caught', () => {
    const objects = renderKustomization(path.join(REPO, 'deploy/k8s'));
    const check = (objs: Obj[]) => scaledObjectQueueProblems(objs, ROLE_QUEUES, ALL_QUEUES);
    const gpuSo = (objs: Obj[]) => objs.find((o) => o.kind === 'ScaledObject' && (o.metadata as Obj).name === 'valuedrift-worker-gpu') as Obj;
    const stale = clone(objects);
    (((gpuSo(stale).spec as Obj).triggers as Obj[])[0]!.metadata as Obj).taskQueue = 'valuedrift-gpu-v1';
    const sorted = [...GPU_QUEUES].sort();
    expect(check(stale)).toEqual([
      `valuedrift-worker-gpu: queues ${['valuedrift-gpu-v1', ...GPU_QUEUES.slice(1)].sort().join(', ')}; the gpu role polls ${sorted.join(', ')}`,
      'no ScaledObject watches valuedrift-gpu-v2',
    ]);
    // A training queue left out (a 3-GPU stage would never scale a pod up from zero) is caught too.
    const missing = clone(objects);
    const triggers = (gpuSo(missing).spec as Obj).triggers as Obj[];
    triggers.splice(triggers.findIndex((t) => (t.metadata as Obj).taskQueue === gpuTaskQueue(3)), 1);
    expect(check(missing)).toEqual([
      `valuedrift-worker-gpu: queues ${sorted.filter((q) => q !== gpuTaskQueue(3)).join(', ')}; the gpu role polls ${sorted.join(', ')}`,
      `no ScaledObject watches ${gpuTaskQueue(3)}`,
    ]);
    const otherType = clone(objects);
    ((gpuSo(otherType).spec as Obj).triggers as Obj[])[0]!.type = 'prometheus';
    expect(check(otherType)).toEqual(['valuedrift-worker-gpu: trigger type prometheus, not temporal']);
    const wrongTarget = clone(objects);
    ((gpuSo(wrongTarget).spec as Obj).scaleTargetRef as Obj).name = 'valuedrift-worker-cpu';
    expect(check(wrongTarget)[0]).toBe(`valuedrift-worker-gpu: queues ${sorted.join(', ')}; the cpu role polls ${[TASK_QUEUES.workflows, TASK_QUEUES.cpu].sort().join(', ')}`);
  });

  it('every variable the manifests, the compose file and the images set for a worker is one the worker (or the AWS SDK, or the trainer) reads', () => {
    const problems: string[] = [];
    for (const dir of K8S_DIRS) {
      const objects = renderKustomization(path.join(REPO, dir));
      for (const d of objects.filter((o) => o.kind === 'Deployment')) {
        for (const n of unreadVariables(deploymentVariables(d, objects), ENV_KEYS)) problems.push(`${dir} ${String((d.metadata as Obj).name)}: ${n}`);
      }
    }
    const services = composeDoc().services as Obj;
    for (const w of ['worker-cpu', 'worker-gpu']) {
      for (const n of unreadVariables(serviceEnvironment(services[w] as Obj).keys(), ENV_KEYS)) problems.push(`${COMPOSE} ${w}: ${n}`);
    }
    for (const f of DOCKERFILES.filter((f) => f.includes('worker'))) {
      for (const n of unreadVariables(dockerfileFinalEnv(read(f)), ENV_KEYS)) problems.push(`${f}: ${n}`);
    }
    expect(problems).toEqual([]);
  });

  it('a misspelt or unknown variable is caught', () => {
    const objects = renderKustomization(path.join(REPO, 'deploy/k8s'));
    const cm = clone(objects.find((o) => o.kind === 'ConfigMap') as Obj);
    (cm.data as Obj).VALUEDRIFT_S3_BUKET = 'x';
    const d = objects.find((o) => o.kind === 'Deployment') as Obj;
    expect(unreadVariables(deploymentVariables(d, [cm]), ENV_KEYS)).toEqual(['VALUEDRIFT_S3_BUKET']);
    expect(unreadVariables(['TEMPORAL_TLS_CERTIFICATE', 'HF_HOME', 'AWS_ACCESS_KEY_ID'], ENV_KEYS)).toEqual(['TEMPORAL_TLS_CERTIFICATE']);
    expect(deploymentVariables(d, [])).toContain('<missing ConfigMap valuedrift-config>');
  });

  it('the compose setup, the self-hosted Job and the README’s tcld command register exactly SEARCH_ATTRIBUTES, as Keyword', () => {
    const setup = ((composeDoc().services as Obj)['temporal-setup'] as Obj).command as string[];
    expect(searchAttributesInScript(setup.join('\n')).sort()).toEqual([...SEARCH_ATTRIBUTES].sort());
    const job = parseYaml(read('deploy/k8s/self-hosted/search-attributes-job.yaml'), 'job').docs[0] as Obj;
    const container = ((((job.spec as Obj).template as Obj).spec as Obj).containers as Obj[])[0] as Obj;
    expect(searchAttributesInScript((container.args as string[]).join('\n')).sort()).toEqual([...SEARCH_ATTRIBUTES].sort());
    const tcld = tcldSearchAttributes(read('README.md'));
    expect([...tcld.keys()].sort()).toEqual([...SEARCH_ATTRIBUTES].sort());
    expect(new Set(tcld.values())).toEqual(new Set(['Keyword']));
    // Broken copies: one attribute left out is seen.
    expect(searchAttributesInScript('for name in Lineage BaseModel; do').sort()).not.toEqual([...SEARCH_ATTRIBUTES].sort());
    expect([...tcldSearchAttributes('tcld namespace search-attributes add -n x \\\n  --sa "Lineage=Keyword"').keys()]).toEqual(['Lineage']);
  });
});

describe('Dockerfiles', () => {
  it.each(DOCKERFILES)('%s passes the lint (syntax, pinned FROM, non-root USER, no ADD of URLs, no secrets in ENV/ARG)', (f) => {
    expect(dockerfileProblems(read(f), f)).toEqual([]);
    expect(fs.existsSync(path.join(REPO, `${f}.dockerignore`))).toBe(true);
  });

  it('the worker images set their role and the trainer’s Python; the gpu image starts from CUDA', () => {
    expect(read('deploy/docker/worker-cpu.Dockerfile')).toMatch(/VALUEDRIFT_WORKER_ROLE=cpu/);
    const gpu = read('deploy/docker/worker-gpu.Dockerfile');
    expect(gpu).toMatch(/VALUEDRIFT_WORKER_ROLE=gpu/);
    expect(gpu).toMatch(/VALUEDRIFT_PYTHON=\/opt\/venv\/bin\/python/);
    expect(gpu).toMatch(/^FROM nvidia\/cuda:[0-9.]+-runtime-ubuntu[0-9.]+$/m);
  });

  it('each broken copy is refused, naming the rule', () => {
    const good = read('deploy/docker/worker-cpu.Dockerfile');
    const cases: Array<[string, string, RegExp]> = [
      ['latest tag', good.replace('FROM node:20.20.2-bookworm-slim AS node-deps', 'FROM node:latest AS node-deps'), /FROM node:latest: not pinned/],
      ['no tag', good.replace('FROM node:20.20.2-bookworm-slim AS node-deps', 'FROM node AS node-deps'), /FROM node: not pinned/],
      ['variable in FROM', `ARG BASE=node:20\n${good.replace('FROM node:20.20.2-bookworm-slim AS node-deps', 'FROM ${BASE} AS node-deps')}`, /variable in FROM/],
      ['no USER', good.replace('USER 10001:10001\n', ''), /no USER/],
      ['USER root', good.replace('USER 10001:10001', 'USER root'), /runs as root/],
      ['ADD of a URL', good.replace('WORKDIR /app\nCOPY --from', 'WORKDIR /app\nADD https://example.com/x.tgz /x.tgz\nCOPY --from'), /ADD https:\/\/example.com\/x.tgz/],
      ['secret in ENV', good.replace('ENV NODE_ENV=production', 'ENV OPENAI_API_KEY=sk-123 NODE_ENV=production'), /ENV OPENAI_API_KEY: a credential/],
      ['secret in ARG', good.replace('FROM python:3.11.14-slim-bookworm AS trainer-env', 'FROM python:3.11.14-slim-bookworm AS trainer-env\nARG HF_TOKEN'), /ARG HF_TOKEN/],
      ['syntax', good.replace('WORKDIR /app\nCOPY package.json', 'WORKDIR\nCOPY package.json'), /broken:\d+: Instruction has no arguments/],
      ['unknown instruction', good.replace('WORKDIR /app\nCOPY package.json', 'WORKDIRR /app\nCOPY package.json'), /Unknown instruction: WORKDIRR/],
    ];
    for (const [what, text, expected] of cases) {
      expect(text, what).not.toBe(good);
      expect(dockerfileProblems(text, 'broken').join('\n'), what).toMatch(expected);
    }
  });
});
