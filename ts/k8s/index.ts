/** Kubernetes streams: the watched resources, the generic informer, the transport. */
export * from './backoff.js';
export * from './informer.js';
export * from './informers.js';
export * from './keys.js';
export * from './resources.js';
export * from './store.js';
export * from './transport.js';
export type * from './types.js';
export * from './connection.js';
