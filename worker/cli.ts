/**
 * `npm run lineage -- <command>` (below, `lineage <command>`):
 *   validate <spec.json>                    check a spec without starting anything
 *   plan <spec.json> [--json] [--throughput FILE] [--prices FILE] [--answer-tokens N]
 *                                           steps, checkpoints, GPU-hours, judge calls, cost and storage before a start
 *   start <spec.json> [--watch]             validate, start, print the workflow ID and UI link
 *   status <id|name> [--watch] [--json]     the lineage's progress (stages, checkpoints, step/total, loss)
 *   report <id|name> [--out DIR] [--json]   drift table and the report (copied to DIR, default .data/reports)
 *   compare <lineage|spec>... [--out DIR] [--json]  finished lineages side by side (Tab. 1 table, trajectory page)
 *   export-history <id|name> <file.json>    the workflow's event history as JSON (for replay tests)
 *   drift <summaries-file> [--json]         drift (M, η) from checkpoint summaries, as the system computes it
 *   judge-check [--file F] [--concurrency N]  a judge's agreement with the labelled stance set
 *   reevaluate <lineage> [--judge MODEL] [--eval-set URI] [--samples N] [--watch]
 *                                           re-judge a finished lineage: a derived lineage, stages from the cache
 * `lineage --help` and `lineage <command> --help` (or `lineage help [command]`) print usage.
 * Options are parsed by node:util parseArgs in strict mode (worker/cliArgs.ts). Errors are one line
 * on stderr; the exit status is 2 for a wrong command line, 1 for anything else that fails.
 * `--json` prints one JSON document per line on stdout (with --watch, one per poll).
 *
 * The commands' modules are imported when a command runs, so `--help` and a wrong command line
 * answer without loading the Temporal and AWS SDKs.
 */
// Type-only imports are erased: they cost nothing at start-up.
import type { Client } from '@temporalio/client';
import type { LineageResult } from '../workflows';
import {
  type ArgumentSpec,
  CliError,
  type CommandSpec,
  defineCommand,
  helpText,
  integerOption,
  type OptionSpec,
  type ParsedCommand,
  parseCommandLine,
  UsageError,
  USAGE_EXIT_CODE,
  usageLine,
  wantsHelp,
} from './cliArgs';
import type { CliSettings } from './cliSettings';

const PROGRAM = 'lineage';

const ID_ARG = { name: 'id|name', description: 'a workflow ID (valuedrift/<name>) or a lineage name' } as const;
const JSON_OPTION = { type: 'boolean', description: 'print JSON (one document per line) instead of text' } as const;

/** What a command prints; tests and the entry point pass their own streams. */
export interface Output {
  out(text: string): void;
  /** Set when the output is a terminal: `--watch` then redraws its lines in place, cut to `columns()`. */
  terminal?: { columns(): number | undefined };
}

interface Command {
  /** The command's line in `lineage --help`. */
  brief: string;
  spec: CommandSpec<Record<string, OptionSpec>, readonly ArgumentSpec[]>;
  run(argv: readonly string[], io: Output): Promise<void>;
}

/** Binds a command's spec to its handler, keeping the option and argument types of that spec. */
function command<const O extends Record<string, OptionSpec>, const A extends readonly ArgumentSpec[]>(
  brief: string,
  spec: CommandSpec<O, A>,
  handler: (
    parsed: Extract<ParsedCommand<O, A>, { help: false }>,
    io: Output,
    spec: CommandSpec<O, A>,
  ) => Promise<void>,
): Command {
  const checked = defineCommand(spec);
  return {
    brief,
    spec: checked,
    async run(argv, io) {
      const parsed = parseCommandLine(checked, argv);
      if (parsed.help) io.out(helpText(checked));
      else await handler(parsed, io, checked);
    },
  };
}

const json = (value: unknown): string => `${JSON.stringify(value)}\n`;

/** A Temporal client from the CLI's settings; an unreachable server is one line that says where it looked. */
async function connect(): Promise<{ client: Client; settings: CliSettings }> {
  const { cliSettings } = await import('./cliSettings');
  const { temporalClient } = await import('./connection');
  const settings = cliSettings();
  try {
    return { client: await temporalClient(settings), settings };
  } catch (err) {
    throw new CliError(
      `cannot reach Temporal at ${settings.TEMPORAL_ADDRESS} (${(err as Error).message}); start the local stack (npm run dev:up) or set TEMPORAL_ADDRESS`,
    );
  }
}

/**
 * Polls a lineage's progress until it ends. `--json`: one document per poll. Text on a terminal: one
 * line per stage, redrawn in place; elsewhere: plain lines, printed only when something changed.
 */
async function watch(workflowId: string, io: Output, asJson: boolean): Promise<void> {
  const { getProgress, progressView } = await import('./lineageClient');
  const { progressPrinter } = await import('./progress');
  const printer = progressPrinter(io.terminal);
  const { client, settings } = await connect();
  try {
    for (;;) {
      const { progress, live } = await getProgress(client, workflowId);
      const view = progressView(workflowId, progress, live);
      const text = asJson ? json(view) : printer.update(view, Date.now());
      if (text) io.out(text);
      if (progress.status === 'done' || progress.status === 'failed') return;
      const d = await client.workflow.getHandle(workflowId).describe();
      if (d.status.name !== 'RUNNING') return;
      await new Promise((r) => setTimeout(r, settings.VALUEDRIFT_WATCH_INTERVAL_MS));
    }
  } finally {
    await client.connection.close();
  }
}

export const COMMANDS: Record<string, Command> = {
  validate: command(
    'check a spec without starting anything',
    {
      name: `${PROGRAM} validate`,
      summary: 'Check a lineage spec against the schema without starting anything.',
      args: [{ name: 'spec.json', description: 'the lineage spec (JSON; schema: specs/lineage.schema.json)' }],
      options: {},
    },
    async ({ args }, io) => {
      const { readSpecFile } = await import('./lineageClient');
      const spec = await readSpecFile(args['spec.json']);
      io.out(`ok: lineage "${spec.name}", ${spec.stages.length} stage(s)\n`);
    },
  ),

  plan: command(
    'what a spec will cost: steps, GPU-hours, judge calls, money, storage',
    {
      name: `${PROGRAM} plan`,
      summary:
        "What a lineage will cost before it starts, per stage of its DAG and in total: optimizer steps and checkpoints from the datasets' sizes, GPU-hours from a throughput table, generations, judge calls and tokens, money (judge online and with the batch API) and storage. Starts nothing; needs no running service.",
      args: [{ name: 'spec.json', description: 'the lineage spec (JSON)' }],
      options: {
        json: { type: 'boolean', description: 'print one JSON document (stages[], totals, assumptions, unknown)' },
        throughput: { type: 'string', value: 'FILE', description: 'JSON laid over data/plan/throughput.json (tokens/s per device, algorithm and size; model sizes)' },
        prices: { type: 'string', value: 'FILE', description: 'JSON laid over data/plan/prices.json (GPU-hour, judge tokens, storage)' },
        'answer-tokens': { type: 'string', value: 'N', description: "mean answer tokens per generation (default: the spec's evaluation.maxNewTokens, an upper bound)" },
      },
      details:
        "Rows: a file: dataset is counted; otherwise the dataset's declared \"rows\" (the paper specs declare\n" +
        'App. B\'s sizes); an s3: dataset without one is counted when the store answers. Without rows a stage\n' +
        'shows "unknown, declare rows". Every estimate names its source under "assumptions".',
    },
    async ({ args, options }, io, spec) => {
      const answerTokens = options['answer-tokens'] === undefined ? undefined : integerOption(spec, 'answer-tokens', options['answer-tokens'], 1);
      const { planLineage, readPlanSpec } = await import('./plan');
      const { renderPlan } = await import('../common/plan');
      const lineageSpec = await readPlanSpec(args['spec.json']);
      const plan = await planLineage(lineageSpec, { throughputFile: options.throughput, pricesFile: options.prices, answerTokens });
      io.out(options.json ? json(plan) : renderPlan(plan));
    },
  ),

  start: command(
    'validate, start, print the workflow ID and the UI link',
    {
      name: `${PROGRAM} start`,
      summary: 'Validate a spec, start its lineage workflow and print the workflow ID and the Temporal UI link. A lineage already running under that name is attached to, not started twice.',
      args: [{ name: 'spec.json', description: 'the lineage spec (JSON)' }],
      options: { watch: { type: 'boolean', description: 'then print progress until the lineage ends' } },
    },
    async ({ args, options }, io) => {
      const fs = await import('node:fs/promises');
      const { readSpecFile, startLineage, uiLink } = await import('./lineageClient');
      const file = args['spec.json'];
      const spec = await readSpecFile(file);
      // The workflow gets the file as written (readSpecFile has just validated it), so defaults are
      // filled in by the workflow's own validation, the same path as a start from the Temporal UI.
      const raw: unknown = JSON.parse(await fs.readFile(file, 'utf8'));
      const { client } = await connect();
      let workflowId: string;
      try {
        const started = await startLineage(client, spec, raw);
        workflowId = started.workflowId;
        io.out(`${started.alreadyRunning ? 'already running' : 'started'}: ${workflowId}\n`);
        io.out(`ui: ${uiLink(workflowId)}\n`);
      } finally {
        await client.connection.close();
      }
      if (options.watch) await watch(workflowId, io, false);
    },
  ),

  'build-dataset': command(
    'build one built ("build") dataset of a spec on its own',
    {
      name: `${PROGRAM} build-dataset`,
      summary:
        'Build one dataset of a spec that has "build" (e.g. synthetic-pairs), and the built datasets it needs, without training anything: prepares its sources, builds it content-keyed (a build with the same key is served from the store) and prints the workflow ID and the UI link.',
      args: [
        { name: 'spec.json', description: 'the lineage spec (JSON)' },
        { name: 'dataset', description: 'the name of a datasets entry with "build"' },
      ],
      options: { wait: { type: 'boolean', description: 'wait for the build and print its result (JSON: dataset, build key, counts, outputs), then the link to each built report (stance-analysis)' } },
    },
    async ({ args, options }, io) => {
      const fs = await import('node:fs/promises');
      const { readSpecFile, uiLink } = await import('./lineageClient');
      const { WorkflowExecutionAlreadyStartedError } = await import('@temporalio/client');
      const { TASK_QUEUES } = await import('../common/config');
      const { isBuilt } = await import('../common/spec');
      const spec = await readSpecFile(args['spec.json']);
      const name = args.dataset;
      const entry = Object.hasOwn(spec.datasets, name) ? spec.datasets[name] : undefined;
      if (!entry) throw new CliError(`${args['spec.json']}: no dataset "${name}" (datasets: ${Object.keys(spec.datasets).join(', ')})`);
      if (!isBuilt(entry)) throw new CliError(`${args['spec.json']}: dataset "${name}" is read from ${entry.uri}, not built (it has no "build")`);
      const raw: unknown = JSON.parse(await fs.readFile(args['spec.json'], 'utf8'));
      const workflowId = `valuedrift-dataset/${spec.name}/${name}`;
      const { client } = await connect();
      try {
        let started = true;
        try {
          await client.workflow.start('datasetWorkflow', { taskQueue: TASK_QUEUES.workflows, workflowId, args: [{ spec: raw, dataset: name }] });
        } catch (err) {
          if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
          started = false;
        }
        io.out(`${started ? 'started' : 'already running'}: ${workflowId}\n`);
        io.out(`ui: ${uiLink(workflowId)}\n`);
        if (options.wait) {
          const result = (await client.workflow.getHandle(workflowId).result()) as { built?: Record<string, { outputs?: Record<string, { uri: string }> }> };
          io.out(json(result));
          // A stance analysis's HTML report (and any other built entry's), one line each.
          for (const [n, b] of Object.entries(result.built ?? {})) if (b.outputs?.report) io.out(`report (${n}): ${b.outputs.report.uri}\n`);
        }
      } finally {
        await client.connection.close();
      }
    },
  ),

  status: command(
    "a lineage's progress: stages, checkpoints, step/total, loss",
    {
      name: `${PROGRAM} status`,
      summary: "A lineage's progress: per stage its status, step/total and loss (live from the training heartbeat), checkpoints and evaluated steps.",
      args: [ID_ARG],
      options: { watch: { type: 'boolean', description: 'repeat until the lineage ends' }, json: JSON_OPTION },
    },
    async ({ args, options }, io) => {
      const { getProgress, progressView, renderProgressView, resolveWorkflowId } = await import('./lineageClient');
      const workflowId = resolveWorkflowId(args['id|name']);
      if (options.watch) return watch(workflowId, io, options.json);
      const { client } = await connect();
      try {
        const { progress, live } = await getProgress(client, workflowId);
        const view = progressView(workflowId, progress, live);
        io.out(options.json ? json(view) : `${renderProgressView(view)}\n`);
      } finally {
        await client.connection.close();
      }
    },
  ),

  report: command(
    'drift table of a finished lineage; copies its HTML report',
    {
      name: `${PROGRAM} report`,
      summary: "A finished lineage's drift table (M and η per stage, topic and stance) and its HTML report, copied from the store to a local folder.",
      args: [ID_ARG],
      options: {
        out: { type: 'string', value: 'DIR', description: 'where the report is copied (default .data/reports)' },
        json: JSON_OPTION,
      },
    },
    async ({ args, options }, io) => {
      const { WorkflowFailedError, WorkflowNotFoundError } = await import('@temporalio/client');
      const { downloadReport, renderDriftRows, reportJson, resolveWorkflowId } = await import('./lineageClient');
      const id = args['id|name'];
      const workflowId = resolveWorkflowId(id);
      const { client, settings } = await connect();
      try {
        const handle = client.workflow.getHandle(workflowId);
        const d = await handle.describe().catch((err: unknown) => {
          if (err instanceof WorkflowNotFoundError) throw new CliError(`no lineage workflow ${workflowId}`);
          throw err;
        });
        if (d.status.name === 'RUNNING') throw new CliError(`${workflowId} is still running; see: npm run lineage -- status ${id}`);
        let result: LineageResult;
        try {
          result = (await handle.result()) as LineageResult;
        } catch (err) {
          if (err instanceof WorkflowFailedError) throw new CliError(`${workflowId} failed: ${err.cause?.message ?? err.message}`);
          throw err;
        }
        const localCopy = await downloadReport(result, options.out ?? settings.reportsDir);
        if (options.json) io.out(json(reportJson(workflowId, result, localCopy)));
        else io.out(`${renderDriftRows(result)}\nreport: ${result.report.uri}\nlocal copy: ${localCopy}\n`);
      } finally {
        await client.connection.close();
      }
    },
  ),

  compare: command(
    'finished lineages side by side: M and η per topic, trajectory plots',
    {
      name: `${PROGRAM} compare`,
      summary:
        "Finished lineages side by side, like the paper's Tab. 1: per topic and stance M and η of every stage (column groups: algorithm × dataset), and one HTML page with the table and per topic and stance the trajectories of all stages, written to the store (compare/<names>/index.html) and copied to a local folder.",
      args: [{ name: 'lineage|spec', description: 'a lineage name, its workflow ID (valuedrift/<name>) or its spec file (a path with "." or "/")', variadic: true }],
      options: {
        out: { type: 'string', value: 'DIR', description: 'where the page is copied, under compare/ (default .data/reports)' },
        json: { type: 'boolean', description: "print one JSON document: lineages, stages, per topic and stage the drift.json entry" },
      },
    },
    async ({ args, options }, io) => {
      const { compareLineages, renderCompareText, resolveCompareInputs } = await import('./compare');
      // Spec files are read first: a bad one is reported without reaching for the server.
      const inputs = await resolveCompareInputs(args['lineage|spec']);
      const { client, settings } = await connect();
      try {
        const doc = await compareLineages({ client, inputs, outDir: options.out ?? settings.reportsDir, settings });
        io.out(options.json ? json(doc) : renderCompareText(doc));
      } finally {
        await client.connection.close();
      }
    },
  ),

  'export-history': command(
    "a workflow's event history as JSON (replay tests)",
    {
      name: `${PROGRAM} export-history`,
      summary: "Write a workflow's event history as JSON, e.g. to record a replay test's history.",
      args: [ID_ARG, { name: 'file.json', description: 'where to write the history' }],
      options: {},
    },
    async ({ args }, io) => {
      const fs = await import('node:fs/promises');
      const { historyToJSON } = await import('@temporalio/common/lib/proto-utils');
      const { resolveWorkflowId } = await import('./lineageClient');
      const workflowId = resolveWorkflowId(args['id|name']);
      const { client } = await connect();
      try {
        const history = await client.workflow.getHandle(workflowId).fetchHistory();
        await fs.writeFile(args['file.json'], historyToJSON(history));
        io.out(`wrote ${history.events?.length ?? 0} events of ${workflowId} to ${args['file.json']}\n`);
      } finally {
        await client.connection.close();
      }
    },
  ),

  drift: command(
    'drift (M, η) from checkpoint summaries, as the system computes it',
    {
      name: `${PROGRAM} drift`,
      summary: 'Drift (M, η) per stage, topic and stance from checkpoint summaries, computed as the system computes drift.json. Needs no running service.',
      args: [{ name: 'summaries-file', description: 'JSON array, {"summaries": [...]}, one summary.json, or JSON lines (docs/drift-format.md)' }],
      options: { json: { type: 'boolean', description: 'print a JSON array with one drift.json object per stage' } },
    },
    async ({ args, options }, io) => {
      const fs = await import('node:fs/promises');
      const { computeStageDrift } = await import('../common/drift');
      const { groupSummariesByStage, parseSummariesFile } = await import('../common/summariesFile');
      const { formatDriftTable } = await import('./driftTable');
      const file = args['summaries-file'];
      let text: string;
      try {
        text = await fs.readFile(file, 'utf8');
      } catch (err) {
        throw new CliError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
      const drifts = groupSummariesByStage(parseSummariesFile(text)).map((summaries) => computeStageDrift({ summaries }));
      io.out(options.json ? json(drifts) : formatDriftTable(drifts));
    },
  ),

  'judge-check': command(
    "a judge's agreement with the labelled stance set",
    {
      name: `${PROGRAM} judge-check`,
      summary: "A judge's agreement with the labelled stance set: accuracy, per-stance precision/recall and calibration.",
      args: [],
      options: {
        file: { type: 'string', value: 'FILE', description: 'labelled rows (JSONL; default data/stance/labelled.jsonl)' },
        concurrency: { type: 'string', value: 'N', description: 'judge calls in flight (default 4)' },
      },
      details:
        'The judge: VALUEDRIFT_JUDGE_BASE_URL (any OpenAI-compatible endpoint; unset: the OpenAI API),\n' +
        'VALUEDRIFT_JUDGE_API_KEY (for the OpenAI API, else OPENAI_API_KEY), VALUEDRIFT_JUDGE_MODEL (default gpt-4o).',
    },
    async ({ options }, io, spec) => {
      const concurrency = integerOption(spec, 'concurrency', options.concurrency, 4);
      const { cliSettings } = await import('./cliSettings');
      const settings = cliSettings();
      // OpenAI's own key goes to OpenAI only, never to another endpoint (as on the worker).
      const apiKey = settings.VALUEDRIFT_JUDGE_BASE_URL ? settings.VALUEDRIFT_JUDGE_API_KEY : (settings.VALUEDRIFT_JUDGE_API_KEY ?? settings.OPENAI_API_KEY);
      if (!settings.VALUEDRIFT_JUDGE_BASE_URL && !apiKey) {
        throw new CliError('no judge endpoint: set VALUEDRIFT_JUDGE_BASE_URL (and VALUEDRIFT_JUDGE_API_KEY), or run npm run dev:up for the local judge');
      }
      const { createJudgeClient } = await import('../activities/judge/client');
      const { runJudgeCheck, formatJudgeCheck } = await import('../activities/judge/check');
      const client = createJudgeClient({ baseURL: settings.VALUEDRIFT_JUDGE_BASE_URL, apiKey });
      const result = await runJudgeCheck({ client, model: settings.VALUEDRIFT_JUDGE_MODEL, file: options.file ?? settings.labelledStanceFile, concurrency });
      io.out(`${formatJudgeCheck(result)}\n`);
    },
  ),

  reevaluate: command(
    'evaluate a finished lineage again: another judge, eval set or sample count',
    {
      name: `${PROGRAM} reevaluate`,
      summary:
        "Evaluate a finished lineage's checkpoints again with another judge, eval set or number of samples per prompt, as a derived lineage <name>--reeval-<hash> whose stages all come from the stage cache; its report links the original. Run twice, it attaches to the same derived lineage.",
      args: [{ name: 'lineage', description: 'the finished lineage: its name or workflow ID (valuedrift/<name>)' }],
      options: {
        judge: { type: 'string', value: 'MODEL', description: "the judge model (the spec's evaluation.judge.model)" },
        'eval-set': { type: 'string', value: 'URI', description: 'the eval set: file:<path>, s3://bucket/key or hf:<org>/<name>' },
        samples: { type: 'string', value: 'N', description: 'generations per prompt (1-100; evaluation.generationsPerPrompt)' },
        watch: { type: 'boolean', description: 'then print progress until the derived lineage ends' },
      },
      details:
        'Only the evaluation changes; training inputs stay, so no stage is trained again. A judge change\n' +
        "alone reuses the stored generations. A worker with VALUEDRIFT_JUDGE_MODEL set asks that model\n" +
        "whatever the spec says (the local stack's workers set it): point such workers at the new judge.",
    },
    async ({ args, options }, io, spec) => {
      const { describeChanges, parseOverrides, reevaluate } = await import('./reevaluate');
      const { uiLink } = await import('./lineageClient');
      const overrides = parseOverrides(spec.name, { judge: options.judge, 'eval-set': options['eval-set'], samples: options.samples });
      const { client } = await connect();
      let r: Awaited<ReturnType<typeof reevaluate>>;
      try {
        r = await reevaluate(client, spec.name, args.lineage, overrides);
      } finally {
        await client.connection.close();
      }
      io.out(`${r.state}: ${r.workflowId}\n`);
      io.out(`derived from: ${r.derivedFrom.lineage} (${describeChanges(r.derivedFrom)})\n`);
      if (r.report) io.out(`report: ${r.report} (npm run lineage -- report ${r.name})\n`);
      io.out(`ui: ${uiLink(r.workflowId)}\n`);
      if (options.watch) await watch(r.workflowId, io, false);
    },
  ),
};

/** `lineage --help`: each command's usage line and what it does. */
export function programHelp(): string {
  const rows = Object.values(COMMANDS).map((c) => [usageLine(c.spec).slice(PROGRAM.length + 1), c.brief] as const);
  const width = Math.max(...rows.map(([u]) => u.length)) + 2;
  return [
    `usage: ${PROGRAM} <command> [arguments] [options]     (in the repository: npm run lineage -- <command> ...)`,
    '',
    'commands:',
    ...rows.map(([u, d]) => `  ${u.padEnd(width)}${d}`),
    '',
    `"${PROGRAM} <command> --help" (or "${PROGRAM} help <command>") shows a command's arguments and options.`,
    'Temporal: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_UI_URL, TEMPORAL_TLS_CERT + TEMPORAL_TLS_KEY, TEMPORAL_API_KEY',
    '(default: the local dev server of npm run dev:up).',
    'Errors: one line on stderr; exit status 2 for a wrong command line, 1 for anything else that fails.',
    '',
  ].join('\n');
}

/** Runs one command line; resolves when it is done, rejects with UsageError, CliError or anything else. */
export async function main(argv: readonly string[], io: Output): Promise<void> {
  const [name, ...rest] = argv;
  if (name === undefined) throw new UsageError(`${PROGRAM}: missing command (${Object.keys(COMMANDS).join(', ')}; see: ${PROGRAM} --help)`);
  if (name.startsWith('-')) {
    if (wantsHelp([name])) return io.out(programHelp());
    throw new UsageError(`${PROGRAM}: unknown option ${name.split('=')[0]} before the command (see: ${PROGRAM} --help)`);
  }
  if (name === 'help') {
    // `lineage help [command]`, as many CLIs spell it.
    const [topic, ...extra] = rest;
    if (extra.length > 0) throw new UsageError(`${PROGRAM} help: unexpected argument "${extra[0]}" (usage: ${PROGRAM} help [<command>])`);
    if (topic === undefined) return io.out(programHelp());
    const about = Object.hasOwn(COMMANDS, topic) ? COMMANDS[topic] : undefined;
    if (!about) throw new UsageError(`${PROGRAM} help: unknown command "${topic}" (commands: ${Object.keys(COMMANDS).join(', ')})`);
    return io.out(helpText(about.spec));
  }
  const cmd = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (!cmd) throw new UsageError(`${PROGRAM}: unknown command "${name}" (commands: ${Object.keys(COMMANDS).join(', ')})`);
  await cmd.run(rest, io);
}

/** The one line printed for a failure: a user-facing message as is, anything else with its class name. */
export function errorLine(err: unknown): string {
  const plain = err instanceof UsageError || err instanceof CliError;
  const msg = plain ? (err as Error).message : err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  return `error: ${msg.split('\n')[0]}`;
}

if (require.main === module) {
  const io: Output = { out: (text) => process.stdout.write(text), ...(process.stdout.isTTY && { terminal: { columns: () => process.stdout.columns } }) };
  // process.exit after the streams have flushed: a piped `--json` document must not be cut short,
  // and open Temporal connections must not keep the process alive.
  const exit = (code: number) => process.stdout.write('', () => process.stderr.write('', () => process.exit(code)));
  main(process.argv.slice(2), io).then(
    () => exit(0),
    (err: unknown) => {
      process.stderr.write(`${errorLine(err)}\n`);
      exit(err instanceof UsageError ? USAGE_EXIT_CODE : 1);
    },
  );
}
