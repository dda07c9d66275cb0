/**
 * `tunvpn genkey`, `pubkey`, `genpsk`: byte-for-byte the behaviour of
 * `wg genkey`, `wg pubkey`, `wg genpsk` (output, messages, exit status 1 on
 * bad key input), except that messages start "tunvpn:" and usage mistakes
 * exit 2 like every other tunvpn command.
 */
import { fstatSync } from 'node:fs';
import { loadCrypto } from '../crypto/index.js';
import { decodeKey, encodeKey, keyTextProblem } from '../config/keys.js';
import { EXIT_FAILURE, EXIT_OK, parseCommandArgs, type CliCommand } from './command.js';
import { readAll, type CliIo } from './io.js';

const KEY_TEXT_LENGTH = 44;

function helpOnly(command: string, args: string[]): boolean {
  return parseCommandArgs(command, args, { help: { type: 'boolean', short: 'h' } }).values.help === true;
}

/** As wg does: a key written to a regular file others can read deserves a warning. */
function warnIfWorldAccessible(io: CliIo): void {
  if (io.stdout !== process.stdout) return;
  try {
    const st = fstatSync(1);
    if (st.isFile() && (st.mode & 0o007) !== 0) {
      io.stderr.write('Warning: writing to world accessible file.\nConsider setting the umask to 077 and trying again.\n');
    }
  } catch {
    /* no stdout to inspect */
  }
}

export const genkeyCommand: CliCommand = {
  name: 'genkey',
  summary: 'print a new random private key (base64), like `wg genkey`',
  async run(args, io) {
    if (helpOnly('genkey', args)) {
      io.stdout.write(
        'Usage: tunvpn genkey\n\nPrints a new random X25519 private key, clamped, as base64 and a newline,\n' +
          'exactly like `wg genkey`. Keep it secret: umask 077; tunvpn genkey > private.key\n',
      );
      return EXIT_OK;
    }
    const crypto = await loadCrypto('auto');
    warnIfWorldAccessible(io);
    const key = crypto.generatePrivateKey();
    io.stdout.write(`${encodeKey(key)}\n`);
    crypto.memzero(key);
    return EXIT_OK;
  },
};

export const genpskCommand: CliCommand = {
  name: 'genpsk',
  summary: 'print a new random preshared key (base64), like `wg genpsk`',
  async run(args, io) {
    if (helpOnly('genpsk', args)) {
      io.stdout.write("Usage: tunvpn genpsk\n\nPrints 32 random bytes as base64 and a newline, for a peer's presharedKey,\nexactly like `wg genpsk`.\n");
      return EXIT_OK;
    }
    const crypto = await loadCrypto('auto');
    warnIfWorldAccessible(io);
    const key = new Uint8Array(32);
    crypto.randomBytes(key);
    io.stdout.write(`${encodeKey(key)}\n`);
    crypto.memzero(key);
    return EXIT_OK;
  },
};

// wg's char_is_space plus NUL, which wg also skips after the key.
function isTrailingSpace(byte: number): boolean {
  return byte === 0 || byte === 0x20 || (byte >= 0x09 && byte <= 0x0d);
}

export const pubkeyCommand: CliCommand = {
  name: 'pubkey',
  summary: 'read a private key on stdin, print its public key, like `wg pubkey`',
  async run(args, io) {
    if (helpOnly('pubkey', args)) {
      io.stdout.write(
        'Usage: tunvpn pubkey < private.key\n\nReads a base64 private key on stdin and prints its public key as base64 and a\n' +
          'newline, exactly like `wg pubkey`; e.g. tunvpn genkey | tee private.key | tunvpn pubkey\n',
      );
      return EXIT_OK;
    }
    // Like wg: the first 44 bytes are the key, then only whitespace may follow.
    const { data, truncated } = await readAll(io.stdin, 64 * 1024);
    try {
      if (data.length < KEY_TEXT_LENGTH) {
        io.stderr.write('tunvpn: Key is not the correct length or format\n');
        return EXIT_FAILURE;
      }
      for (let i = KEY_TEXT_LENGTH; i < data.length; i++) {
        if (!isTrailingSpace(data[i])) {
          io.stderr.write('tunvpn: Trailing characters found after key\n');
          return EXIT_FAILURE;
        }
      }
      if (truncated) {
        io.stderr.write('tunvpn: Trailing characters found after key\n');
        return EXIT_FAILURE;
      }
      const text = data.subarray(0, KEY_TEXT_LENGTH).toString('latin1');
      if (keyTextProblem(text) !== undefined) {
        io.stderr.write('tunvpn: Key is not the correct length or format\n');
        return EXIT_FAILURE;
      }
      const crypto = await loadCrypto('auto');
      const priv = decodeKey(text);
      const pub = crypto.publicKey(priv);
      crypto.memzero(priv);
      io.stdout.write(`${encodeKey(pub)}\n`);
      return EXIT_OK;
    } finally {
      data.fill(0);
    }
  },
};
