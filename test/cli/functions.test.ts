/**
 * The CLI's parts as functions: the command-line parser, the settings module, and the JSON that
 * `status --json` and `report --json` print (checked against the text output they stand beside;
 * the live commands need a running lineage, so their data is built here by hand).
 */
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_S3_REGION,
  DEFAULT_TEMPORAL_ADDRESS,
  DEFAULT_TEMPORAL_NAMESPACE,
  DEFAULT_TEMPORAL_UI_URL,
} from '../../common/defaults';
import { DEFAULT_JUDGE_MODEL } from '../../common/spec';
import type { LineageProgress, LineageResult } from '../../workflows';
import { COMMANDS, errorLine, main, programHelp } from '../../worker/cli';
import { CliError, defineCommand, helpText, integerOption, parseCommandLine, UsageError } from '../../worker/cliArgs';
import { parseCliSettings } from '../../worker/cliSettings';
import { type LiveStage, progressView, renderDriftRows, renderProgressView, reportJson } from '../../worker/lineageClient';

const spec = defineCommand({
  name: 'tool run',
  summary: 'Runs things.',
  args: [
    { name: 'target', description: 'what to run' },
    { name: 'extra', description: 'more', optional: true, variadic: true },
  ],
  options: {
    out: { type: 'string', value: 'DIR', description: 'where' },
    fast: { type: 'boolean', description: 'hurry' },
  },
});

describe('parseCommandLine', () => {
  it('binds arguments and options by name, with false/undefined for absent ones', () => {
    const p = parseCommandLine(spec, ['t1', '--out=o', 'a', 'b']);
    expect(p).toEqual({ help: false, options: { out: 'o', fast: false }, args: { target: 't1', extra: ['a', 'b'] } });
    const q = parseCommandLine(spec, ['--fast', 't2']);
    expect(q).toEqual({ help: false, options: { out: undefined, fast: true }, args: { target: 't2', extra: [] } });
  });

  it('--help or -h anywhere before "--" asks for help, even beside an unknown option; after "--" it is an argument', () => {
    expect(parseCommandLine(spec, ['--bogus', '-h'])).toEqual({ help: true });
    expect(parseCommandLine(spec, ['t', '--help'])).toEqual({ help: true });
    expect(parseCommandLine(spec, ['t', '--', '--help'])).toMatchObject({ help: false, args: { target: 't', extra: ['--help'] } });
  });

  it('refuses unknown options, values on booleans, missing values and missing arguments with UsageError', () => {
    const fails = (argv: string[], pattern: RegExp) => {
      let caught: unknown;
      try {
        parseCommandLine(spec, argv);
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(UsageError);
      expect((caught as Error).message).toMatch(pattern);
      expect((caught as Error).message).not.toContain('\n');
    };
    fails(['t', '--bogus'], /^tool run: unknown option --bogus \(see: tool run --help\)$/);
    fails(['t', '--fast=yes'], /option --fast takes no value/);
    fails(['t', '--out'], /option --out needs a value/);
    fails(['t', '--out', '--fast'], /option --out needs a value/);
    fails(['t', '--out='], /option --out needs a value/);
    fails([], /^tool run: missing <target> \(usage: tool run <target> \[<extra>\.\.\.\] \[--out DIR\] \[--fast\]\)$/);
  });

  it('refuses an extra argument when the last one is not variadic', () => {
    const one = defineCommand({ name: 'one', summary: 'x', args: [{ name: 'a', description: 'a' }], options: {} });
    expect(() => parseCommandLine(one, ['x', 'y'])).toThrow(/unexpected argument "y"/);
  });

  it('integerOption: default when absent, the number when valid, a UsageError naming the option otherwise', () => {
    expect(integerOption(spec, 'n', undefined, 4)).toBe(4);
    expect(integerOption(spec, 'n', '12', 4)).toBe(12);
    for (const bad of ['0', '-1', '2.5', 'many', ' ']) expect(() => integerOption(spec, 'n', bad, 4)).toThrow(UsageError);
    expect(() => integerOption(spec, 'n', 'x', 4)).toThrow('tool run: --n must be an integer ≥ 1 (got "x")');
  });

  it('defineCommand refuses a variadic argument before the last and a home-made --help', () => {
    expect(() =>
      defineCommand({ name: 'bad', summary: 'x', args: [{ name: 'a', description: 'a', variadic: true }, { name: 'b', description: 'b' }], options: {} }),
    ).toThrow(/only the last argument can be variadic/);
    expect(() => defineCommand({ name: 'bad', summary: 'x', args: [], options: { help: { type: 'boolean', description: 'h' } } })).toThrow(/built in/);
  });

  it('helpText lists arguments, options and the built-in --help', () => {
    const text = helpText(spec);
    expect(text.split('\n')[0]).toBe('usage: tool run <target> [<extra>...] [--out DIR] [--fast]');
    expect(text).toMatch(/^ {2}--out DIR +where$/m);
    expect(text).toMatch(/^ {2}-h, --help +show this help$/m);
  });
});

describe('the lineage commands, in process', () => {
  it('every command answers --help with its usage line; the program help lists them all', async () => {
    expect(Object.keys(COMMANDS)).toEqual(['validate', 'plan', 'start', 'build-dataset', 'status', 'report', 'compare', 'export-history', 'drift', 'judge-check', 'reevaluate']);
    for (const name of Object.keys(COMMANDS)) {
      let out = '';
      await main([name, '--help'], { out: (t) => (out += t) });
      expect(out.split('\n')[0]).toMatch(new RegExp(`^usage: lineage ${name}( |$)`));
      expect(programHelp()).toContain(`  ${name}`);
    }
    const jsonCommands = Object.entries(COMMANDS).filter(([, c]) => 'json' in c.spec.options).map(([n]) => n);
    expect(jsonCommands).toEqual(['plan', 'status', 'report', 'compare', 'drift']);
  });

  it('help [command] prints the same texts as --help; help of an unknown command is a usage error', async () => {
    let out = '';
    const io = { out: (t: string) => (out += t) };
    await main(['help'], io);
    expect(out).toBe(programHelp());
    out = '';
    await main(['help', 'report'], io);
    let viaFlag = '';
    await main(['report', '--help'], { out: (t) => (viaFlag += t) });
    expect(out).toBe(viaFlag);
    await expect(main(['help', 'frobnicate'], io)).rejects.toThrow(/help: unknown command "frobnicate"/);
    await expect(main(['help', 'report', 'x'], io)).rejects.toBeInstanceOf(UsageError);
  });

  it('errorLine: user errors as they are, anything else with its class name, always one line', () => {
    expect(errorLine(new UsageError('lineage: nope'))).toBe('error: lineage: nope');
    expect(errorLine(new CliError('no lineage workflow valuedrift/x'))).toBe('error: no lineage workflow valuedrift/x');
    expect(errorLine(new TypeError('bad\nstack'))).toBe('error: TypeError: bad');
  });
});

describe('parseCliSettings', () => {
  it('defaults come from common/defaults.ts (and the spec for the judge model)', () => {
    const s = parseCliSettings({});
    expect(s.TEMPORAL_ADDRESS).toBe(DEFAULT_TEMPORAL_ADDRESS);
    expect(s.TEMPORAL_NAMESPACE).toBe(DEFAULT_TEMPORAL_NAMESPACE);
    expect(s.TEMPORAL_UI_URL).toBe(DEFAULT_TEMPORAL_UI_URL);
    expect(s.VALUEDRIFT_JUDGE_MODEL).toBe(DEFAULT_JUDGE_MODEL);
    expect(s.VALUEDRIFT_WATCH_INTERVAL_MS).toBe(3000);
    expect(s.VALUEDRIFT_S3_REGION).toBe(DEFAULT_S3_REGION);
    expect(s.VALUEDRIFT_S3_FORCE_PATH_STYLE).toBe('false');
    expect(s.VALUEDRIFT_S3_ENDPOINT).toBeUndefined();
    expect(s.TEMPORAL_API_KEY).toBeUndefined();
  });

  it('reads the variables, coerces numbers, and treats empty values as unset', () => {
    const s = parseCliSettings({ TEMPORAL_ADDRESS: 'temporal.example:7233', TEMPORAL_NAMESPACE: '', VALUEDRIFT_WATCH_INTERVAL_MS: '500', UNRELATED: 'x' });
    expect(s.TEMPORAL_ADDRESS).toBe('temporal.example:7233');
    expect(s.TEMPORAL_NAMESPACE).toBe(DEFAULT_TEMPORAL_NAMESPACE);
    expect(s.VALUEDRIFT_WATCH_INTERVAL_MS).toBe(500);
    expect(s).not.toHaveProperty('UNRELATED');
  });

  it('refuses bad values with a CliError naming the variable, never echoing its value', () => {
    expect(() => parseCliSettings({ VALUEDRIFT_WATCH_INTERVAL_MS: 'soon' })).toThrow(CliError);
    expect(() => parseCliSettings({ VALUEDRIFT_WATCH_INTERVAL_MS: 'soon' })).toThrow(/^environment variable VALUEDRIFT_WATCH_INTERVAL_MS: /);
    expect(() => parseCliSettings({ VALUEDRIFT_S3_FORCE_PATH_STYLE: 'yes' })).toThrow(/^environment variable VALUEDRIFT_S3_FORCE_PATH_STYLE: /);
    expect(() => parseCliSettings({ TEMPORAL_TLS_CERT: '/c.pem' })).toThrow(/TEMPORAL_TLS_CERT: set both TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY/);
    let message = '';
    try {
      parseCliSettings({ VALUEDRIFT_JUDGE_BASE_URL: 'sk-secret-not-a-url' });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/^environment variable VALUEDRIFT_JUDGE_BASE_URL: /);
    expect(message).not.toContain('sk-secret');
  });
});

describe('status --json and report --json carry what the text shows', () => {
  const progress: LineageProgress = {
    lineage: 'demo',
    status: 'running',
    base: { evaluated: true },
    stages: [
      { id: 'sft', kind: 'sft', parent: 'base', status: 'done', workflowId: 'valuedrift/demo/sft', totalSteps: 40, checkpoints: [20, 40], evaluated: [0, 20, 40], latestLoss: 1.25, drift: true },
      { id: 'dpo-support', kind: 'dpo', parent: 'sft', status: 'running', workflowId: 'valuedrift/demo/dpo-support', totalSteps: 0, checkpoints: [], evaluated: [], latestLoss: null, drift: false },
      { id: 'dpo-oppose', kind: 'dpo', parent: 'sft', status: 'waiting', workflowId: 'valuedrift/demo/dpo-oppose', totalSteps: 0, checkpoints: [], evaluated: [], latestLoss: null, drift: false },
    ],
  };
  const live = new Map<string, LiveStage>([
    [
      'dpo-support',
      {
        stage: { stageId: 'dpo-support', kind: 'dpo', status: 'training', totalSteps: 12, checkpoints: [4], evaluated: [0], latestLoss: 0.7 },
        training: { step: 6, total: 12, loss: 0.6931 },
      },
    ],
  ]);

  it('the view lays the running stage\'s own progress and heartbeat over the lineage\'s entry', () => {
    const view = progressView('valuedrift/demo', progress, live);
    const parsed = JSON.parse(JSON.stringify(view)) as typeof view;
    expect(parsed).toMatchObject({ workflowId: 'valuedrift/demo', lineage: 'demo', status: 'running', base: { evaluated: true } });
    expect(parsed.stages.map((s) => [s.id, s.status, s.step, s.totalSteps, s.latestLoss, s.checkpoints, s.evaluated])).toEqual([
      ['sft', 'done', null, 40, 1.25, [20, 40], [0, 20, 40]],
      ['dpo-support', 'training', 6, 12, 0.6931, [4], [0]],
      ['dpo-oppose', 'waiting', null, 0, null, [], []],
    ]);
    expect(parsed.stages[0]).toMatchObject({ kind: 'sft', parent: 'base', workflowId: 'valuedrift/demo/sft', drift: true });
  });

  it('every figure of the JSON appears in its row of the text', () => {
    const view = progressView('valuedrift/demo', progress, live);
    const text = renderProgressView(view);
    expect(text.split('\n')[0]).toBe('lineage demo: running   base evaluated: yes');
    for (const s of view.stages) {
      const row = text.split('\n').find((l) => l.trimStart().startsWith(`${s.id} `));
      expect(row, s.id).toBeDefined();
      const cells = (row as string).trim().split(/\s+/);
      const step = s.step !== null ? `${s.step}/${s.totalSteps}` : s.totalSteps ? `-/${s.totalSteps}` : '-';
      expect(cells).toEqual([
        s.id,
        s.kind,
        s.status,
        step,
        s.latestLoss === null ? '-' : s.latestLoss.toFixed(4),
        s.checkpoints.join(',') || '-',
        s.evaluated.join(',') || '-',
      ]);
    }
  });

  it('report --json: the result, the workflow ID and the local copy; the text rows are its drift rows', () => {
    const ref = (uri: string) => ({ uri, sha256: 'a'.repeat(64), bytes: 10 });
    const result: LineageResult = {
      lineage: 'demo',
      report: ref('s3://valuedrift/lineages/demo/report/index.html'),
      stages: [
        {
          stageId: 'sft',
          kind: 'sft',
          cached: false,
          totalSteps: 40,
          finalCheckpoint: 's3://valuedrift/x',
          drift: ref('s3://valuedrift/lineages/demo/sft/drift.json'),
          driftRows: [
            { category: 'abortion', stance: 'support', M: 0.125, eta: 0.5 },
            { category: 'abortion', stance: 'oppose', M: -0.25, eta: 1 },
          ],
        },
      ],
    };
    const j = JSON.parse(JSON.stringify(reportJson('valuedrift/demo', result, '/tmp/r/demo/index.html'))) as Record<string, unknown>;
    expect(j).toMatchObject({ workflowId: 'valuedrift/demo', lineage: 'demo', localCopy: '/tmp/r/demo/index.html', report: { uri: result.report.uri } });
    expect((j.stages as LineageResult['stages'])[0]?.driftRows).toEqual(result.stages[0]?.driftRows);
    const rows = renderDriftRows(result).split('\n').slice(1).map((l) => l.trim().split(/\s+/));
    expect(rows).toEqual([
      ['sft', 'abortion', 'support', '+0.13', '0.50'],
      ['sft', 'abortion', 'oppose', '-0.25', '1.00'],
    ]);
  });
});
