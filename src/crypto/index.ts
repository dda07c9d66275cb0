/**
 * Picks and loads a crypto backend. Both backends load lazily so that a host
 * without the native addon never touches it, and a host that has it never
 * pays for instantiating the WASM module.
 */
import { TunvpnError } from '../errors.js';
import type { CryptoBackend, CryptoBackendChoice, CryptoBackendName } from './types.js';

export type { CryptoBackend, CryptoBackendChoice, CryptoBackendName } from './types.js';
export { KEY_LEN, NONCE_LEN, TAG_LEN, XNONCE_LEN } from './util.js';

async function loadSodiumNative(): Promise<CryptoBackend> {
  const { createSodiumNativeBackend } = await import('./sodium-native.js');
  return createSodiumNativeBackend();
}

async function loadLibsodiumWrappers(): Promise<CryptoBackend> {
  const { createLibsodiumWrappersBackend } = await import('./libsodium-wrappers.js');
  return createLibsodiumWrappersBackend();
}

function unavailable(name: CryptoBackendName, cause: unknown): TunvpnError {
  if (cause instanceof TunvpnError && cause.code === 'CRYPTO_BACKEND_UNAVAILABLE') return cause;
  return new TunvpnError('CRYPTO_BACKEND_UNAVAILABLE', `crypto backend ${name} is unavailable`, { cause });
}

/**
 * Loads the requested backend. 'auto' prefers sodium-native and falls back to
 * libsodium-wrappers; the result's `name` says which one runs, for the log.
 * A named backend that cannot load is a TunvpnError 'CRYPTO_BACKEND_UNAVAILABLE'.
 */
export async function loadCrypto(backend: CryptoBackendChoice): Promise<CryptoBackend> {
  if (backend === 'sodium-native' || backend === 'auto') {
    try {
      return await loadSodiumNative();
    } catch (cause) {
      if (backend === 'sodium-native') throw unavailable('sodium-native', cause);
    }
  }
  try {
    return await loadLibsodiumWrappers();
  } catch (cause) {
    throw unavailable('libsodium-wrappers', cause);
  }
}
