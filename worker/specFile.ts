/**
 * Reading a lineage spec file for the CLI: one CliError line for an unreadable file, bad JSON or an
 * invalid spec. Its own module, importing no Temporal or AWS SDK, so commands that need no service
 * (validate, plan) answer without loading them.
 */
import * as fs from 'node:fs/promises';
import { formatSpecIssues, validateLineageSpec, type LineageSpec } from '../common/spec';
import { CliError } from './cliArgs';

export async function readSpecFile(file: string): Promise<LineageSpec> {
  let raw: string;
  try {
    raw = await fs.readFile(file, 'utf8');
  } catch {
    throw new CliError(`cannot read spec file ${file}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch (err) {
    throw new CliError(`${file} is not valid JSON: ${(err as Error).message}`);
  }
  const v = validateLineageSpec(json);
  if (!v.ok) throw new CliError(`invalid lineage spec ${file}: ${formatSpecIssues(v.issues)}`);
  return v.spec;
}
