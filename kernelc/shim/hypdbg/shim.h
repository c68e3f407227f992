/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * hypdbg's stand-in for the kernel headers that arm64 KVM's hyp debug save/restore code
 * includes (written for hypdbg, not taken from Linux). It gives that code what it uses and
 * routes every system-register access to the simulator:
 *
 *  - read_sysreg(r) / write_sysreg(v, r), the _s and _el1 forms: `r` is a register *token*
 *    (dbgbcr7_el1, mdccint_el1, id_aa64dfr0_el1, mdcr_el2, SYS_PMSCR_EL1, ...), pasted onto
 *    HYPDBG_SR_ so that a token this file does not know fails to compile, naming it;
 *  - struct kvm_vcpu / kvm_cpu_context / kvm_host_data with the fields the code touches, in the
 *    layout of the era being compiled (HYPDBG_ERA 1, 2 or 3; HYPDBG_PERCPU for v6.10+);
 *  - the flag helpers of every era: vcpu->arch.debug_flags & KVM_ARM64_DEBUG_DIRTY (v4.5),
 *    vcpu->arch.flags (v4.18..v5.19), vcpu_get_flag(vcpu, DEBUG_DIRTY) (v6.0+), debug_owner
 *    (v6.14+), host_data_test_flag();
 *  - host_data_ptr(), this_cpu_ptr(&kvm_host_data), kern_hyp_va(), barriers as no-ops.
 *
 * SPE, TRBE and BRBE registers (the nVHE host-buffer wrappers) are host-only storage: the
 * modelled host uses none of those units, so their flags read as clear.
 */
#ifndef HYPDBG_SHIM_H
#define HYPDBG_SHIM_H

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if !defined(HYPDBG_ERA) || !defined(HYPDBG_PERCPU)
#error "hypdbg shim: compile with -DHYPDBG_ERA=1|2|3 and -DHYPDBG_PERCPU=0|1"
#endif

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int32_t s32;
typedef int64_t s64;

/* linux/compiler.h, compiler_attributes.h */
#define __hyp_text
#ifndef __always_inline
#define __always_inline inline __attribute__((__always_inline__))
#endif
#define noinline __attribute__((__noinline__))
#define notrace
#define noinstr
#define __init
#define fallthrough __attribute__((__fallthrough__))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define READ_ONCE(x) (*(volatile __typeof__(x) *)&(x))
#define WRITE_ONCE(x, v) (*(volatile __typeof__(x) *)&(x) = (v))

/* linux/bits.h */
#define BIT(n) (1UL << (n))
#define BIT_ULL(n) (1ULL << (n))
#define GENMASK(h, l) (((~0UL) << (l)) & (~0UL >> (63 - (h))))
#define GENMASK_ULL(h, l) GENMASK(h, l)

/* One call into the loaded code: the simulator's register access. */
struct hypdbg_ops {
	/* 0 on success; non-zero: the access faulted (a hyp panic on hardware). */
	int (*read)(void *ctx, u32 reg, u64 *val);
	int (*write)(void *ctx, u32 reg, u64 val);
};
struct hypdbg_call {
	const struct hypdbg_ops *ops;
	void *ctx;
	jmp_buf panic;
};
extern __thread struct hypdbg_call *hypdbg_current;

/* A hyp panic: stop the code under test where it stands, as the hardware would. */
static inline __attribute__((__noreturn__)) void hypdbg_hyp_panic(void)
{
	_longjmp(hypdbg_current->panic, 1);
}

/* asm/bug.h: a WARN is logged by the kernel and execution goes on; BUG is a hyp panic. */
#define WARN_ON(c) ({ int __hypdbg_c = !!(c); __hypdbg_c; })
#define WARN_ON_ONCE(c) WARN_ON(c)
#define WARN(c, ...) WARN_ON(c)
#define BUG_ON(c) do { if (c) hypdbg_hyp_panic(); } while (0)
#define BUG() hypdbg_hyp_panic()

/* asm/barrier.h and friends: ordering only, nothing the model needs. */
#define isb() do { } while (0)
#define dsb(opt) do { } while (0)
#define dmb(opt) do { } while (0)
#define psb_csync() do { } while (0)
#define tsb_csync() do { } while (0)

/* asm/kvm_mmu.h, virt.h, cpufeature.h: one address space, nVHE, no errata. */
#define kern_hyp_va(v) (v)
#define is_protected_kvm_enabled() false
#define has_vhe() false
#define cpus_have_final_cap(cap) false
#define cpus_have_const_cap(cap) false

/*
 * The system registers the simulator implements, by the token the kernel code writes. The
 * numbers are hypdbg's own: 0x00..0x3f the breakpoint/watchpoint banks (bank * 16 + n).
 */
#define HYPDBG_BANK(bank, base)                                                            \
	HYPDBG_SR_##bank##0_el1 = (base) + 0, HYPDBG_SR_##bank##1_el1 = (base) + 1,         \
	HYPDBG_SR_##bank##2_el1 = (base) + 2, HYPDBG_SR_##bank##3_el1 = (base) + 3,         \
	HYPDBG_SR_##bank##4_el1 = (base) + 4, HYPDBG_SR_##bank##5_el1 = (base) + 5,         \
	HYPDBG_SR_##bank##6_el1 = (base) + 6, HYPDBG_SR_##bank##7_el1 = (base) + 7,         \
	HYPDBG_SR_##bank##8_el1 = (base) + 8, HYPDBG_SR_##bank##9_el1 = (base) + 9,         \
	HYPDBG_SR_##bank##10_el1 = (base) + 10, HYPDBG_SR_##bank##11_el1 = (base) + 11,     \
	HYPDBG_SR_##bank##12_el1 = (base) + 12, HYPDBG_SR_##bank##13_el1 = (base) + 13,     \
	HYPDBG_SR_##bank##14_el1 = (base) + 14, HYPDBG_SR_##bank##15_el1 = (base) + 15

enum hypdbg_sysreg {
	HYPDBG_BANK(dbgbcr, 0x00),
	HYPDBG_BANK(dbgbvr, 0x10),
	HYPDBG_BANK(dbgwcr, 0x20),
	HYPDBG_BANK(dbgwvr, 0x30),
	HYPDBG_SR_mdccint_el1 = 0x40,
	HYPDBG_SR_mdscr_el1 = 0x41,
	HYPDBG_SR_id_aa64dfr0_el1 = 0x42,
	HYPDBG_SR_mdcr_el2 = 0x43,
	HYPDBG_SR_SYS_MDCCINT_EL1 = 0x40,
	HYPDBG_SR_SYS_MDSCR_EL1 = 0x41,
	HYPDBG_SR_SYS_ID_AA64DFR0_EL1 = 0x42,
	HYPDBG_SR_SYS_MDCR_EL2 = 0x43,
	/* Host-only: not modelled (reads 0, writes kept for the call only). */
	HYPDBG_SR_SYS_PMSCR_EL1 = 0x80,
	HYPDBG_SR_SYS_PMBLIMITR_EL1 = 0x81,
	HYPDBG_SR_SYS_PMBPTR_EL1 = 0x82,
	HYPDBG_SR_SYS_PMBSR_EL1 = 0x83,
	HYPDBG_SR_SYS_TRFCR_EL1 = 0x84,
	HYPDBG_SR_SYS_TRBLIMITR_EL1 = 0x85,
	HYPDBG_SR_SYS_TRBPTR_EL1 = 0x86,
	HYPDBG_SR_SYS_TRBSR_EL1 = 0x87,
	HYPDBG_SR_SYS_BRBCR_EL1 = 0x88,
};

static inline u64 hypdbg_read(u32 reg)
{
	u64 v = 0;
	struct hypdbg_call *c = hypdbg_current;

	if (c->ops->read(c->ctx, reg, &v))
		hypdbg_hyp_panic();
	return v;
}

static inline void hypdbg_write(u32 reg, u64 v)
{
	struct hypdbg_call *c = hypdbg_current;

	if (c->ops->write(c->ctx, reg, v))
		hypdbg_hyp_panic();
}

/* asm/sysreg.h, kvm_hyp.h: MRS/MSR by name. */
#define read_sysreg(r) hypdbg_read(HYPDBG_SR_##r)
#define write_sysreg(v, r) hypdbg_write(HYPDBG_SR_##r, (u64)(v))
#define read_sysreg_s(r) hypdbg_read(HYPDBG_SR_##r)
#define write_sysreg_s(v, r) hypdbg_write(HYPDBG_SR_##r, (u64)(v))
#define read_sysreg_el1(r) hypdbg_read(HYPDBG_SR_##r##_EL1)
#define write_sysreg_el1(v, r) hypdbg_write(HYPDBG_SR_##r##_EL1, (u64)(v))

/* asm/debug-monitors.h */
#define DBG_MDSCR_SS (1 << 0)
#define DBG_MDSCR_KDE (1 << 13)
#define DBG_MDSCR_MDE (1 << 15)
#define DBG_MDSCR_MASK (~(DBG_MDSCR_KDE | DBG_MDSCR_MDE))

/* ID_AA64DFR0_EL1 fields, in the spelling of each era (asm/sysreg.h, generated sysreg). */
#define ID_AA64DFR0_DEBUGVER_SHIFT 0
#define ID_AA64DFR0_BRPS_SHIFT 12
#define ID_AA64DFR0_WRPS_SHIFT 20
#define ID_AA64DFR0_CTX_CMPS_SHIFT 28
#define ID_AA64DFR0_EL1_DebugVer_SHIFT 0
#define ID_AA64DFR0_EL1_BRPs_SHIFT 12
#define ID_AA64DFR0_EL1_WRPs_SHIFT 20
#define ID_AA64DFR0_EL1_CTX_CMPs_SHIFT 28
#define ID_AA64DFR0_EL1_BRPs_WIDTH 4
#define ID_AA64DFR0_EL1_WRPs_WIDTH 4
#define ID_AA64DFR0_EL1_CTX_CMPs_WIDTH 4
#define ID_AA64DFR0_EL1_BRPs_MASK GENMASK(15, 12)
#define ID_AA64DFR0_EL1_WRPs_MASK GENMASK(23, 20)
#define ID_AA64DFR0_EL1_CTX_CMPs_MASK GENMASK(31, 28)
#define SYS_FIELD_GET(reg, field, val) (((val) & reg##_##field##_MASK) >> reg##_##field##_SHIFT)

/* asm/cpufeature.h */
static inline unsigned int cpuid_feature_extract_unsigned_field(u64 features, int field)
{
	return (unsigned int)(features >> field) & 0xf;
}

/* Host-only units' bits the nVHE wrappers test. */
#define PMBLIMITR_EL1_E_SHIFT 0
#define SYS_PMBLIMITR_EL1_E_SHIFT 0
#define TRBLIMITR_EL1_E BIT(0)
#define TRBLIMITR_ENABLE BIT(0)
#define BRBCR_ELx_E0BRE BIT(0)
#define BRBCR_ELx_ExBRE BIT(1)

/* struct kvm_guest_debug_arch (uapi/asm/kvm.h) */
#define KVM_ARM_MAX_DBG_REGS 16
struct kvm_guest_debug_arch {
	u64 dbg_bcr[KVM_ARM_MAX_DBG_REGS];
	u64 dbg_bvr[KVM_ARM_MAX_DBG_REGS];
	u64 dbg_wcr[KVM_ARM_MAX_DBG_REGS];
	u64 dbg_wvr[KVM_ARM_MAX_DBG_REGS];
};

/* enum vcpu_sysreg, the part the debug code names. */
enum vcpu_sysreg {
	__INVALID_SYSREG__,
	MDSCR_EL1,
	MDCCINT_EL1,
	OSLSR_EL1,
	CONTEXTIDR_EL1,
	NR_SYS_REGS
};

/* struct kvm_cpu_context */
struct kvm_cpu_context {
	u64 sys_regs[NR_SYS_REGS];
};
#define ctxt_sys_reg(c, r) ((c)->sys_regs[(r)])
#define __ctxt_sys_reg(c, r) (&(c)->sys_regs[(r)])
#define __vcpu_sys_reg(v, r) ((v)->arch.ctxt.sys_regs[(r)])
#define vcpu_sys_reg(v, r) __vcpu_sys_reg(v, r)

/* The host's debug state while a guest runs (per vcpu up to v6.9, per CPU from v6.10). */
struct hypdbg_host_debug_state {
	struct kvm_guest_debug_arch regs;
	u64 pmscr_el1;
	u64 pmblimitr_el1;
	u64 trfcr_el1;
	u64 trblimitr_el1;
	u64 brbcr_el1;
	u64 mdcr_el2;
};

/* struct kvm_host_data: per physical CPU. */
struct kvm_host_data {
	struct kvm_cpu_context host_ctxt;
	struct hypdbg_host_debug_state host_debug_state;
	unsigned int debug_brps;
	unsigned int debug_wrps;
	u64 trfcr_while_in_guest;
	unsigned long flags;
};

/*
 * The per-CPU variable and its accessors (percpu.h, kvm_host.h): one instance per thread, the
 * physical CPU the simulator is switching on, filled for each call.
 */
extern __thread struct kvm_host_data kvm_host_data;
#define this_cpu_ptr(p) (p)
#define host_data_ptr(f) (&kvm_host_data.f)
#define HYPDBG_HF_HAS_SPE BIT(0)
#define HYPDBG_HF_HAS_TRBE BIT(1)
#define HYPDBG_HF_HAS_BRBE BIT(2)
#define HYPDBG_HF_TRBE_ENABLED BIT(3)
#define HYPDBG_HF_EL1_TRACING_CONFIGURED BIT(4)
#define HYPDBG_HF_HOST_SVE_ENABLED BIT(5)
#define HYPDBG_HF_HOST_SME_ENABLED BIT(6)
#define host_data_test_flag(f) (!!(kvm_host_data.flags & HYPDBG_HF_##f))
#define host_data_set_flag(f) (kvm_host_data.flags |= HYPDBG_HF_##f)
#define host_data_clear_flag(f) (kvm_host_data.flags &= ~HYPDBG_HF_##f)

/* The vcpu's flags: one word under every era's name. */
#define HYPDBG_VF_DEBUG_DIRTY BIT(0)
#define HYPDBG_VF_DEBUG_STATE_SAVE_SPE BIT(1)
#define HYPDBG_VF_DEBUG_STATE_SAVE_TRBE BIT(2)
#define KVM_ARM64_DEBUG_DIRTY_SHIFT 0
#define KVM_ARM64_DEBUG_DIRTY HYPDBG_VF_DEBUG_DIRTY
#define KVM_ARM64_DEBUG_STATE_SAVE_SPE HYPDBG_VF_DEBUG_STATE_SAVE_SPE
#define KVM_ARM64_DEBUG_STATE_SAVE_TRBE HYPDBG_VF_DEBUG_STATE_SAVE_TRBE
#define vcpu_get_flag(v, f) (!!((v)->arch.iflags & HYPDBG_VF_##f))
#define vcpu_set_flag(v, f) ((v)->arch.iflags |= HYPDBG_VF_##f)
#define vcpu_clear_flag(v, f) ((v)->arch.iflags &= ~HYPDBG_VF_##f)

#if HYPDBG_ERA == 3
/* enum debug_owner (v6.14+) */
enum debug_owner {
	VCPU_DEBUG_FREE,
	VCPU_DEBUG_GUEST_OWNED,
	VCPU_DEBUG_HOST_OWNED,
};
#define kvm_debug_regs_in_use(vcpu) ((vcpu)->arch.debug_owner != VCPU_DEBUG_FREE)
#endif

/* struct kvm_vcpu_arch, the debug part, in the era's layout. */
struct kvm_vcpu_arch {
	struct kvm_cpu_context ctxt;
	union {
		u64 debug_flags; /* v4.5 */
		u64 flags;	 /* v4.18..v5.19 */
		u64 iflags;	 /* v6.0+ */
	};
	struct kvm_guest_debug_arch vcpu_debug_state;
	struct kvm_guest_debug_arch external_debug_state;
#if HYPDBG_ERA == 1
	struct kvm_guest_debug_arch host_debug_state;
#elif HYPDBG_ERA == 2 && !HYPDBG_PERCPU
	struct hypdbg_host_debug_state host_debug_state;
#endif
#if HYPDBG_ERA < 3
	struct kvm_guest_debug_arch *debug_ptr;
	struct kvm_cpu_context *host_cpu_context;
#else
	enum debug_owner debug_owner;
	u64 external_mdscr_el1;
#endif
	u64 mdcr_el2;
};

struct kvm_vcpu {
	int vcpu_id;
	struct kvm_vcpu_arch arch;
};

#if HYPDBG_ERA == 1
/* The v4.5 hyp.h prototypes of the debug save/restore functions (arch/arm64/kvm/hyp/). */
void __debug_save_state(struct kvm_vcpu *vcpu, struct kvm_guest_debug_arch *dbg,
			struct kvm_cpu_context *ctxt);
void __debug_restore_state(struct kvm_vcpu *vcpu, struct kvm_guest_debug_arch *dbg,
			   struct kvm_cpu_context *ctxt);
void __debug_cond_save_host_state(struct kvm_vcpu *vcpu);
void __debug_cond_restore_host_state(struct kvm_vcpu *vcpu);
#else
/* asm/kvm_hyp.h */
void __debug_switch_to_guest(struct kvm_vcpu *vcpu);
void __debug_switch_to_host(struct kvm_vcpu *vcpu);
void __debug_save_host_buffers_nvhe(struct kvm_vcpu *vcpu);
void __debug_restore_host_buffers_nvhe(struct kvm_vcpu *vcpu);
#endif
u64 __kvm_get_mdcr_el2(void);

#endif /* HYPDBG_SHIM_H */
