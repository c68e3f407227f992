/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Used when hypdbg is given a debug-sr.h on its own: the nVHE/VHE entry points the kernel's
 * nvhe/debug-sr.c and vhe/debug-sr.c put around the header's common functions, with no host
 * buffers (SPE, TRBE, BRBE) to save.
 */
#include <hyp/debug-sr.h>

/* __debug_switch_to_guest (nvhe/debug-sr.c, vhe/debug-sr.c) */
void __debug_switch_to_guest(struct kvm_vcpu *vcpu)
{
	__debug_switch_to_guest_common(vcpu);
}

/* __debug_switch_to_host (nvhe/debug-sr.c, vhe/debug-sr.c) */
void __debug_switch_to_host(struct kvm_vcpu *vcpu)
{
	__debug_switch_to_host_common(vcpu);
}
