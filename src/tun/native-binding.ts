/**
 * Loads the compiled TUN addon (build/Release/tunvpn_tun.node, built by
 * `node-gyp rebuild` from src/tun/native/). The package root is found by
 * walking up from this file, so the same code works from src/ (vitest) and
 * from dist/src/ (compiled).
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TunError } from './tun-error.js';

declare const handleBrand: unique symbol;
/** Opaque native device handle (a napi external). */
export interface NativeHandle {
  readonly [handleBrand]: true;
}

/** The addon's functions; see src/tun/native/tun.c for the contracts. */
export interface NativeTun {
  /** offload: IFF_VNET_HDR + TSO/checksum offloads; the third element says whether the kernel took them. */
  open(name: string, multiQueue: boolean, offload: boolean): [NativeHandle, string, boolean];
  /** A BLOCKING fd owned by the caller (benchmark comparison only). */
  openFd(name: string, multiQueue: boolean): [number, string];
  setMtu(name: string, mtu: number): void;
  startReading(
    handle: NativeHandle,
    slab: ArrayBuffer,
    slotSize: number,
    lengths: Uint32Array,
    batchSize: number,
    onBatch: (count: number) => void,
    onError: (err: Error) => void,
  ): void;
  setRef(handle: NativeHandle, ref: boolean): void;
  /** false: dropped because the device queue was full (EAGAIN). */
  write(handle: NativeHandle, packet: Uint8Array): boolean;
  writeBatch(handle: NativeHandle, packets: readonly Uint8Array[], lengths: Uint32Array | undefined, count: number): number;
  close(handle: NativeHandle): void;
  stats(handle: NativeHandle): NativeTunStats;
  /** Test hook: what an offload-mode read hands over for this virtio header and packet (null: dropped). */
  offloadRead(vnetHeader: Uint8Array, packet: Uint8Array, slotSize: number): Buffer[] | null;
  /** Test hook: the [virtio header, packet] writes an offload-mode writeBatch makes of these packets. */
  offloadCoalesce(packets: Uint8Array[]): [Buffer, Buffer][];
}

/** Counters kept by the native side, named as in TunStats. */
export interface NativeTunStats {
  /** Packets larger than a slot, dropped. */
  readOversizeDrops: number;
  /** Offload reads whose virtio header could not be used, dropped. */
  readOffloadDrops: number;
  /** TCP super-packets read (offload mode)... */
  tsoPackets: number;
  /** ...and the segments cut from them. */
  tsoSegments: number;
  /** Coalesced writes (offload mode)... */
  groWrites: number;
  /** ...and the packets they carried. */
  groPackets: number;
}

export const ADDON_FILE = 'tunvpn_tun.node';

/** The directory holding package.json and binding.gyp above `fromDir`. */
export function findPackageRoot(fromDir: string): string {
  let dir = fromDir;
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'binding.gyp'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new TunError('TUN_ADDON_MISSING', `no package root (package.json + binding.gyp) above ${fromDir}`);
    dir = parent;
  }
}

/** Absolute path of the compiled addon. */
export function addonPath(): string {
  return join(findPackageRoot(dirname(fileURLToPath(import.meta.url))), 'build', 'Release', ADDON_FILE);
}

let cached: NativeTun | undefined;

/** Loads the addon once; lazily, so importing this module never fails. */
export function loadNativeTun(): NativeTun {
  if (cached) return cached;
  const path = addonPath();
  if (!existsSync(path)) {
    throw new TunError('TUN_ADDON_MISSING', `TUN addon not built: ${path} is missing (run \`npx node-gyp rebuild\`)`);
  }
  const require = createRequire(import.meta.url);
  cached = require(path) as NativeTun;
  return cached;
}
