/**
 * The one small crypto interface the protocol core uses. Two backends
 * implement it: sodium-native (native libsodium, fast) and libsodium-wrappers
 * (WASM, portable). BLAKE2s, HMAC and HKDF are not in libsodium and are shared
 * by both backends (src/crypto/hash.ts, from @noble/hashes).
 *
 * Every AEAD call writes into a caller-provided buffer so the transport path
 * allocates nothing. Inputs may be subarrays of larger buffers. `out` must not
 * overlap the input unless stated.
 */
export type CryptoBackendName = 'sodium-native' | 'libsodium-wrappers';

/** What a config may ask for: a backend by name, or 'auto' (sodium-native if it loads, else libsodium-wrappers). */
export type CryptoBackendChoice = 'auto' | CryptoBackendName;

export interface CryptoBackend {
  readonly name: CryptoBackendName;

  /** Fills `out` with cryptographically secure random bytes. */
  randomBytes(out: Uint8Array): void;

  /** A fresh clamped X25519 private key (32 bytes). */
  generatePrivateKey(): Uint8Array;
  /** The X25519 public key of a private key. */
  publicKey(privateKey: Uint8Array): Uint8Array;
  /**
   * X25519(privateKey, publicKey) into `out` (32 bytes). Returns false, and
   * leaves `out` zeroed, when the shared secret is all zero (a low-order
   * public key); callers must reject the handshake then.
   */
  x25519(out: Uint8Array, privateKey: Uint8Array, publicKey: Uint8Array): boolean;

  /**
   * ChaCha20-Poly1305 IETF (RFC 8439). Writes plaintext.length + 16 bytes to
   * `out` and returns that count. nonce: 12 bytes, key: 32 bytes.
   */
  aeadSeal(out: Uint8Array, plaintext: Uint8Array, ad: Uint8Array | null, nonce: Uint8Array, key: Uint8Array): number;
  /**
   * Opens a ChaCha20-Poly1305 IETF box into `out` (ciphertext.length - 16
   * bytes). Returns the plaintext length, or -1 when authentication fails.
   */
  aeadOpen(out: Uint8Array, ciphertext: Uint8Array, ad: Uint8Array | null, nonce: Uint8Array, key: Uint8Array): number;

  /** XChaCha20-Poly1305 (24-byte nonce), same contract as aeadSeal. */
  xaeadSeal(out: Uint8Array, plaintext: Uint8Array, ad: Uint8Array | null, nonce: Uint8Array, key: Uint8Array): number;
  /** XChaCha20-Poly1305 (24-byte nonce), same contract as aeadOpen. */
  xaeadOpen(out: Uint8Array, ciphertext: Uint8Array, ad: Uint8Array | null, nonce: Uint8Array, key: Uint8Array): number;

  /** Overwrites a secret with zeros (sodium_memzero where available). */
  memzero(buf: Uint8Array): void;
}
