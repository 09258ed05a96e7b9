/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * common.h - what every Membrane datapath program includes first.
 *
 * Kernel UAPI types and helper declarations, the section and inlining
 * conventions, and the constants shared by all programs. Header-only: every
 * function in ebpf/lib/ is `static __always_inline`, so each program under
 * ebpf/ compiles to one self-contained object.
 *
 * Structs that cross the kernel/user boundary (map keys and values, events)
 * are declared in ebpf/lib/ and mirrored by #[repr(C)] types in
 * crates/datapath/src/maps/. A cargo test compares both against the BTF of
 * the compiled objects, so a change here without its Rust twin fails the build
 * of the test suite, not a node.
 */
#ifndef MEMBRANE_LIB_COMMON_H
#define MEMBRANE_LIB_COMMON_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <asm-generic/errno-base.h>
#include <bpf/bpf_helpers.h>

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

/*
 * tc program sections. aya recognises SchedClassifier programs by the
 * "classifier" prefix; the suffix records the hook a program is written for.
 * The program *name* (the C function name, at most 15 characters, prefixed
 * "mbr_") is what the kernel, bpftool and `tc filter show` display.
 */
#define MBR_SECTION_TC_INGRESS "classifier/ingress"
#define MBR_SECTION_TC_EGRESS  "classifier/egress"

/*
 * Verdict of a program that only observes: hand the packet on to whoever runs
 * next. Under tcx this is TCX_NEXT, under cls_bpf direct-action it is
 * TC_ACT_UNSPEC; both are -1. (TC_ACT_OK would end the tcx chain and skip any
 * program attached after ours.) The UAPI headers of older distributions lack
 * TCX_NEXT, so the pkt_cls.h name is used.
 */
#define MBR_TC_PASS_ON TC_ACT_UNSPEC

/*
 * Direction of a packet relative to the interface whose hook saw it.
 * On a pod's host-side veth, INGRESS is traffic leaving the pod and EGRESS is
 * traffic entering it. Stored in maps as a __u8.
 */
enum mbr_direction {
	MBR_DIR_INGRESS = 0,
	MBR_DIR_EGRESS  = 1,
};

#endif /* MEMBRANE_LIB_COMMON_H */
