/** Policy cookies: the 32-bit number a policy's map entries carry, so flow events can name it. */
import type { PolicySource } from './types.js';

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/**
 * FNV-1a (32 bit) of "kind/namespace/name" over its UTF-8 bytes; a cluster-wide policy has an
 * empty namespace. Never 0 (0 means "no policy" in an entry): a 0 hash becomes 1.
 */
export function policyCookie(src: PolicySource): number {
  let h = FNV_OFFSET;
  for (const byte of Buffer.from(`${src.kind}/${src.namespace ?? ''}/${src.name}`, 'utf8')) {
    h ^= byte;
    h = Math.imul(h, FNV_PRIME) >>> 0;
  }
  return h === 0 ? 1 : h;
}
