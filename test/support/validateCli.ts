/** `npm run lineage -- validate` (tsx worker/cli.ts validate) on specs/demo.json with its stages edited. */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';

const ROOT = path.resolve(__dirname, '..', '..');

export type Stage = Record<string, unknown>;

/** Writes the edited demo spec to a temporary file, validates it through the CLI, and removes the file. */
export async function validateEditedDemo(edit: (stages: Stage[]) => void): Promise<{ code: number; out: string }> {
  const spec = JSON.parse(await fs.readFile(path.join(ROOT, 'specs', 'demo.json'), 'utf8')) as { stages: Stage[] };
  edit(spec.stages);
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-validate-'));
  const file = path.join(dir, 'spec.json');
  await fs.writeFile(file, JSON.stringify(spec));
  try {
    return await new Promise((resolve) => {
      execFile(path.join(ROOT, 'node_modules', '.bin', 'tsx'), ['worker/cli.ts', 'validate', file], { cwd: ROOT, timeout: 60_000 }, (err, stdout, stderr) =>
        resolve({ code: err ? Number(err.code ?? 1) : 0, out: stdout + stderr }),
      );
    });
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}
