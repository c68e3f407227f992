/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * hypdbg's glue around the kernel's debug save/restore code: it fills the kernel-shaped
 * structures of <hypdbg/shim.h> from the flat block the simulator passes (struct
 * hypdbg_exchange), calls the kernel's functions in the order the world switch does
 * (v4.5 __kvm_vcpu_run for era 1; nvhe/switch.c __kvm_vcpu_run for eras 2 and 3), and copies
 * the result back. A faulting register access longjmps back here (a hyp panic).
 */
#include <hypdbg/shim.h>

#define HYPDBG_EXPORT __attribute__((__visibility__("default")))
#define HYPDBG_ABI_VERSION 2

/*
 * What the simulator passes; mirrored by `Exchange` in hypdbg-kernelc's ffi.rs. The four
 * register blocks are the simulator's own (same layout), read on entry and written back on
 * success; the rest is copied both ways.
 */
struct hypdbg_exchange {
	u32 abi_version;
	u32 size;
	struct kvm_guest_debug_arch *vcpu_debug_state;
	struct kvm_guest_debug_arch *external_debug_state;
	struct kvm_guest_debug_arch *vcpu_host_regs;	/* eras 1, 2: vcpu->arch.host_debug_state */
	struct kvm_guest_debug_arch *cpu_host_regs;	/* v6.10+: host_data->host_debug_state.regs */
	u64 guest_mdscr_el1;
	u64 guest_mdccint_el1;
	u64 host_mdscr_el1;
	u64 host_mdccint_el1;
	u64 external_mdscr_el1;
	u64 vcpu_flags;		/* HYPDBG_VF_* */
	u32 debug_ptr;		/* 0: vcpu_debug_state, 1: external_debug_state, 2: elsewhere */
	u32 debug_owner;	/* enum debug_owner */
	u32 debug_brps;
	u32 debug_wrps;
};

__attribute__((__visibility__("hidden"))) __thread struct hypdbg_call *hypdbg_current;

/* The kernel objects the code under test sees: per thread, so calls may run in parallel. */
static __thread struct kvm_vcpu hypdbg_vcpu;
__attribute__((__visibility__("hidden"))) __thread struct kvm_host_data kvm_host_data;

static void hypdbg_load(const struct hypdbg_exchange *x)
{
	struct kvm_vcpu *v = &hypdbg_vcpu;
	struct kvm_host_data *h = &kvm_host_data;
	int i;

	/* Field by field (no memset of the whole objects: this runs on every world switch). */
	v->vcpu_id = 0;
	for (i = 0; i < NR_SYS_REGS; i++) {
		v->arch.ctxt.sys_regs[i] = 0;
		h->host_ctxt.sys_regs[i] = 0;
	}
	v->arch.vcpu_debug_state = *x->vcpu_debug_state;
	v->arch.external_debug_state = *x->external_debug_state;
	v->arch.ctxt.sys_regs[MDSCR_EL1] = x->guest_mdscr_el1;
	v->arch.ctxt.sys_regs[MDCCINT_EL1] = x->guest_mdccint_el1;
	v->arch.iflags = x->vcpu_flags;
	v->arch.mdcr_el2 = 0;
	h->host_ctxt.sys_regs[MDSCR_EL1] = x->host_mdscr_el1;
	h->host_ctxt.sys_regs[MDCCINT_EL1] = x->host_mdccint_el1;
	h->host_debug_state.regs = *x->cpu_host_regs;
	h->host_debug_state.pmscr_el1 = 0;
	h->host_debug_state.pmblimitr_el1 = 0;
	h->host_debug_state.trfcr_el1 = 0;
	h->host_debug_state.trblimitr_el1 = 0;
	h->host_debug_state.brbcr_el1 = 0;
	h->host_debug_state.mdcr_el2 = 0;
	h->debug_brps = x->debug_brps;
	h->debug_wrps = x->debug_wrps;
	h->trfcr_while_in_guest = 0;
	h->flags = 0;
#if HYPDBG_ERA == 1
	v->arch.host_debug_state = *x->vcpu_host_regs;
#elif HYPDBG_ERA == 2 && !HYPDBG_PERCPU
	v->arch.host_debug_state.regs = *x->vcpu_host_regs;
	v->arch.host_debug_state.pmscr_el1 = 0;
	v->arch.host_debug_state.pmblimitr_el1 = 0;
	v->arch.host_debug_state.trfcr_el1 = 0;
	v->arch.host_debug_state.trblimitr_el1 = 0;
	v->arch.host_debug_state.brbcr_el1 = 0;
	v->arch.host_debug_state.mdcr_el2 = 0;
#endif
#if HYPDBG_ERA < 3
	v->arch.debug_ptr = x->debug_ptr ? &v->arch.external_debug_state : &v->arch.vcpu_debug_state;
	v->arch.host_cpu_context = &h->host_ctxt;
#else
	v->arch.debug_owner = (enum debug_owner)x->debug_owner;
	v->arch.external_mdscr_el1 = x->external_mdscr_el1;
#endif
}

static void hypdbg_store(struct hypdbg_exchange *x)
{
	const struct kvm_vcpu *v = &hypdbg_vcpu;
	const struct kvm_host_data *h = &kvm_host_data;

	*x->vcpu_debug_state = v->arch.vcpu_debug_state;
	*x->external_debug_state = v->arch.external_debug_state;
	x->guest_mdscr_el1 = v->arch.ctxt.sys_regs[MDSCR_EL1];
	x->guest_mdccint_el1 = v->arch.ctxt.sys_regs[MDCCINT_EL1];
	x->vcpu_flags = v->arch.iflags;
	x->host_mdscr_el1 = h->host_ctxt.sys_regs[MDSCR_EL1];
	x->host_mdccint_el1 = h->host_ctxt.sys_regs[MDCCINT_EL1];
	*x->cpu_host_regs = h->host_debug_state.regs;
	x->debug_brps = h->debug_brps;
	x->debug_wrps = h->debug_wrps;
#if HYPDBG_ERA == 1
	*x->vcpu_host_regs = v->arch.host_debug_state;
#elif HYPDBG_ERA == 2 && !HYPDBG_PERCPU
	*x->vcpu_host_regs = v->arch.host_debug_state.regs;
#endif
#if HYPDBG_ERA < 3
	if (v->arch.debug_ptr == &v->arch.vcpu_debug_state)
		x->debug_ptr = 0;
	else if (v->arch.debug_ptr == &v->arch.external_debug_state)
		x->debug_ptr = 1;
	else
		x->debug_ptr = 2;
#else
	x->debug_owner = (u32)v->arch.debug_owner;
	x->external_mdscr_el1 = v->arch.external_mdscr_el1;
#endif
}

/*
 * The kernel functions the world switch calls, resolved at link time; weak, so that one the
 * source does not define is a null pointer hypdbg_missing() names, not a load failure.
 */
#if HYPDBG_ERA == 1
extern __typeof__(__debug_cond_save_host_state) __debug_cond_save_host_state __attribute__((__weak__));
extern __typeof__(__debug_cond_restore_host_state) __debug_cond_restore_host_state __attribute__((__weak__));
extern __typeof__(__debug_save_state) __debug_save_state __attribute__((__weak__));
extern __typeof__(__debug_restore_state) __debug_restore_state __attribute__((__weak__));

/* v4.5 __kvm_vcpu_run, before the guest: decide DIRTY and save the host, load the guest. */
static void hypdbg_enter(struct kvm_vcpu *vcpu)
{
	__debug_cond_save_host_state(vcpu);
	__debug_restore_state(vcpu, kern_hyp_va(vcpu->arch.debug_ptr), &vcpu->arch.ctxt);
}

/* v4.5 __kvm_vcpu_run, after the guest: save the guest, restore the host, clear DIRTY. */
static void hypdbg_leave(struct kvm_vcpu *vcpu)
{
	__debug_save_state(vcpu, kern_hyp_va(vcpu->arch.debug_ptr), &vcpu->arch.ctxt);
	__debug_cond_restore_host_state(vcpu);
}

HYPDBG_EXPORT const char *hypdbg_missing(void)
{
	if (!__debug_cond_save_host_state)
		return "__debug_cond_save_host_state";
	if (!__debug_restore_state)
		return "__debug_restore_state";
	if (!__debug_save_state)
		return "__debug_save_state";
	if (!__debug_cond_restore_host_state)
		return "__debug_cond_restore_host_state";
	return 0;
}
#else
extern __typeof__(__debug_switch_to_guest) __debug_switch_to_guest __attribute__((__weak__));
extern __typeof__(__debug_switch_to_host) __debug_switch_to_host __attribute__((__weak__));
extern __typeof__(__debug_save_host_buffers_nvhe) __debug_save_host_buffers_nvhe __attribute__((__weak__));
extern __typeof__(__debug_restore_host_buffers_nvhe) __debug_restore_host_buffers_nvhe __attribute__((__weak__));

/* nvhe/switch.c __kvm_vcpu_run, before the guest: host buffers, then the debug registers. */
static void hypdbg_enter(struct kvm_vcpu *vcpu)
{
	if (__debug_save_host_buffers_nvhe)
		__debug_save_host_buffers_nvhe(vcpu);
	__debug_switch_to_guest(vcpu);
}

/* nvhe/switch.c __kvm_vcpu_run, after the guest: the debug registers, then host buffers. */
static void hypdbg_leave(struct kvm_vcpu *vcpu)
{
	__debug_switch_to_host(vcpu);
	if (__debug_restore_host_buffers_nvhe)
		__debug_restore_host_buffers_nvhe(vcpu);
}

HYPDBG_EXPORT const char *hypdbg_missing(void)
{
	if (!__debug_switch_to_guest)
		return "__debug_switch_to_guest";
	if (!__debug_switch_to_host)
		return "__debug_switch_to_host";
	return 0;
}
#endif

/* The layout check: the simulator refuses a library whose exchange block differs. */
HYPDBG_EXPORT u32 hypdbg_abi(void)
{
	return (HYPDBG_ABI_VERSION << 16) | (u32)sizeof(struct hypdbg_exchange);
}

static int hypdbg_call(void (*fn)(struct kvm_vcpu *), struct hypdbg_exchange *x,
		       const struct hypdbg_ops *ops, void *ctx)
{
	struct hypdbg_call call = { .ops = ops, .ctx = ctx };

	hypdbg_load(x);
	hypdbg_current = &call;
	if (_setjmp(call.panic)) {
		hypdbg_current = 0;
		return 1;
	}
	fn(&hypdbg_vcpu);
	hypdbg_current = 0;
	hypdbg_store(x);
	return 0;
}

/* The hyp's debug switch on entry: 0, or 1 after a hyp panic (nothing is written back then). */
HYPDBG_EXPORT int hypdbg_switch_to_guest(struct hypdbg_exchange *x, const struct hypdbg_ops *ops,
					 void *ctx)
{
	return hypdbg_call(hypdbg_enter, x, ops, ctx);
}

/* The hyp's debug switch on exit. */
HYPDBG_EXPORT int hypdbg_switch_to_host(struct hypdbg_exchange *x, const struct hypdbg_ops *ops,
					void *ctx)
{
	return hypdbg_call(hypdbg_leave, x, ops, ctx);
}
