/**
 * The bench measures any wireguard-go build: --wireguard-go PATH[,PATH...]
 * or $TUNVPN_BENCH_WIREGUARD_GO, each labelled by what the binary reports.
 */
import { describe, expect, it } from 'vitest';
import { wireguardGoAdapter, wireguardGoPaths, wireguardGoVersion } from '../../bench/lib/vpns.js';
import { label } from '../../bench/lib/report.js';
import { describeIntegration } from '../helpers/netns.js';

describe('bench: wireguard-go builds', () => {
  it('takes the flag first, then the environment, then wireguard-go on PATH', () => {
    expect(wireguardGoPaths('/opt/a/wireguard-go, /opt/b/wireguard-go', { TUNVPN_BENCH_WIREGUARD_GO: '/x' })).toEqual([
      '/opt/a/wireguard-go',
      '/opt/b/wireguard-go',
    ]);
    expect(wireguardGoPaths(undefined, { TUNVPN_BENCH_WIREGUARD_GO: '/x,/y' })).toEqual(['/x', '/y']);
    expect(wireguardGoPaths(undefined, {})).toEqual(['wireguard-go']);
    expect(wireguardGoPaths(' , ', {})).toEqual(['wireguard-go']);
  });

  it('reports "unknown" for a binary that is not there', () => {
    expect(wireguardGoVersion('/nonexistent/wireguard-go')).toBe('unknown');
    expect(wireguardGoAdapter('/nonexistent/wireguard-go').available()).toBe(false);
  });
});

describeIntegration('bench: the installed wireguard-go', ['wireguard-go'], () => {
  it('names each build by the version the binary itself reports', () => {
    const version = wireguardGoVersion('wireguard-go');
    expect(version).toMatch(/^\d+\.\d+\.\d{8}/);
    const adapter = wireguardGoAdapter('wireguard-go');
    expect(adapter.name).toBe(`wireguard-go ${version}`);
    expect(label({ name: adapter.name, version: adapter.version() })).toBe(adapter.name);
    expect(label({ name: 'fastd', version: '22' })).toBe('fastd 22');
  });
});
