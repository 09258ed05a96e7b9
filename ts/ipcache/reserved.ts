/**
 * Reserved identities, numbered as Cilium numbers them, shared by the datapath
 * (ebpf/lib/abi.h), the ipcache and policy.
 */
export const RESERVED = {
  unknown: 0,
  host: 1,
  world: 2,
  unmanaged: 3,
  health: 4,
  init: 5,
  'remote-node': 6,
  'kube-apiserver': 7,
  ingress: 8,
} as const;

export type ReservedName = keyof typeof RESERVED;
