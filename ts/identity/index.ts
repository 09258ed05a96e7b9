/** Security identities: labels -> numbers, cluster-wide, with usage tracking and GC. */
export * from './allocator.js';
export * from './api.js';
export * from './cache.js';
export * from './gc.js';
export * from './labels.js';
export * from './numbering.js';
export * from './object.js';
export * from './pods.js';
export * from './reserved.js';
export * from './service.js';
