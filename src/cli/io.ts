import { Writable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { escapeControl } from '../config/redact.js';

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

/**
 * A stream in front of stdout or stderr that escapes every character a
 * terminal could act on (ESC, other controls, bidi overrides: see
 * escapeControl) as \uXXXX before it reaches the terminal, whatever the
 * text came from: a config, a command-line argument, a file name, a
 * message from the kernel. With `allowSgr`, colour sequences pass (`show`
 * colours its own output on a TTY). Writes go through synchronously, so
 * output order and the exit-time flush are those of the stream behind.
 */
export class SafeOutput extends Writable {
  private readonly decoder = new StringDecoder('utf8');

  constructor(
    private readonly target: NodeJS.WritableStream,
    private readonly allowSgr = false,
  ) {
    super({ decodeStrings: false });
  }

  /** What the stream behind says: commands decide on colour from it. */
  get isTTY(): boolean {
    return (this.target as { isTTY?: boolean }).isTTY === true;
  }

  override _write(chunk: Buffer | string, _encoding: BufferEncoding, done: (err?: Error | null) => void): void {
    const text = typeof chunk === 'string' ? chunk : this.decoder.write(chunk);
    if (text !== '') this.target.write(escapeControl(text, this.allowSgr));
    done();
  }

  override _final(done: (err?: Error | null) => void): void {
    const rest = this.decoder.end();
    if (rest !== '') this.target.write(escapeControl(rest, this.allowSgr));
    done();
  }
}

/**
 * `io` with stdout and stderr behind SafeOutput. `allowSgr` applies to
 * stdout only: nothing tunvpn writes to stderr is coloured.
 */
export function safeIo(io: CliIo, opts: { allowSgr?: boolean } = {}): CliIo {
  const out: CliIo = { stdin: io.stdin, stdout: new SafeOutput(io.stdout, opts.allowSgr === true), stderr: new SafeOutput(io.stderr) };
  if (io.env !== undefined) out.env = io.env;
  return out;
}
