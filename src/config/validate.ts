/**
 * Walks a raw value against a schema (schema.ts), collecting every issue
 * with its path instead of stopping at the first, and fills in defaults.
 * convict validates one flat level and reports paths without array indices;
 * this gives `peers[1].allowedIPs[0]`. In the result an invalid field is
 * `undefined` (already reported) and an absent optional one is `null`.
 */
import type { IssueSink } from './errors.js';
import { describeType, ListItemsError } from './formats.js';
import { couldBeKeyMaterial, joinPath } from './redact.js';
import { isField, type FieldSchema, type SectionSchema } from './schema.js';

export type Plain = { [key: string]: unknown };

export function isPlainObject(v: unknown): v is Plain {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length];
}

/** Names longer than this get no "did you mean": the edit distance is quadratic in the name's length. */
const SUGGEST_MAX_LENGTH = 64;

function suggestion(key: string, known: string[]): string {
  if (key.length > SUGGEST_MAX_LENGTH) return `known keys: ${known.join(', ')}`;
  const lower = key.toLowerCase();
  let best: string | undefined;
  let bestDistance = 3;
  for (const k of known) {
    const d = k.toLowerCase() === lower ? 0 : editDistance(lower, k.toLowerCase());
    if (d < bestDistance) {
      best = k;
      bestDistance = d;
    }
  }
  return best === undefined ? `known keys: ${known.join(', ')}` : `did you mean "${best}"?`;
}

export function checkSection(schema: SectionSchema, value: unknown, path: string, issues: IssueSink): Plain {
  let obj: Plain = {};
  if (isPlainObject(value)) {
    obj = value;
  } else if (value !== undefined) {
    issues.push({ path, message: `must be an object, got ${describeType(value)}` });
  }
  const { known, nodes, fields } = schemaKeys(schema);
  // for...in with hasOwn lists what Object.keys does, in its order, without an array per peer.
  for (const key in obj) {
    if (!Object.hasOwn(obj, key)) continue;
    if (!Object.hasOwn(schema, key)) {
      const hidden = couldBeKeyMaterial(key) ? 'its name is not shown: it looks like a key; ' : '';
      issues.push({ path: joinPath(path, key), message: `unknown key (${hidden}${suggestion(key, known)})` });
    }
  }
  const out: Plain = {};
  for (let k = 0; k < known.length; k++) {
    const key = known[k];
    const v = Object.hasOwn(obj, key) ? obj[key] : undefined;
    // A field's path is made only when it has an issue: 10,000 peers made 70,000 path strings for none.
    const field = fields[k];
    out[key] = field !== undefined ? checkField(field, v, path, key, issues) : checkSection(nodes[k] as SectionSchema, v, fieldPath(path, key), issues);
  }
  return out;
}

/** A schema key is a plain identifier: no need to check or quote it. */
function fieldPath(path: string, key: string): string {
  return path ? `${path}.${key}` : key;
}

/** A section's keys, their nodes, and each node as a field (undefined for a section): worked out once, not once per peer. */
interface SchemaKeys {
  known: string[];
  nodes: (FieldSchema | SectionSchema)[];
  fields: (FieldSchema | undefined)[];
}

const keysOf = new WeakMap<SectionSchema, SchemaKeys>();

function schemaKeys(schema: SectionSchema): SchemaKeys {
  let keys = keysOf.get(schema);
  if (keys === undefined) {
    const known = Object.keys(schema);
    const nodes = known.map((k) => schema[k]);
    keys = { known, nodes, fields: nodes.map((n) => (isField(n) ? n : undefined)) };
    keysOf.set(schema, keys);
  }
  return keys;
}

function cloneDefault(v: unknown): unknown {
  return Array.isArray(v) ? [...v] : v;
}

/**
 * The elements of a list of objects (peers). Apart from checkField: a
 * closure there capturing its arguments made V8 allocate a context on
 * every call, 70,000 of them for 10,000 peers (about 3 MB per load).
 */
function checkItems(items: SectionSchema, value: unknown[], path: string, issues: IssueSink): unknown[] {
  return value.map((el, i) => {
    const p = `${path}[${i}]`;
    if (!isPlainObject(el)) {
      issues.push({ path: p, message: `must be an object, got ${describeType(el)}` });
      return undefined;
    }
    return checkSection(items, el, p, issues);
  });
}

/** Reports each bad element of a list and keeps the good ones, so later cross-checks still see them. */
function withoutBadItems(err: ListItemsError, value: unknown[], path: string, issues: IssueSink): unknown[] {
  const bad = new Set<number>();
  for (const item of err.items) {
    issues.push({ path: `${path}[${item.index}]${item.path ?? ''}`, message: item.message });
    bad.add(item.index);
  }
  return value.filter((_, i) => !bad.has(i));
}

function checkField(node: FieldSchema, value: unknown, parent: string, key: string, issues: IssueSink): unknown {
  if (value === undefined || (value === null && node.nullable)) {
    if (node.required) {
      issues.push({ path: fieldPath(parent, key), message: 'is required' });
      return undefined;
    }
    return cloneDefault(node.default);
  }
  try {
    node.format(value);
  } catch (err) {
    const path = fieldPath(parent, key);
    if (err instanceof ListItemsError && Array.isArray(value)) return withoutBadItems(err, value, path, issues);
    issues.push({ path, message: err instanceof Error ? err.message : String(err) });
    return undefined;
  }
  if (node.items && Array.isArray(value)) return checkItems(node.items, value, fieldPath(parent, key), issues);
  return value;
}
