/** The streams a command talks to; tests pass their own, the bin passes process's. */
export interface CliIo {
  stdin: NodeJS.ReadableStream;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  /** Environment for TUNVPN_CONFIG and the like; default process.env. */
  env?: NodeJS.ProcessEnv;
}

/** Reads a stream to its end, or until more than `limit` bytes arrived (then `truncated`). */
export async function readAll(stream: NodeJS.ReadableStream, limit: number): Promise<{ data: Buffer; truncated: boolean }> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.from(chunk as Uint8Array);
    chunks.push(buf);
    size += buf.length;
    if (size > limit) return { data: Buffer.concat(chunks), truncated: true };
  }
  return { data: Buffer.concat(chunks), truncated: false };
}
