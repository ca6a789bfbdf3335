/**
 * `npm run schema`: writes the lineage spec's JSON Schema, generated from the zod schema (never
 * written by hand). `--check` fails when the committed file is out of date.
 *
 * Each stage kind's hyperparameters are a `$defs` entry (`SftHyperparameters`, …; the id comes from
 * `.meta()` in common/spec.ts) that the stage's `hyperparameters` property `$ref`s: the Python
 * trainer reads them from this file to validate its config and fill the defaults.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { LineageSpec } from '../common/spec';

export const SCHEMA_FILE = path.join(__dirname, '..', 'specs', 'lineage.schema.json');

export function lineageJsonSchema(): string {
  const schema = z.toJSONSchema(LineageSpec, { io: 'input', target: 'draft-2020-12' });
  return JSON.stringify({ ...schema, $id: 'https://valuedrift.dev/schemas/lineage.schema.json', title: 'valuedrift lineage spec' }, null, 2) + '\n';
}

if (require.main === module) {
  const text = lineageJsonSchema();
  if (process.argv.includes('--check')) {
    const current = fs.existsSync(SCHEMA_FILE) ? fs.readFileSync(SCHEMA_FILE, 'utf8') : '';
    if (current !== text) {
      console.error(`${SCHEMA_FILE} is out of date: run npm run schema`);
      process.exit(1);
    }
    console.log('schema up to date');
  } else {
    fs.writeFileSync(SCHEMA_FILE, text);
    console.log(`wrote ${SCHEMA_FILE}`);
  }
}
