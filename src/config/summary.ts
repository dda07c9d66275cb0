import type { TunvpnConfig } from './types.js';

/**
 * One line for logs and `tunvpn check`. Holds no key: public keys are not
 * secret but long; peers are counted, not listed.
 */
export function summarizeConfig(cfg: TunvpnConfig): string {
  const i = cfg.interface;
  const addresses = i.addresses.length ? i.addresses.join(', ') : 'none';
  const port = i.listenPort === 0 ? 'random' : String(i.listenPort);
  const peers = cfg.peers.length === 1 ? '1 peer' : `${cfg.peers.length} peers`;
  const withEndpoint = cfg.peers.filter((p) => p.endpoint).length;
  return `interface ${i.name}, listen port ${port}, addresses ${addresses}, mtu ${i.mtu}, ${peers} (${withEndpoint} with endpoint), log ${cfg.log.level}, crypto ${cfg.crypto.backend}`;
}
