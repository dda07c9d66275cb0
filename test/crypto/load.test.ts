import { afterEach, describe, expect, it, vi } from 'vitest';

afterEach(() => {
  vi.doUnmock('../../src/crypto/sodium-native.js');
  vi.doUnmock('../../src/crypto/libsodium-wrappers.js');
  vi.resetModules();
});

describe('loadCrypto', () => {
  it("'auto' picks sodium-native on this machine and says so", async () => {
    const { loadCrypto } = await import('../../src/crypto/index.js');
    expect((await loadCrypto('auto')).name).toBe('sodium-native');
  });

  it('loads each backend by name', async () => {
    const { loadCrypto } = await import('../../src/crypto/index.js');
    expect((await loadCrypto('sodium-native')).name).toBe('sodium-native');
    expect((await loadCrypto('libsodium-wrappers')).name).toBe('libsodium-wrappers');
  });

  describe('when sodium-native cannot load', () => {
    const breakSodiumNative = (): void => {
      vi.doMock('../../src/crypto/sodium-native.js', () => ({
        createSodiumNativeBackend: () => {
          throw new Error('simulated: no prebuilt addon for this platform');
        },
      }));
    };

    it("'auto' falls back to libsodium-wrappers", async () => {
      breakSodiumNative();
      const { loadCrypto } = await import('../../src/crypto/index.js');
      expect((await loadCrypto('auto')).name).toBe('libsodium-wrappers');
    });

    it('naming it fails with CRYPTO_BACKEND_UNAVAILABLE, keeping the cause', async () => {
      breakSodiumNative();
      const { loadCrypto } = await import('../../src/crypto/index.js');
      // After resetModules the index holds a fresh copy of the errors module.
      const { TunvpnError } = await import('../../src/errors.js');
      const err: unknown = await loadCrypto('sodium-native').then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(TunvpnError);
      expect((err as InstanceType<typeof TunvpnError>).code).toBe('CRYPTO_BACKEND_UNAVAILABLE');
      expect((err as InstanceType<typeof TunvpnError>).message).toContain('sodium-native');
      expect(String((err as InstanceType<typeof TunvpnError>).cause)).toContain('simulated');
    });
  });

  it('a libsodium-wrappers failure is CRYPTO_BACKEND_UNAVAILABLE too', async () => {
    vi.doMock('../../src/crypto/libsodium-wrappers.js', () => ({
      createLibsodiumWrappersBackend: () => Promise.reject(new Error('simulated wasm failure')),
    }));
    const { loadCrypto } = await import('../../src/crypto/index.js');
    await expect(loadCrypto('libsodium-wrappers')).rejects.toMatchObject({ code: 'CRYPTO_BACKEND_UNAVAILABLE' });
  });
});
