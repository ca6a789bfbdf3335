/**
 * The local judge: `infra/judge-process.ts`, a small long-lived wrapper around `startLocalJudge`
 * (infra/judge/serve.ts, the judge's own code), so that the server outlives `dev:up`. The wrapper
 * starts the judge server (stance_server.py, either backend) in a process group of its own and writes
 * its pid to a file; this service records that group too (`judge-server`), so that it is stopped
 * even if the wrapper died without stopping it.
 */
import fs from 'node:fs';
import path from 'node:path';

import { z } from 'zod';

import { LOCAL_JUDGE_ENV, LOCAL_JUDGE_MODELS } from '../judge/kinds';
import { TSX_BIN } from '../paths';
import { processIdentity } from '../proc';
import { REPO_ROOT } from '../settings';
import { stackEnvironment } from '../stackEnv';
import { DEFAULT_STOP_GRACE_MS, type LocalService, PROBE_TIMEOUT_MS, SERVICE, SERVICE_DEFAULTS, type ServiceContext, childEnv } from './service';

/** The judge loads its model (MiniLM encoder ~4 s; SmolLM2 tens of seconds the first time, while its GGUF is dequantised) before it answers. */
const READY_TIMEOUT_MS = 180_000;
const JUDGE_PROCESS_FILE = path.join(REPO_ROOT, 'infra', 'judge-process.ts');

const JudgeModelList = z.object({ data: z.array(z.object({ id: z.string() })).optional() });

/** The model ids the judge server at `baseUrl` lists, or null when nothing answers there. */
async function judgeModels(baseUrl: string): Promise<string[] | null> {
  try {
    const res = await fetch(`${baseUrl}/models`, { signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
    if (!res.ok) {
      await res.arrayBuffer();
      return null;
    }
    const parsed = JudgeModelList.safeParse(await res.json());
    return parsed.success ? (parsed.data.data ?? []).map((m) => m.id) : [];
  } catch {
    return null;
  }
}

/** The judge server's pid once the judge process has written it (it does so once serving). */
function judgeServerPid(pidFile: string): { pid: number; identity: string } | null {
  let pid: number;
  try {
    pid = Number(fs.readFileSync(pidFile, 'utf8').trim());
  } catch {
    return null;
  }
  const identity = Number.isInteger(pid) && pid > 0 ? processIdentity(pid) : null;
  return identity === null ? null : { pid, identity };
}

/** Every local judge's name: the stack's judge answers to all of them (stack.env's VALUEDRIFT_JUDGE_SERVED_MODELS). */
const ALL_LOCAL_MODELS = Object.values(LOCAL_JUDGE_MODELS);

export function judgeService(ctx: ServiceContext): LocalService {
  const { settings: s, data, records } = ctx;
  const servesAll = (models: string[]): boolean => models.includes(s.judgeModel) && ALL_LOCAL_MODELS.every((m) => models.includes(m));
  const pidFile = data.judgeServerPidFile;
  const logFile = data.logFileFor(SERVICE.judge);
  return {
    ...SERVICE_DEFAULTS,
    name: SERVICE.judge,
    port: s.judgePort,
    logFile,
    launch: {
      cmd: TSX_BIN,
      args: [
        JUDGE_PROCESS_FILE,
        '--kind', s.localJudgeKind,
        '--host', s.localHost,
        '--port', String(s.judgePort),
        '--python', ctx.py.python,
        '--pid-file', pidFile,
      ],
      env: childEnv({ ...stackEnvironment(s, ctx.py, data.workDir), [LOCAL_JUDGE_ENV]: s.localJudgeKind, PYTHONUNBUFFERED: '1' }),
    },
    readyTimeoutMs: READY_TIMEOUT_MS,
    // The judge process stops its server (5 s + 5 s) before it exits itself.
    stopGraceMs: DEFAULT_STOP_GRACE_MS + 5_000,
    companions: [SERVICE.judgeServer],
    beforeStart: () => fs.rmSync(pidFile, { force: true }),
    // Up when the server lists the model stack.env names and the judge process has reported its pid.
    healthy: async () => servesAll((await judgeModels(s.judgeBaseUrl)) ?? []) && judgeServerPid(pidFile) !== null,
    // A judge of the other kind (VALUEDRIFT_LOCAL_JUDGE changed since it started), or one that does not
    // offer every local judge (started by an older checkout), is replaced.
    mismatch: async () => {
      const models = await judgeModels(s.judgeBaseUrl);
      if (models === null || servesAll(models)) return null;
      return `serves ${models.length === 0 ? 'no model' : models.join(', ')}, not ${s.judgeModel} first with ${ALL_LOCAL_MODELS.join(', ')} (${LOCAL_JUDGE_ENV}=${s.localJudgeKind})`;
    },
    afterReady: () => {
      const server = judgeServerPid(pidFile);
      if (server !== null) {
        records.put({
          name: SERVICE.judgeServer,
          pid: server.pid,
          pgid: server.pid, // started detached by startLocalJudge
          identity: server.identity,
          port: s.judgePort,
          startedAt: records.find(SERVICE.judge)?.startedAt ?? new Date().toISOString(),
          cmd: [`(stance_server.py serving ${s.judgeModel}, started by infra/judge-process.ts)`],
          logFile,
        });
      }
      return Promise.resolve();
    },
  };
}
