/**
 * Underlay faults: loss with reordering, and
 * sends failing outright (host A's route to the underlay removed).
 *
 * Loss and reordering come from a userspace relay on host B
 * (test/fixtures/hardening/lossy-relay.mjs) because this machine's kernel
 * has no sch_netem (CONFIG_NET_SCH_NETEM is not set): host A's endpoint for
 * B is the relay, and B, which has no endpoint for A, learns the relay's
 * address from A's packets, so every tunnel datagram both ways crosses it.
 * The relay applies netem's model: loss L, delay 5 ms ± 2 ms, 25 % sent
 * at once (reordered ahead of the delayed ones).
 * TCP across the tunnel must still complete with a correct checksum; send
 * failures must be summarised in the log, not logged per packet, and the
 * tunnel must recover when the route returns. The peer-down case (60 s)
 * lives in peer-down.test.ts.
 */
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ADDR } from '../../src/testbed/site-to-site.js';
import { tcpTransfer } from '../helpers/daemon.js';
import { describeIntegration, pingUntil, sleep } from '../helpers/netns.js';
import { hardeningBed, pingCount, RELAY_FIXTURE, type HardeningBed } from './helpers.js';

const RELAY_PORT = 51821;

/** Sends a settings line to the relay and waits for its "ok". */
async function relaySet(relay: ChildProcess, loss: number, reorder: number, delayMs: number, jitterMs: number): Promise<void> {
  const ok = new Promise<void>((resolve) => {
    const on = (c: Buffer): void => {
      if (c.toString().includes('ok')) {
        relay.stdout?.off('data', on);
        resolve();
      }
    };
    relay.stdout?.on('data', on);
  });
  relay.stdin?.write(`${loss} ${reorder} ${delayMs} ${jitterMs}\n`);
  await ok;
}

describeIntegration('hardening: underlay loss, reordering and failing sends', ['ping'], () => {
  let h: HardeningBed;
  let relay: ChildProcess | undefined;

  beforeAll(async () => {
    h = await hardeningBed('hu', {
      bFirst: true,
      endpointOfB: `${ADDR.tbUnder.v4}:${RELAY_PORT}`,
      endpointOfA: null,
      beforeDaemons: async (bed) => {
        const r = bed.tb.spawn(process.execPath, [RELAY_FIXTURE, ADDR.tbUnder.v4, String(RELAY_PORT), ADDR.tbUnder.v4, '51820']);
        relay = r;
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error('relay did not start')), 10_000);
          r.stdout?.once('data', () => {
            clearTimeout(timer);
            resolve();
          });
        });
      },
    });
  });

  afterAll(async () => {
    relay?.kill('SIGKILL');
    await h?.destroy();
  });

  // The loss starts once the TCP connection is up, and the heavy case is
  // 20 %, not 30 %. At 30 % each way a SYN or its SYN-ACK is lost half the
  // time and the retries wait 1, 2, 4, 8, 16 s; so do retransmissions after
  // a timeout (from 0.2 s, doubling). 2 of 25 runs took over 40 s, with the
  // TUN offloads off as well: a lottery, not a test.
  for (const [loss, bytes, limitS] of [
    [10, 2 * 1024 * 1024, 40],
    [20, 256 * 1024, 50],
  ] as const) {
    it(
      `${loss}% loss with reordering each way: a ${bytes / 1024} KiB TCP transfer completes intact`,
      async () => {
        if (!relay) throw new Error('no relay');
        const lossy = relay;
        let r;
        try {
          r = await tcpTransfer(h.bed.la, h.bed.lb, ADDR.lb.v4, 5200 + loss, bytes, limitS, () => relaySet(lossy, loss / 100, 0.25, 5, 2));
        } finally {
          await relaySet(relay, 0, 0, 0, 0);
        }
        console.log(JSON.stringify({ loss, bytes, ms: r.ms }));
        expect(r.received).toBe(bytes);
        expect(r.remote).toBe(r.local);
        expect(h.da.running && h.db.running).toBe(true);
      },
      (limitS + 10) * 1000,
    );
  }

  it('failing sends are logged once per interval, not per packet, and traffic recovers', async () => {
    const net = '10.60.0.0/24';
    // The tunnel is up again after the lossy runs.
    await pingUntil(h.bed.la, ADDR.lb.v4, 10_000);
    const from = h.da.records().length;
    await h.bed.ta.exec('ip', ['route', 'del', net, 'dev', h.bed.underA]);
    let restored = false;
    try {
      // 3 s of tunnel traffic that cannot leave host A: about 300 failed sends.
      const p = await pingCount(h.bed.la, ADDR.lb.v4, 150, 0.02);
      expect(p.received).toBe(0);
      await sleep(500);
      const warns = h.da
        .records()
        .slice(from)
        .filter((r) => r.msg === 'UDP sends failing');
      console.log(JSON.stringify({ sendFailureLogLines: warns.length, first: warns[0] }));
      // The first failure is reported at once; the rest wait for the next interval (10 s).
      expect(warns.length).toBe(1);
      expect(String(warns[0]?.err)).toMatch(/ENETUNREACH|unreachable/i);
      await h.bed.ta.exec('ip', ['route', 'add', net, 'dev', h.bed.underA, 'proto', 'kernel', 'scope', 'link', 'src', ADDR.taUnder.v4]);
      restored = true;
      await pingUntil(h.bed.la, ADDR.lb.v4, 10_000);
      const after = await pingCount(h.bed.la, ADDR.lb.v4, 50, 0.02);
      expect(after.received).toBe(50);
      // No log line per failed packet, ever.
      expect(h.da.records().slice(from).length).toBeLessThan(10);
    } finally {
      if (!restored) {
        await h.bed.ta
          .exec('ip', ['route', 'add', net, 'dev', h.bed.underA, 'proto', 'kernel', 'scope', 'link', 'src', ADDR.taUnder.v4])
          .catch(() => undefined);
      }
    }
  });
});
