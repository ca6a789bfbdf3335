/**
 * The local stack from the command line.
 *
 *   npm run dev:up             # Python env + Temporal + S3 + judge + workers (idempotent)
 *   npm run dev:down           # stop everything `up` started
 *   npx tsx infra/dev.ts status
 *   npx tsx infra/dev.ts lock  # refreeze infra/requirements.lock from .venv
 */
import path from 'node:path';

import { DATA } from './paths';
import type { LogFn } from './proc';
import { ensurePythonEnv, writeLock } from './python';
import { ensureS3Server } from './services/s3';
import { REPO_ROOT, quietAwsSdkNodeWarning, settings } from './settings';
import { stackDown, stackStatus, stackUp } from './stack';

const USAGE = 'usage: tsx infra/dev.ts up [--no-workers] [--no-judge] | down | status | lock';

const log: LogFn = (line) => console.log(line);

quietAwsSdkNodeWarning();

async function up(flags: readonly string[]): Promise<void> {
  const known = new Set(['--no-workers', '--no-judge']);
  const unknown = flags.filter((f) => !known.has(f));
  if (unknown.length > 0) throw new Error(`unknown option(s) ${unknown.join(' ')}\n${USAGE}`);
  // The local S3 server's Go build runs while pip works (both are no-ops once done).
  await Promise.all([ensurePythonEnv({ log }), ensureS3Server({ log })]);
  const result = await stackUp({ workers: !flags.includes('--no-workers'), judge: !flags.includes('--no-judge'), log });
  const rel = (p: string) => path.relative(REPO_ROOT, p) || '.';
  log('');
  log(`stack up: started [${result.started.join(', ')}], already running [${result.reused.join(', ')}]`);
  log(`  Temporal UI   ${settings.temporalUiUrl}`);
  log(`  Temporal      ${settings.temporalAddress}`);
  log(`  S3            ${settings.s3Endpoint}  bucket ${settings.s3Bucket}  (objects in ${rel(DATA.s3DataDir)}/)`);
  log(`  logs          ${rel(DATA.logDir)}/<service>.log`);
  log(`  environment   ${rel(DATA.stackEnvFile)}`);
  // Stopping needs only the record file, i.e. the data directory.
  const defaultDataDir = path.join(REPO_ROOT, '.data');
  log(`  stop with     ${settings.dataDir === defaultDataDir ? 'npm run dev:down' : `VALUEDRIFT_DATA_DIR=${settings.dataDir} npx tsx infra/dev.ts down`}`);
}

async function status(): Promise<void> {
  const services = await stackStatus();
  if (services.length === 0) {
    log('stack: nothing recorded as running (npm run dev:up starts it)');
    return;
  }
  const rows = [
    ['service', 'pid', 'alive', 'port', 'listening', 'started', 'log'],
    ...services.map((s) => [
      s.name,
      String(s.pid),
      s.alive ? 'yes' : 'NO',
      s.port === null ? '-' : String(s.port),
      s.listening === null ? '-' : s.listening ? 'yes' : 'NO',
      s.startedAt,
      path.relative(REPO_ROOT, s.logFile),
    ]),
  ];
  const widths = rows[0]?.map((_, col) => Math.max(...rows.map((r) => (r[col] ?? '').length))) ?? [];
  for (const row of rows) log(row.map((cell, col) => cell.padEnd(widths[col] ?? 0)).join('  ').trimEnd());
  if (services.some((s) => !s.alive)) process.exitCode = 1;
}

async function main(): Promise<void> {
  const [command, ...rest] = process.argv.slice(2);
  switch (command) {
    case 'up':
      return up(rest);
    case 'down': {
      if (rest.length > 0) throw new Error(USAGE);
      const stopped = await stackDown({ log });
      log(stopped.length === 0 ? 'stack: nothing was running' : `stack down: ${stopped.join(', ')}`);
      return;
    }
    case 'status':
      if (rest.length > 0) throw new Error(USAGE);
      return status();
    case 'lock':
      if (rest.length > 0) throw new Error(USAGE);
      return writeLock({ log });
    default:
      throw new Error(USAGE);
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exitCode = 1;
});
