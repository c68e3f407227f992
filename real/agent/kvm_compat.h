/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * UAPI constants newer than the 6.1 headers that Debian's linux-libc-dev-arm64-cross ships.
 * Values from arch/arm64/include/uapi/asm/kvm.h (6.4+). On a kernel without them the ioctls
 * fail (ENXIO/EINVAL) and the agent reports "unsupported".
 */
#ifndef HYPDBG_KVM_COMPAT_H
#define HYPDBG_KVM_COMPAT_H

#include <linux/types.h>

/* Device Control API on the VM fd (KVM_{HAS,SET}_DEVICE_ATTR): the SMCCC filter, 6.4+. */
#ifndef KVM_ARM_VM_SMCCC_CTRL
#define KVM_ARM_VM_SMCCC_CTRL 0
#define KVM_ARM_VM_SMCCC_FILTER 0

enum kvm_smccc_filter_action {
	KVM_SMCCC_FILTER_HANDLE = 0,
	KVM_SMCCC_FILTER_DENY,
	KVM_SMCCC_FILTER_FWD_TO_USER,
};

struct kvm_smccc_filter {
	__u32 base;
	__u32 nr_functions;
	__u8 action;
	__u8 pad[15];
};
#endif

/* arm64 KVM_EXIT_HYPERCALL flags (in the old `longmode` word), 6.4+. */
#ifndef KVM_HYPERCALL_EXIT_SMC
#define KVM_HYPERCALL_EXIT_SMC (1U << 0)
#define KVM_HYPERCALL_EXIT_16BIT (1U << 1)
#endif

#endif
