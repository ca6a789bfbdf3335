/** Creates the stack's bucket on the local S3 server when it does not exist yet. */
import { CreateBucketCommand, HeadBucketCommand, S3Client } from '@aws-sdk/client-s3';

import type { LogFn } from './proc';
import type { InfraSettings } from './settings';

function httpStatusOf(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null || !('$metadata' in err)) return undefined;
  const meta: unknown = err.$metadata;
  if (typeof meta !== 'object' || meta === null || !('httpStatusCode' in meta)) return undefined;
  return typeof meta.httpStatusCode === 'number' ? meta.httpStatusCode : undefined;
}

export async function ensureBucket(s: InfraSettings, log: LogFn): Promise<void> {
  const s3 = new S3Client({
    endpoint: s.s3Endpoint,
    region: s.s3Region,
    forcePathStyle: true,
    credentials: { accessKeyId: s.s3AccessKeyId, secretAccessKey: s.s3SecretAccessKey },
  });
  try {
    await s3.send(new HeadBucketCommand({ Bucket: s.s3Bucket }));
  } catch (err) {
    if (httpStatusOf(err) !== 404) throw err;
    log(`s3: creating bucket ${s.s3Bucket}`);
    await s3.send(new CreateBucketCommand({ Bucket: s.s3Bucket }));
  } finally {
    s3.destroy();
  }
}
