/**
 * Command-line parsing for the CLI (worker/cli.ts) and the benches, on `node:util` parseArgs in
 * strict mode: an unknown option, an option without its value, a missing or an extra argument is a
 * UsageError with a one-line message. `--help`/`-h` anywhere before a `--` asks for the usage text
 * instead of running, so it works even next to an otherwise wrong command line.
 * Also home of the two errors the CLI prints as one plain line: UsageError and CliError.
 */
import { parseArgs } from 'node:util';
import { z } from 'zod';

/** A wrong command line: one line for the user, exit status 2 (anything else that fails exits 1). */
export class UsageError extends Error {
  override name = 'UsageError';
}
export const USAGE_EXIT_CODE = 2;

/** A failure the user can act on (no such file, invalid spec, no such workflow): one line, exit 1. */
export class CliError extends Error {
  override name = 'CliError';
}

export interface OptionSpec {
  readonly type: 'string' | 'boolean';
  readonly short?: string;
  /** Placeholder for the value in the usage text ("DIR", "N"). */
  readonly value?: string;
  readonly description: string;
}

export interface ArgumentSpec {
  readonly name: string;
  readonly description: string;
  readonly optional?: boolean;
  /** Takes every remaining positional (zero or more when optional, else one or more); last only. */
  readonly variadic?: boolean;
}

export interface CommandSpec<O extends Record<string, OptionSpec>, A extends readonly ArgumentSpec[]> {
  /** The command as typed, for usage lines and errors: "lineage start", "bench/judge.ts". */
  readonly name: string;
  /** One sentence for the usage text and the command list. */
  readonly summary: string;
  readonly args: A;
  readonly options: O;
  /** More lines for the help text (examples, environment). */
  readonly details?: string;
  /** How to ask for this help, when not `<name> --help` (npm scripts: `npm run bench -- --help`). */
  readonly helpCommand?: string;
}

type OptionValues<O extends Record<string, OptionSpec>> = {
  [K in keyof O]: O[K]['type'] extends 'boolean' ? boolean : string | undefined;
};
type ArgumentValues<A extends readonly ArgumentSpec[]> = {
  [E in A[number] as E['name']]: E['variadic'] extends true ? string[] : E['optional'] extends true ? string | undefined : string;
};

export type ParsedCommand<O extends Record<string, OptionSpec>, A extends readonly ArgumentSpec[]> =
  | { help: true }
  | { help: false; options: OptionValues<O>; args: ArgumentValues<A> };

const HELP: OptionSpec = { type: 'boolean', short: 'h', description: 'show this help' };

/** Declares a command with its literal option and argument types kept (`const` type parameters). */
export function defineCommand<const O extends Record<string, OptionSpec>, const A extends readonly ArgumentSpec[]>(
  spec: CommandSpec<O, A>,
): CommandSpec<O, A> {
  const last = spec.args.length - 1;
  spec.args.forEach((a, i) => {
    if (a.variadic && i !== last) throw new Error(`${spec.name}: only the last argument can be variadic (${a.name})`);
  });
  if ('help' in spec.options) throw new Error(`${spec.name}: --help is built in`);
  return spec;
}

/** True when `--help` or `-h` comes before any `--` terminator. */
export function wantsHelp(argv: readonly string[]): boolean {
  for (const a of argv) {
    if (a === '--') return false;
    if (a === '--help' || a === '-h') return true;
  }
  return false;
}

export function parseCommandLine<O extends Record<string, OptionSpec>, A extends readonly ArgumentSpec[]>(
  spec: CommandSpec<O, A>,
  argv: readonly string[],
): ParsedCommand<O, A> {
  if (wantsHelp(argv)) return { help: true };
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = {};
  for (const [name, o] of Object.entries(spec.options)) options[name] = o.short ? { type: o.type, short: o.short } : { type: o.type };
  let parsed: { values: Record<string, string | boolean | undefined>; positionals: string[] };
  try {
    parsed = parseArgs({ args: [...argv], options, strict: true, allowPositionals: true });
  } catch (err) {
    throw new UsageError(`${spec.name}: ${describeParseError(err)} (see: ${spec.helpCommand ?? `${spec.name} --help`})`);
  }
  const values: Record<string, string | boolean | undefined> = {};
  for (const [name, o] of Object.entries(spec.options)) {
    const v = parsed.values[name];
    // `--out=` would otherwise pass an empty string on as if it were a value.
    if (v === '') throw new UsageError(`${spec.name}: option --${name} needs a value (see: ${spec.helpCommand ?? `${spec.name} --help`})`);
    values[name] = v ?? (o.type === 'boolean' ? false : undefined);
  }
  return { help: false, options: values as OptionValues<O>, args: bindArguments(spec, parsed.positionals) as ArgumentValues<A> };
}

function bindArguments(spec: CommandSpec<Record<string, OptionSpec>, readonly ArgumentSpec[]>, positionals: string[]): Record<string, string | string[] | undefined> {
  const out: Record<string, string | string[] | undefined> = {};
  let i = 0;
  for (const a of spec.args) {
    if (a.variadic) {
      const rest = positionals.slice(i);
      if (rest.length === 0 && !a.optional) throw new UsageError(`${spec.name}: missing <${a.name}> (usage: ${usageLine(spec)})`);
      out[a.name] = rest;
      i = positionals.length;
      continue;
    }
    const v = positionals[i];
    if (v === undefined && !a.optional) throw new UsageError(`${spec.name}: missing <${a.name}> (usage: ${usageLine(spec)})`);
    out[a.name] = v;
    i++;
  }
  const extra = positionals[i];
  if (extra !== undefined) throw new UsageError(`${spec.name}: unexpected argument "${extra}" (usage: ${usageLine(spec)})`);
  return out;
}

/** parseArgs' messages are long and Node-version specific; ours name the option and nothing else. */
function describeParseError(err: unknown): string {
  const code = (err as { code?: unknown }).code;
  const message = err instanceof Error ? err.message : String(err);
  const option = /'(-[^' ]*)/.exec(message)?.[1];
  switch (code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return `unknown option ${option ?? message}`;
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      // A string option without its value (or followed by another option), or a boolean given one.
      return /argument missing|ambiguous/.test(message) ? `option ${option ?? ''} needs a value`.replace('  ', ' ') : `option ${option ?? ''} takes no value`;
    default:
      return message.split('\n')[0] ?? message;
  }
}

/** `name <arg> [--option VALUE] ...`: the first line of the help text. */
export function usageLine(spec: CommandSpec<Record<string, OptionSpec>, readonly ArgumentSpec[]>): string {
  const args = spec.args.map((a) => {
    const core = `<${a.name}>${a.variadic ? '...' : ''}`;
    return a.optional ? `[${core}]` : core;
  });
  const opts = Object.entries(spec.options).map(([name, o]) => `[--${name}${o.type === 'string' ? ` ${o.value ?? 'VALUE'}` : ''}]`);
  return [spec.name, ...args, ...opts].join(' ');
}

/** The text `--help` prints: usage line, summary, arguments, options, details. */
export function helpText(spec: CommandSpec<Record<string, OptionSpec>, readonly ArgumentSpec[]>): string {
  const rows = (list: Array<[string, string]>): string[] => {
    const width = Math.max(...list.map(([k]) => k.length)) + 2;
    return list.map(([k, d]) => `  ${k.padEnd(width)}${d}`);
  };
  const lines = [`usage: ${usageLine(spec)}`, '', ...wrap(spec.summary, 100)];
  if (spec.args.length > 0) {
    lines.push('', 'arguments:', ...rows(spec.args.map((a) => [`<${a.name}>`, a.description])));
  }
  const opts: Array<[string, string]> = Object.entries({ ...spec.options, help: HELP }).map(([name, o]) => [
    `${o.short ? `-${o.short}, ` : ''}--${name}${o.type === 'string' ? ` ${o.value ?? 'VALUE'}` : ''}`,
    o.description,
  ]);
  lines.push('', 'options:', ...rows(opts));
  if (spec.details) lines.push('', spec.details.trimEnd());
  return `${lines.join('\n')}\n`;
}

/** Greedy word wrap for prose in help texts (a word longer than the width gets a line of its own). */
function wrap(text: string, width: number): string[] {
  const out: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (line && line.length + 1 + word.length > width) {
      out.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) out.push(line);
  return out;
}

/** An option value that must be an integer ≥ min; the message names the option. */
export function integerOption(spec: { name: string }, option: string, value: string | undefined, dflt: number, min = 1): number {
  if (value === undefined) return dflt;
  const parsed = z.coerce.number().int().min(min).safeParse(value.trim() === '' ? Number.NaN : value);
  if (!parsed.success) throw new UsageError(`${spec.name}: --${option} must be an integer ≥ ${min} (got "${value}")`);
  return parsed.data;
}

/**
 * For scripts (the benches): parses `argv` (default: this process's) and hands the result to `read`
 * (which may throw UsageError for a bad value); prints the help and exits 0 on `--help`, prints the
 * one-line error and exits 2 on a wrong command line.
 */
export function parseScriptArgs<O extends Record<string, OptionSpec>, A extends readonly ArgumentSpec[], T>(
  spec: CommandSpec<O, A>,
  read: (parsed: { options: OptionValues<O>; args: ArgumentValues<A> }) => T,
  argv: readonly string[] = process.argv.slice(2),
): T {
  try {
    const parsed = parseCommandLine(spec, argv);
    if (parsed.help) {
      process.stdout.write(helpText(spec));
      process.exit(0);
    }
    return read(parsed);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`error: ${err.message}\n`);
    process.exit(USAGE_EXIT_CODE);
  }
}
