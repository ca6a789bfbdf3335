/**
 * The CLI and the bench scripts through their public entry points: each case spawns
 * `node_modules/.bin/tsx <script> …` with an argument array (no shell) and checks stdout, stderr
 * and the exit status. Nothing here needs the local stack.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StageDrift } from '../../common/contracts';
import { computeStageDrift } from '../../common/drift';
import { formatDriftTable } from '../../worker/driftTable';
import { riseAndPlateau } from '../support/driftFixtures';

const ROOT = path.resolve(__dirname, '..', '..');
const TSX = path.join(ROOT, 'node_modules', '.bin', 'tsx');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a script with tsx; `env` replaces the variables it names (undefined: removed). */
function run(script: string, args: readonly string[], env: Record<string, string | undefined> = {}): Promise<Run> {
  const childEnv: NodeJS.ProcessEnv = { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' };
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) delete childEnv[k];
    else childEnv[k] = v;
  }
  return new Promise((resolve) => {
    execFile(TSX, [script, ...args], { cwd: ROOT, env: childEnv, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}
const lineage = (...args: string[]) => run('worker/cli.ts', args);

/** One line on stderr that starts with "error: ", nothing on stdout, the given exit status. */
function expectOneLineError(r: Run, code: number, pattern: RegExp): void {
  expect(r.stdout).toBe('');
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^error: /);
  expect(lines[0]).toMatch(pattern);
  expect(r.code).toBe(code);
}

let dir: string;
beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-cli-'));
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

describe('lineage: help and command-line errors', () => {
  it('--help lists every command with its usage, exit 0', async () => {
    const r = await lineage('--help');
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^usage: lineage <command>/);
    for (const usage of [
      'validate <spec.json>',
      'start <spec.json> [--watch]',
      'status <id|name> [--watch] [--json]',
      'report <id|name> [--out DIR] [--json]',
      'export-history <id|name> <file.json>',
      'drift <summaries-file> [--json]',
      'judge-check [--file FILE] [--concurrency N]',
    ]) {
      expect(r.stdout).toContain(`  ${usage}`);
    }
  });

  it('start --help prints the command\'s usage and options and starts nothing', async () => {
    // A Temporal address nobody listens on: if start ran, it would fail instead of printing help.
    const r = await run('worker/cli.ts', ['start', '--help'], { TEMPORAL_ADDRESS: '127.0.0.1:9' });
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const lines = r.stdout.split('\n');
    expect(lines[0]).toBe('usage: lineage start <spec.json> [--watch]');
    expect(r.stdout).toMatch(/^ {2}<spec\.json> +the lineage spec/m);
    expect(r.stdout).toMatch(/^ {2}--watch +then print progress/m);
    expect(r.stdout).toMatch(/^ {2}-h, --help +show this help/m);
  });

  it('--bogus fails with one line and exit 2, before and after a command', async () => {
    expectOneLineError(await lineage('--bogus'), 2, /unknown option --bogus/);
    expectOneLineError(await lineage('start', 'specs/demo.json', '--bogus'), 2, /lineage start: unknown option --bogus/);
  });

  it('a missing argument, an extra argument, an unknown command and an option without its value are errors', async () => {
    const [missing, extra, unknown, noValue, none] = await Promise.all([
      lineage('start'),
      lineage('validate', 'specs/demo.json', 'extra.json'),
      lineage('frobnicate'),
      lineage('report', 'demo', '--out'),
      lineage(),
    ]);
    expectOneLineError(missing, 2, /lineage start: missing <spec\.json>/);
    expectOneLineError(extra, 2, /unexpected argument "extra\.json"/);
    expectOneLineError(unknown, 2, /unknown command "frobnicate"/);
    expectOneLineError(noValue, 2, /option --out needs a value/);
    expectOneLineError(none, 2, /missing command/);
  });
});

describe('lineage validate', () => {
  it('accepts specs/demo.json', async () => {
    const r = await lineage('validate', 'specs/demo.json');
    const spec = JSON.parse(await fs.readFile(path.join(ROOT, 'specs', 'demo.json'), 'utf8')) as { name: string; stages: unknown[] };
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`ok: lineage "${spec.name}", ${spec.stages.length} stage(s)\n`);
    expect(r.code).toBe(0);
  });

  it('refuses an invalid spec in one line naming the field, exit 1', async () => {
    const spec = JSON.parse(await fs.readFile(path.join(ROOT, 'specs', 'demo.json'), 'utf8')) as { stages: Array<Record<string, unknown>> };
    (spec.stages[0] as Record<string, unknown>).kind = 'rlhf-magic';
    const file = path.join(dir, 'bad.json');
    await fs.writeFile(file, JSON.stringify(spec));
    expectOneLineError(await lineage('validate', file), 1, /invalid lineage spec .*bad\.json: .*stages/);
  });
});

describe('lineage drift', () => {
  const sft = riseAndPlateau();
  const dpo = riseAndPlateau().map((s) => ({ ...s, stageId: 'dpo' }));

  it('--json prints one drift.json object per stage, as computeStageDrift computes them', async () => {
    const file = path.join(dir, 'summaries.jsonl');
    // Interleaved stages: the CLI groups them.
    const lines = [dpo[0], sft[0], sft[1], dpo[1], sft[2], dpo[2], sft[3], dpo[3]].map((s) => JSON.stringify(s));
    await fs.writeFile(file, `${lines.join('\n')}\n`);
    const r = await lineage('drift', file, '--json');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.trimEnd().split('\n')).toHaveLength(1);
    const drifts = JSON.parse(r.stdout) as StageDrift[];
    expect(drifts.map((d) => d.stageId)).toEqual(['dpo', 'sft']);
    expect(drifts[1]).toEqual(computeStageDrift({ summaries: sft }));
    // The hand-computed values (test/support/driftFixtures.ts).
    const support = drifts[1]?.topics.imm?.stances.support;
    expect(support?.M).toBeCloseTo(0.4, 12);
    expect(support?.eta).toBeCloseTo(1 / 3, 12);
    expect(support?.etaExtStep).toBe(100);
  });

  it('prints the terminal table without --json, the same numbers', async () => {
    const file = path.join(dir, 'summaries.json');
    await fs.writeFile(file, JSON.stringify({ summaries: sft }, null, 2));
    const r = await lineage('drift', file);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(formatDriftTable([computeStageDrift({ summaries: sft })]));
    expect(r.stdout).toMatch(/^sft\s+imm\s+support\s+\+0\.40\s+0\.33\s+0\.\.300$/m);
  });

  it('a broken summaries file or a missing one is one line, exit 1', async () => {
    const file = path.join(dir, 'broken.jsonl');
    await fs.writeFile(file, `${JSON.stringify(sft[0])}\n{"lineage": oops\n`);
    expectOneLineError(await lineage('drift', file, '--json'), 1, /line 2: invalid JSON/);
    expectOneLineError(await lineage('drift', path.join(dir, 'absent.jsonl')), 1, /cannot read .*absent\.jsonl: ENOENT/);
  });
});

describe('benches refuse what they do not know', () => {
  it('a bench with an unknown option or a bad value: one line, exit 2, nothing run', async () => {
    const [judge, generation, training] = await Promise.all([
      run('bench/judge.ts', ['--bogus']),
      run('bench/generation.ts', ['--prompts', 'many']),
      run('bench/training.ts', ['--steps']),
    ]);
    expectOneLineError(judge, 2, /bench\/judge\.ts: unknown option --bogus/);
    expectOneLineError(generation, 2, /--prompts must be an integer/);
    expectOneLineError(training, 2, /option --steps needs a value/);
  });

  it('npm run bench refuses an unknown option and an unknown bench before starting anything', async () => {
    const [flag, name] = await Promise.all([run('infra/bench.ts', ['--fast']), run('infra/bench.ts', ['judge', 'warp'])]);
    expectOneLineError(flag, 2, /npm run bench: unknown option --fast \(see: npm run bench -- --help\)/);
    expectOneLineError(name, 2, /unknown bench "warp" \(benches: judge, training, generation, scale, overlap, datasets, budget\)/);
  });

  it('bench --help prints usage, exit 0', async () => {
    const r = await run('bench/training.ts', ['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^usage: bench\/training\.ts \[--model MODEL\] \[--steps N\] \[--rounds N\] \[--checkpoint-every N\]\n/);
  });
});
