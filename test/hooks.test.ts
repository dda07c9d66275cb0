/**
 * The hook runner with real processes: exit statuses, signals, spawn
 * failures, %i, no shell, order, bounded output, timeout (the whole process
 * group killed), and what it logs (never a key).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expandHook, HookError, runHook, runHookPhase } from '../src/hooks.js';
import { createLogger } from '../src/log.js';

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'tvhooks-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

class Lines extends Writable {
  text = '';
  override _write(chunk: Buffer | string, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.text += chunk.toString();
    done();
  }
  records(): Record<string, unknown>[] {
    return this.text
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  }
}

/** A process's state letter from /proc (R, S, Z...), or "gone". */
function processState(pid: number): string {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return 'gone';
  }
}

function logger(level = 'debug'): { log: ReturnType<typeof createLogger>; out: Lines } {
  const out = new Lines();
  return { log: createLogger({ level, pretty: false, destination: out }), out };
}

describe('runHook', () => {
  it('/bin/true succeeds, /bin/false exits 1', async () => {
    const ok = await runHook(['/bin/true']);
    expect(ok).toMatchObject({ exitCode: 0, signal: null, timedOut: false });
    const bad = await runHook(['/bin/false']);
    expect(bad).toMatchObject({ exitCode: 1, signal: null, timedOut: false });
  });

  it('reports a signal, and a program that cannot be started', async () => {
    const killed = await runHook(['/bin/sh', '-c', 'kill -SEGV $$']);
    expect(killed.signal).toBe('SIGSEGV');
    expect(killed.exitCode).toBeNull();
    const missing = await runHook(['/nonexistent/tunvpn-hook']);
    expect(missing.spawnError).toMatch(/ENOENT/);
    // What the loader refuses cannot crash the runner either.
    expect((await runHook([])).spawnError).toBe('empty argument vector');
    expect((await runHook(['/bin/echo', 'a\u0000b'])).spawnError).toMatch(/null bytes/);
  });

  it('uses no shell: metacharacters reach the program as they are', async () => {
    const r = await runHook(['/usr/bin/printf', '%s\\n', '$HOME', '; exit 7', '`id`', '*']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe('$HOME\n; exit 7\n`id`\n*\n');
  });

  it('a script writes a file; a bare name is looked up in PATH', async () => {
    const script = join(tmp, 'hook.sh');
    const marker = join(tmp, 'marker');
    writeFileSync(script, `#!/bin/sh\necho "$1 $2" > "${marker}"\n`);
    chmodSync(script, 0o755);
    expect((await runHook([script, 'up', 'tv0'])).exitCode).toBe(0);
    expect(readFileSync(marker, 'utf8')).toBe('up tv0\n');
    expect((await runHook(['true'])).exitCode).toBe(0);
  });

  it('keeps at most the output limit and counts the rest', async () => {
    const r = await runHook(['/bin/sh', '-c', 'head -c 100000 /dev/zero | tr "\\0" a; echo err >&2'], { outputLimit: 1000 });
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe('a'.repeat(1000));
    expect(r.stdoutDropped).toBe(99_000);
    expect(r.stderr).toBe('err\n');
  });

  it('kills a hook past its timeout, with what it started', async () => {
    const pidFile = join(tmp, 'child.pid');
    const t0 = Date.now();
    const r = await runHook(['/bin/sh', '-c', `sleep 60 & echo $! > ${pidFile}; wait`], { timeoutMs: 500 });
    const ms = Date.now() - t0;
    expect(r.timedOut).toBe(true);
    expect(ms).toBeGreaterThanOrEqual(450);
    expect(ms).toBeLessThan(5_000);
    // The background sleep was in the hook's process group: dead too (gone,
    // or a zombie when this container's init is slow to reap orphans).
    const pid = Number(readFileSync(pidFile, 'utf8'));
    await new Promise((r2) => setTimeout(r2, 200));
    expect(processState(pid)).toMatch(/^(gone|Z)$/);
  });

  it('does not wait for a program the hook left running in the background', async () => {
    const pidFile = join(tmp, 'bg.pid');
    const t0 = Date.now();
    const r = await runHook(['/bin/sh', '-c', `sleep 30 & echo $! > ${pidFile}; echo started`], { timeoutMs: 10_000 });
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe('started\n');
    expect(Date.now() - t0).toBeLessThan(3_000);
    process.kill(Number(readFileSync(pidFile, 'utf8')), 'SIGKILL');
  });
});

describe('expandHook', () => {
  it('replaces every %i in every argument, and nothing else', () => {
    expect(expandHook(['/usr/sbin/nft', 'add', 'table', 'ip', 'tv_%i', '%i%i', '%%i', '%I', '%s'], 'wg0')).toEqual([
      '/usr/sbin/nft',
      'add',
      'table',
      'ip',
      'tv_wg0',
      'wg0wg0',
      '%wg0',
      '%I',
      '%s',
    ]);
  });
});

describe('runHookPhase', () => {
  it('runs the hooks in order with %i replaced, logs command and status at info, output at debug', async () => {
    const { log, out } = logger();
    const file = join(tmp, 'order.txt');
    const failures = await runHookPhase({
      phase: 'postUp',
      hooks: [
        ['/bin/sh', '-c', `echo one-%i >> ${file}`],
        ['/bin/sh', '-c', `echo two-%i >> ${file}; echo said-%i`],
      ],
      ifname: 'tvx0',
      log,
      stopOnFailure: true,
    });
    expect(failures).toBe(0);
    expect(readFileSync(file, 'utf8')).toBe('one-tvx0\ntwo-tvx0\n');
    const recs = out.records();
    const ran = recs.filter((r) => r.msg === 'postUp hook ran: exit status 0');
    expect(ran.map((r) => r.hook)).toEqual(['interface.hooks.postUp[0]', 'interface.hooks.postUp[1]']);
    expect(ran[0].level).toBe(30);
    expect(ran[1].argv).toEqual(['/bin/sh', '-c', `echo two-tvx0 >> ${file}; echo said-tvx0`]);
    const output = recs.find((r) => r.msg === 'postUp hook output');
    expect(output).toMatchObject({ level: 20, hook: 'interface.hooks.postUp[1]', stdout: 'said-tvx0\n' });
  });

  it('at info level the output is not logged', async () => {
    const { log, out } = logger('info');
    await runHookPhase({ phase: 'postUp', hooks: [['/bin/echo', 'hello']], ifname: 'tvx0', log, stopOnFailure: true });
    expect(out.text).toContain('postUp hook ran');
    expect(out.text).not.toContain('hello\\n');
  });

  it('start-up phase: the first failure throws HookError naming the hook, argv and status; later hooks do not run', async () => {
    const { log, out } = logger();
    const after = join(tmp, 'after-failure');
    const err = await runHookPhase({
      phase: 'preUp',
      hooks: [['/bin/true'], ['/bin/sh', '-c', 'exit 3', '%i'], ['/usr/bin/touch', after]],
      ifname: 'tvx1',
      log,
      stopOnFailure: true,
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(HookError);
    const h = err as HookError;
    expect(h.code).toBe('HOOK_FAILED');
    expect(h.index).toBe(1);
    expect(h.message).toBe('preUp hook interface.hooks.preUp[1] ["/bin/sh","-c","exit 3","tvx1"] failed: exit status 3');
    expect(existsSync(after)).toBe(false);
    expect(out.records().some((r) => r.msg === 'preUp hook failed: exit status 3' && r.level === 50)).toBe(true);
  });

  it('the error stays one line of bounded length, whatever the hook holds', async () => {
    const { log } = logger();
    const script = `exit 5\n${'#'.repeat(10_000)}`;
    const err = await runHookPhase({ phase: 'postUp', hooks: [['/bin/sh', '-c', script]], ifname: 'tvx5', log, stopOnFailure: true }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err?.message).toMatch(
      /^postUp hook interface\.hooks\.postUp\[0\] \["\/bin\/sh","-c","exit 5\\n#+\.\.\. \(10007 characters\)"\] failed: exit status 5$/,
    );
    expect(err?.message.length).toBeLessThan(400);
    expect(err?.message).not.toContain('\n');
  });

  it('a timeout in a start-up phase says so', async () => {
    const { log } = logger();
    await expect(runHookPhase({ phase: 'postUp', hooks: [['/bin/sleep', '10']], ifname: 'tvx2', log, stopOnFailure: true, timeoutMs: 300 })).rejects.toThrow(
      'postUp hook interface.hooks.postUp[0] ["/bin/sleep","10"] failed: timed out after 300 ms and was killed',
    );
  });

  it('teardown phase: a failure is logged at warn and the next hook still runs', async () => {
    const { log, out } = logger();
    const marker = join(tmp, 'postdown-ran');
    const failures = await runHookPhase({
      phase: 'postDown',
      hooks: [['/bin/false'], ['/nonexistent/x'], ['/usr/bin/touch', marker]],
      ifname: 'tvx3',
      log,
      stopOnFailure: false,
    });
    expect(failures).toBe(2);
    expect(existsSync(marker)).toBe(true);
    const warned = out
      .records()
      .filter((r) => r.level === 40)
      .map((r) => r.msg);
    expect(warned[0]).toBe('postDown hook failed: exit status 1; teardown continues');
    expect(warned[1]).toMatch(/^postDown hook failed: could not be started: .*ENOENT; teardown continues$/);
  });

  it('never logs key-like text: not in argv, not in output, not in the error', async () => {
    const { log, out } = logger();
    const key = 'sN80f9/buqeW/fYjsPu7CaYNASNJC+Jb4Ef0pUnZn30=';
    const err = await runHookPhase({
      phase: 'postUp',
      hooks: [['/bin/sh', '-c', `echo ${key}; echo ${key} >&2; exit 1`]],
      ifname: 'tvx4',
      log,
      stopOnFailure: true,
    }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err?.message).toMatch(/exit status 1/);
    expect(err?.message).not.toContain(key);
    expect(out.text).toContain('postUp hook output');
    expect(out.text).not.toContain(key);
    expect(out.text).not.toContain(key.slice(0, 40));
  });
});
