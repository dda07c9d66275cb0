/** Public surface of the protocol core (see device.ts for the flow). */
export { WireGuardDevice, ProtocolPeer, ProtocolError } from './device.js';
export type {
  CookieResult,
  DataResult,
  DecapResult,
  DropReason,
  ErrorResult,
  HandshakeResult,
  OutboundDatagram,
  PeerStats,
  ProtocolConstants,
  ProtocolOptions,
  ProtocolPeerOptions,
  SourceAddress,
} from './device.js';
export { DEFAULT_CONSTANTS } from './constants.js';
export { transportSize } from './session.js';
export { TRANSPORT_OVERHEAD, messageType, decodeMessage, MessageError } from './messages.js';
