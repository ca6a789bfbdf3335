/**
 * The stack's record file (`<data dir>/stack.json`): which processes the stack started, so that
 * `stackDown` stops exactly those process groups and nothing else. Written atomically (temporary
 * file + rename); callers hold the stack lock while they change it.
 */
import fs from 'node:fs';
import path from 'node:path';

import { z } from 'zod';

export const ServiceRecord = z.object({
  name: z.string(),
  pid: z.number().int().positive(),
  pgid: z.number().int().positive(),
  /** `processIdentity(pid)` at spawn: tells our process from a later one that reuses the pid. */
  identity: z.string(),
  port: z.number().int().nullable(),
  startedAt: z.string(),
  cmd: z.array(z.string()),
  logFile: z.string(),
});
export type ServiceRecord = z.infer<typeof ServiceRecord>;

const StackFile = z.object({ services: z.array(ServiceRecord) });
type StackFile = z.infer<typeof StackFile>;

export class StackRecord {
  constructor(readonly file: string) {}

  exists(): boolean {
    return fs.existsSync(this.file);
  }

  /** Every recorded service (none when the file does not exist). Throws on a file that is not a record. */
  all(): ServiceRecord[] {
    let text: string;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch {
      return [];
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new Error(`${this.file} is not JSON (${err instanceof Error ? err.message : String(err)}); stop its processes by hand and delete it`);
    }
    const parsed = StackFile.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new Error(
        `${this.file} is not a stack record (${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}); stop its processes by hand and delete it`,
      );
    }
    return parsed.data.services;
  }

  find(name: string): ServiceRecord | undefined {
    return this.all().find((s) => s.name === name);
  }

  /** Adds a record, replacing any under the same name. */
  put(record: ServiceRecord): void {
    this.write({ services: [...this.all().filter((s) => s.name !== record.name), record] });
  }

  drop(name: string): void {
    this.write({ services: this.all().filter((s) => s.name !== name) });
  }

  private write(file: StackFile): void {
    fs.mkdirSync(path.dirname(this.file), { recursive: true });
    const tmp = `${this.file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, `${JSON.stringify(file, null, 2)}\n`);
    fs.renameSync(tmp, this.file);
  }
}
