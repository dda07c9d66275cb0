import { afterAll, expect, it } from 'vitest';
import { Netns, describeIntegration, linkNamespaces, pingUntil, sleep } from './netns.js';

describeIntegration('netns helpers', ['ping'], () => {
  const made: Netns[] = [];
  afterAll(async () => {
    await Promise.all(made.map((n) => n.destroy()));
  });

  it('links two namespaces with veth and pings across', async () => {
    const a = await Netns.create('tva');
    const b = await Netns.create('tvb');
    made.push(a, b);
    const { ifB } = await linkNamespaces(a, b, ['10.60.0.1/24', 'fd60::1/64'], ['10.60.0.2/24', 'fd60::2/64']);
    expect(await pingUntil(a, '10.60.0.2', 5_000)).toMatch(/1 received/);
    expect(await pingUntil(a, 'fd60::2', 5_000)).toMatch(/1 received/);
    await a.destroy();
    // The veth peer vanishes with its namespace (the kernel does it asynchronously).
    let links = '';
    for (let i = 0; i < 100; i++) {
      links = (await b.exec('ip', ['-o', 'link'])).stdout;
      if (!links.includes(ifB)) break;
      await sleep(20);
    }
    expect(links).not.toContain(ifB);
  });
});
