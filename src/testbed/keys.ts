/**
 * X25519 keys for tests, benchmarks and the demo, made by node:crypto
 * (OpenSSL): independent of the crypto backends under test, so a bug there
 * cannot hide behind keys made by the same code, and synchronous.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto';

export interface KeyPairText {
  /** 32 bytes, base64, as a config file holds it. */
  privateKey: string;
  publicKey: string;
}

/** A fresh X25519 key pair as base64. */
export function makeKeyPair(): KeyPairText {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  return {
    privateKey: Buffer.from(privateKey.export({ format: 'jwk' }).d ?? '', 'base64url').toString('base64'),
    publicKey: Buffer.from(publicKey.export({ format: 'jwk' }).x ?? '', 'base64url').toString('base64'),
  };
}

// RFC 8410 PKCS#8 wrapping of a raw 32-byte X25519 private key, the only
// form in which node:crypto takes one.
const PKCS8_X25519_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');

/** The X25519 public key of a raw 32-byte private key. */
export function publicKeyOf(privateKey: Uint8Array): Buffer {
  const key = createPrivateKey({ key: Buffer.concat([PKCS8_X25519_PREFIX, privateKey]), format: 'der', type: 'pkcs8' });
  return Buffer.from(createPublicKey(key).export({ format: 'jwk' }).x ?? '', 'base64url');
}
