/** Local copies of models from the store, shared by training and generation on one worker. */
import * as path from 'node:path';
import type { ModelHandle } from '../common/contracts';
import { workerEnv } from './env';
import { downloadDir } from './store';

/** Files a model needs to be loaded for inference or as a starting point (no optimizer state). */
export function isWeightsFile(rel: string): boolean {
  const name = rel.split('/').pop() ?? rel;
  return !/^(optimizer\.pt|scheduler\.pt|rng_state.*\.pth|training_args\.bin|trainer_state\.json|scaler\.pt)$/.test(name);
}

/**
 * The argument the trainer's `model` field takes: the base URI as is, or a local directory holding
 * the checkpoint's weights (downloaded once per content hash, verified file by file).
 */
export async function localModel(model: ModelHandle): Promise<string> {
  if (!model.manifest) return model.uri;
  const dest = path.join(workerEnv().workDir, 'models', model.manifest.sha256.slice(0, 32));
  await downloadDir(model.manifest, dest, { filter: isWeightsFile });
  return dest;
}
