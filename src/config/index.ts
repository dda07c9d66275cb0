export type { CryptoBackendChoice, EndpointConfig, InterfaceConfig, PeerConfig, TunvpnConfig } from './types.js';
export { ConfigError, formatIssue, type ConfigIssue } from './errors.js';
export { loadConfig, resolveConfigPath, DEFAULT_CONFIG_PATH, CONFIG_ENV } from './load.js';
export { parseConfig, type ParseOptions } from './parse.js';
export { diffConfig, type ConfigDiff } from './diff.js';
export { summarizeConfig } from './summary.js';
export { configSchema, peerSchema, interfaceSchema, describeSchema, LOG_LEVELS, CRYPTO_BACKENDS, type FieldDoc } from './schema.js';
export { parseEndpoint } from './formats.js';
export { decodeKey, encodeKey, keyTextProblem, KEY_LENGTH } from './keys.js';
