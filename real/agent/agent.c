/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * hypdbg agent: the /init of the initramfs hypdbg boots under qemu-system-aarch64. It drives
 * /dev/kvm at the ioctl level on behalf of the host, over the serial console.
 *
 * Wire protocol (version 2; version 1 lacked bench's step= and irqs= options), one request per
 * line in, one reply line out:
 *
 *   host -> agent   "<seq> <command> <arg> ... [key=value ...]\n"   numbers: decimal or 0x hex
 *   agent -> host   "##hypdbg/2 {\"seq\":<seq>,\"ok\":true,...}\n"
 *                   "##hypdbg/2 {\"seq\":<seq>,\"ok\":false,\"op\":...,\"errno\":N,\"error\":...}\n"
 *
 * The agent greets with seq 0 ("hello") once /dev/kvm is open (or failed to open). Replies are
 * written with one write(2) each; the console log level is lowered to KERN_EMERG so kernel
 * messages do not split them. The commands are listed in dispatch() and vcpu_dispatch().
 *
 * Bulk data (guest memory) does not go over the serial line, whose input was measured at
 * about 12 us per byte (80 KB/s): QEMU backs guest RAM with a file the host also has open,
 * and the agent reports the physical pages of a locked buffer ("shm" in the hello). The host
 * writes into those pages through the file and sends mem_write_shm; mem_read_shm is the
 * reverse. Both carry an FNV-1a hash of the bytes, so a page that moved is an error, not
 * silent corruption. Requests and replies can take the same way: the host puts the request
 * line in the request mailbox and sends "@\n"; the agent puts the reply in the reply mailbox
 * and prints PREFIX "@". Same text, two bytes in and thirteen out on the serial line.
 *
 * Every vcpu has its own thread (as in a real VMM): all ioctls on a vcpu fd, KVM_RUN included,
 * are issued by that thread, so sched_setaffinity on it pins the vcpu. The main thread reads
 * commands, hands vcpu work to the vcpu threads and waits; when a KVM_RUN outlives its timeout
 * the main thread kicks the vcpu thread with SIGALRM (handler installed without SA_RESTART),
 * so KVM_RUN returns -EINTR instead of hanging.
 *
 * Build: aarch64-linux-gnu-gcc -static -fno-pie -no-pie -O2 -pthread agent.c -o init
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/klog.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <linux/hw_breakpoint.h>
#include <linux/kvm.h>
#include <linux/perf_event.h>

#include "kvm_compat.h"

#define PROTO 2
#define PREFIX "##hypdbg/2 "
#ifndef AGENT_HASH
#define AGENT_HASH "unknown"
#endif

#define MAX_VCPUS 2
#define MAX_SLOTS 8
#define MAX_TOKENS 96
#define MAX_LINE (1 << 17)
#define DEFAULT_RUN_TIMEOUT_MS 2000
#define KICK_INTERVAL_MS 50

/* ------------------------------------------------------------------------------------------ */
/* A growable string buffer for replies. */

struct sb {
	char *p;
	size_t len, cap;
};

static void sb_reserve(struct sb *s, size_t more)
{
	if (s->len + more + 1 <= s->cap)
		return;
	size_t cap = s->cap ? s->cap : 256;
	while (cap < s->len + more + 1)
		cap *= 2;
	char *p = realloc(s->p, cap);
	if (!p)
		abort();
	s->p = p;
	s->cap = cap;
}

static void sb_printf(struct sb *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sb *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	sb_reserve(s, (size_t)n);
	va_start(ap, fmt);
	vsnprintf(s->p + s->len, s->cap - s->len, fmt, ap);
	va_end(ap);
	s->len += (size_t)n;
}

static void sb_reset(struct sb *s)
{
	s->len = 0;
	if (s->p)
		s->p[0] = 0;
}

/* A JSON string literal. */
static void sb_json_str(struct sb *s, const char *str, size_t n)
{
	sb_reserve(s, n * 6 + 2);
	s->p[s->len++] = '"';
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)str[i];
		if (c == '"' || c == '\\') {
			s->p[s->len++] = '\\';
			s->p[s->len++] = (char)c;
		} else if (c < 0x20 || c >= 0x7f) {
			s->len += (size_t)snprintf(s->p + s->len, 7, "\\u%04x", c);
		} else {
			s->p[s->len++] = (char)c;
		}
	}
	s->p[s->len++] = '"';
	s->p[s->len] = 0;
}

static void sb_hex(struct sb *s, const uint8_t *b, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	sb_reserve(s, 2 * n + 2);
	s->p[s->len++] = '"';
	for (size_t i = 0; i < n; i++) {
		s->p[s->len++] = digits[b[i] >> 4];
		s->p[s->len++] = digits[b[i] & 15];
	}
	s->p[s->len++] = '"';
	s->p[s->len] = 0;
}

/* ------------------------------------------------------------------------------------------ */
/* The shared buffer: SHM_PAGES locked pages whose physical frames the host reads and writes
 * through QEMU's RAM file. Pages [0, 32) carry guest memory, [32, 36) the request mailbox,
 * [36, 64) the reply mailbox; a mailbox is a u64 length followed by the bytes. */
#define PAGE 4096
#define SHM_PAGES 64
#define SHM_DATA_PAGES 32
#define SHM_REQ_PAGES 4
#define SHM_REP_PAGES 28
#define SHM_REQ_OFF (SHM_DATA_PAGES * PAGE)
#define SHM_REP_OFF ((SHM_DATA_PAGES + SHM_REQ_PAGES) * PAGE)
static uint8_t *shm;
static uint64_t shm_pfn[SHM_PAGES];
static int shm_ok;
static char shm_why[96];
/* The request being served came through the mailbox: so goes its reply. */
static int mbox_reply;

/* ------------------------------------------------------------------------------------------ */
/* Console output: one write per reply line. */

static void write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		p += w;
		n -= (size_t)w;
	}
}

static struct sb out;

/* Send a reply (JSON, no newline): into the reply mailbox with a short "@" line on the console
 * when the request came through the mailbox and the reply fits, else as a whole console line. */
static void emit_reply(const char *json, size_t len)
{
	if (mbox_reply && len + 8 <= SHM_REP_PAGES * PAGE) {
		uint64_t l = len;
		memcpy(shm + SHM_REP_OFF, &l, 8);
		memcpy(shm + SHM_REP_OFF + 8, json, len);
		__sync_synchronize();
		static const char line[] = PREFIX "@\n";
		write_all(1, line, sizeof line - 1);
		return;
	}
	struct sb l = {0};
	sb_printf(&l, PREFIX "%.*s\n", (int)len, json);
	write_all(1, l.p, l.len);
	free(l.p);
}

/* Send `{"seq":seq,"ok":true<body>}` where body is "" or ",\"k\":v...". */
static void reply_ok(long seq, const char *body)
{
	sb_reset(&out);
	sb_printf(&out, "{\"seq\":%ld,\"ok\":true%s}", seq, body ? body : "");
	emit_reply(out.p, out.len);
}

static void reply_err(long seq, const char *op, int err, const char *msg)
{
	struct sb e = {0};
	sb_printf(&e, "{\"seq\":%ld,\"ok\":false", seq);
	if (op)
		sb_printf(&e, ",\"op\":\"%s\"", op);
	if (err)
		sb_printf(&e, ",\"errno\":%d", err);
	sb_printf(&e, ",\"error\":");
	const char *m = msg ? msg : strerror(err);
	sb_json_str(&e, m, strlen(m));
	sb_printf(&e, "}");
	emit_reply(e.p, e.len);
	free(e.p);
}

/* ------------------------------------------------------------------------------------------ */
/* Tokens. */

struct args {
	int n;
	char *t[MAX_TOKENS];
};

static int parse_u64(const char *s, uint64_t *v)
{
	if (!s || !*s)
		return -1;
	char *end;
	errno = 0;
	unsigned long long x = strtoull(s, &end, 0);
	if (errno || *end)
		return -1;
	*v = x;
	return 0;
}

/* The value of "key=value" among the tokens from index `from`, or NULL. */
static const char *opt(const struct args *a, int from, const char *key)
{
	size_t k = strlen(key);
	for (int i = from; i < a->n; i++)
		if (!strncmp(a->t[i], key, k) && a->t[i][k] == '=')
			return a->t[i] + k + 1;
	return NULL;
}

static uint64_t opt_u64(const struct args *a, int from, const char *key, uint64_t dflt)
{
	uint64_t v;
	const char *s = opt(a, from, key);
	if (s && !parse_u64(s, &v))
		return v;
	return dflt;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Decode hex into a malloc'd buffer; returns the length or -1. */
static long unhex(const char *s, uint8_t **buf)
{
	size_t n = strlen(s);
	if (n % 2)
		return -1;
	uint8_t *b = malloc(n / 2 + 1);
	if (!b)
		return -1;
	for (size_t i = 0; i < n / 2; i++) {
		int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
		if (hi < 0 || lo < 0) {
			free(b);
			return -1;
		}
		b[i] = (uint8_t)(hi << 4 | lo);
	}
	*buf = b;
	return (long)(n / 2);
}

/* ------------------------------------------------------------------------------------------ */
/* KVM state. */

#define CORE_REG(name)                                                                           \
	(KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | KVM_REG_ARM_CORE_REG(name))

static int kvm_fd = -1;
static int kvm_open_errno;
static int run_size;
static int vm_fd = -1;
static unsigned vm_serial;

struct slot {
	int used;
	uint64_t gpa, size;
	uint8_t *host;
};
static struct slot slots[MAX_SLOTS];

enum job_kind { JOB_NONE, JOB_CMD, JOB_EXIT };

struct vcpu {
	int exists;
	int index;
	int fd;
	struct kvm_run *run;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	enum job_kind job;
	int done;
	struct args args; /* the command, for JOB_CMD */
	long seq;
	/* The reply: either ok with a body, or an error. */
	struct sb body;
	int err_errno;
	const char *err_op;
	char err_msg[160];
	int perf_fd;
	int create_errno;
};
static struct vcpu vcpus[MAX_VCPUS];

/* perf_event_open targets inside the agent itself. */
static volatile uint64_t perf_var __attribute__((aligned(8)));
__attribute__((noinline)) void perf_func(void)
{
	__asm__ volatile("" ::: "memory");
}

static void on_sigalrm(int sig)
{
	(void)sig;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct slot *slot_for(uint64_t gpa, uint64_t len)
{
	for (int i = 0; i < MAX_SLOTS; i++) {
		struct slot *s = &slots[i];
		if (s->used && gpa >= s->gpa && gpa - s->gpa <= s->size && len <= s->size - (gpa - s->gpa))
			return s;
	}
	return NULL;
}


static void setup_shm(void)
{
	/* Keep locked pages where they are (compaction may otherwise migrate them). */
	int fd = open("/proc/sys/vm/compact_unevictable_allowed", O_WRONLY);
	if (fd >= 0) {
		if (write(fd, "0", 1) != 1)
			snprintf(shm_why, sizeof shm_why, "compact_unevictable_allowed: %s", strerror(errno));
		close(fd);
	}
	shm = mmap(NULL, SHM_PAGES * PAGE, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE | MAP_LOCKED, -1, 0);
	if (shm == MAP_FAILED) {
		snprintf(shm_why, sizeof shm_why, "mmap: %s", strerror(errno));
		shm = NULL;
		return;
	}
	madvise(shm, SHM_PAGES * PAGE, MADV_NOHUGEPAGE);
	memset(shm, 0, SHM_PAGES * PAGE);
	if (mlock(shm, SHM_PAGES * PAGE) < 0) {
		snprintf(shm_why, sizeof shm_why, "mlock: %s", strerror(errno));
		return;
	}
	fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd < 0) {
		snprintf(shm_why, sizeof shm_why, "pagemap: %s", strerror(errno));
		return;
	}
	for (int i = 0; i < SHM_PAGES; i++) {
		uint64_t e = 0;
		off_t off = (off_t)(((uintptr_t)shm / PAGE + (uintptr_t)i) * 8);
		if (pread(fd, &e, 8, off) != 8 || !(e >> 63) || !(e & ((1ull << 55) - 1))) {
			snprintf(shm_why, sizeof shm_why, "pagemap: page %d not present", i);
			close(fd);
			return;
		}
		shm_pfn[i] = e & ((1ull << 55) - 1);
	}
	close(fd);
	shm_ok = 1;
}

static uint64_t fnv1a64(const uint8_t *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

/* ------------------------------------------------------------------------------------------ */
/* vcpu-thread side. */

static void vfail(struct vcpu *v, const char *op, int err, const char *msg)
{
	v->err_op = op;
	v->err_errno = err;
	snprintf(v->err_msg, sizeof v->err_msg, "%s", msg ? msg : strerror(err));
}

static int get_reg(struct vcpu *v, uint64_t id, uint64_t *val)
{
	struct kvm_one_reg r = {.id = id, .addr = (uint64_t)(uintptr_t)val};
	return ioctl(v->fd, KVM_GET_ONE_REG, &r);
}

static int set_reg(struct vcpu *v, uint64_t id, uint64_t val)
{
	struct kvm_one_reg r = {.id = id, .addr = (uint64_t)(uintptr_t)&val};
	return ioctl(v->fd, KVM_SET_ONE_REG, &r);
}

/* The exit as JSON members (leading comma), from the kvm_run of the vcpu. */
static void describe_exit(struct vcpu *v, struct sb *o, int ret, int err, int want_regs, int timed_out)
{
	struct kvm_run *r = v->run;
	sb_printf(o, ",\"ret\":%d,\"errno\":%d,\"reason\":%u,\"run_flags\":%u,\"timed_out\":%s", ret,
		  ret < 0 ? err : 0, r->exit_reason, (unsigned)r->flags, timed_out ? "true" : "false");
	if (ret == 0) {
		switch (r->exit_reason) {
		case KVM_EXIT_DEBUG:
			sb_printf(o, ",\"debug\":{\"hsr\":%u,\"hsr_high\":%u,\"far\":%llu}",
				  r->debug.arch.hsr, r->debug.arch.hsr_high,
				  (unsigned long long)r->debug.arch.far);
			break;
		case KVM_EXIT_MMIO:
			sb_printf(o, ",\"mmio\":{\"phys_addr\":%llu,\"len\":%u,\"is_write\":%u,\"data\":",
				  (unsigned long long)r->mmio.phys_addr, r->mmio.len, r->mmio.is_write);
			sb_hex(o, r->mmio.data, 8);
			sb_printf(o, "}");
			break;
		case KVM_EXIT_HYPERCALL: {
			uint64_t flags;
			memcpy(&flags, &r->hypercall.longmode, sizeof flags);
			sb_printf(o, ",\"hypercall\":{\"nr\":%llu,\"args\":[", (unsigned long long)r->hypercall.nr);
			for (int i = 0; i < 6; i++)
				sb_printf(o, "%s%llu", i ? "," : "", (unsigned long long)r->hypercall.args[i]);
			sb_printf(o, "],\"ret\":%llu,\"flags\":%llu}", (unsigned long long)r->hypercall.ret,
				  (unsigned long long)flags);
			break;
		}
		case KVM_EXIT_SYSTEM_EVENT: {
			unsigned nd = r->system_event.ndata;
			if (nd > 16)
				nd = 16;
			sb_printf(o, ",\"system_event\":{\"type\":%u,\"ndata\":%u,\"data\":[", r->system_event.type,
				  r->system_event.ndata);
			for (unsigned i = 0; i < nd; i++)
				sb_printf(o, "%s%llu", i ? "," : "", (unsigned long long)r->system_event.data[i]);
			sb_printf(o, "],\"flags\":%llu}", (unsigned long long)r->system_event.flags);
			break;
		}
		case KVM_EXIT_FAIL_ENTRY:
			sb_printf(o, ",\"fail_entry\":{\"reason\":%llu,\"cpu\":%u}",
				  (unsigned long long)r->fail_entry.hardware_entry_failure_reason, r->fail_entry.cpu);
			break;
		case KVM_EXIT_INTERNAL_ERROR:
			sb_printf(o, ",\"internal\":{\"suberror\":%u}", r->internal.suberror);
			break;
		default:
			break;
		}
	}
	uint64_t pc = 0, pstate = 0;
	int e1 = get_reg(v, CORE_REG(regs.pc), &pc);
	int e2 = get_reg(v, CORE_REG(regs.pstate), &pstate);
	if (!e1 && !e2)
		sb_printf(o, ",\"pc\":%llu,\"pstate\":%llu", (unsigned long long)pc, (unsigned long long)pstate);
	if (want_regs) {
		sb_printf(o, ",\"x\":[");
		for (int i = 0; i < 31; i++) {
			uint64_t x = 0;
			get_reg(v, CORE_REG(regs.regs[i]), &x);
			sb_printf(o, "%s%llu", i ? "," : "", (unsigned long long)x);
		}
		sb_printf(o, "]");
	}
	sb_printf(o, ",\"cpu\":%d", sched_getcpu());
}

static volatile int kick_seen[MAX_VCPUS];

static void vcmd_run(struct vcpu *v, const struct args *a)
{
	struct kvm_run *r = v->run;
	const char *mmio = opt(a, 3, "mmio");
	if (mmio) {
		uint8_t *b;
		long n = unhex(mmio, &b);
		if (n < 0 || n > 8) {
			vfail(v, NULL, 0, "mmio= wants up to 8 bytes of hex");
			return;
		}
		memcpy(r->mmio.data, b, (size_t)n);
		free(b);
	}
	r->immediate_exit = (uint8_t)opt_u64(a, 3, "ie", 0);
	kick_seen[v->index] = 0;
	int ret = ioctl(v->fd, KVM_RUN, 0);
	int err = ret < 0 ? errno : 0;
	r->immediate_exit = 0;
	describe_exit(v, &v->body, ret, err, (int)opt_u64(a, 3, "regs", 0), kick_seen[v->index]);
}

/* Read a small text file (a /proc file: one read) into buf, NUL-terminated: bytes read, or -1. */
static ssize_t read_text(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, size - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	return n;
}

/* Interrupts taken since boot: the first number of /proc/stat's "intr" line (0 if unreadable). */
static uint64_t interrupts_total(void)
{
	static char buf[1 << 16];
	if (read_text("/proc/stat", buf, sizeof buf) < 0)
		return 0;
	char *p = strstr(buf, "\nintr ");
	return p ? strtoull(p + 6, NULL, 10) : 0;
}

/* Whether a KVM_RUN's exit is the one a bench batch expects: an MMIO write to the doorbell, or
 * (step=1) a software-step debug exit (ESR EC 0x32, SOFTSTP_LOW). */
static int bench_exit_ok(const struct kvm_run *r, int step, uint64_t doorbell)
{
	if (step)
		return r->exit_reason == KVM_EXIT_DEBUG && (r->debug.arch.hsr >> 26) == 0x32;
	return r->exit_reason == KVM_EXIT_MMIO && r->mmio.is_write && r->mmio.phys_addr == doorbell;
}

/* bench <vcpu> <runs> <batches> <doorbell> [step=1] [irqs=1]: <batches> times <runs> KVM_RUNs,
 * CLOCK_MONOTONIC ns per batch (guest instructions under -icount shift=0). Any other exit fails
 * the whole request. irqs=1 also reports the interrupts taken during each batch (read from
 * /proc/stat between batches, outside the timed window). */
static void vcmd_bench(struct vcpu *v, const struct args *a)
{
	uint64_t n, k, doorbell;
	if (a->n < 6 || parse_u64(a->t[3], &n) || parse_u64(a->t[4], &k) || parse_u64(a->t[5], &doorbell) ||
	    k == 0 || k > 1000) {
		vfail(v, NULL, 0, "usage: bench <vcpu> <runs per batch> <batches 1..1000> <doorbell gpa> [step=1] [irqs=1]");
		return;
	}
	int step = (int)opt_u64(a, 6, "step", 0);
	int irqs = (int)opt_u64(a, 6, "irqs", 0);
	uint64_t *ns = calloc(k, sizeof *ns);
	uint64_t *irq = calloc(k, sizeof *irq);
	if (!ns || !irq)
		abort();
	kick_seen[v->index] = 0;
	for (uint64_t b = 0; b < k; b++) {
		uint64_t i0 = irqs ? interrupts_total() : 0;
		uint64_t t0 = now_ns();
		for (uint64_t i = 0; i < n; i++) {
			int ret = ioctl(v->fd, KVM_RUN, 0);
			struct kvm_run *r = v->run;
			if (ret < 0 || !bench_exit_ok(r, step, doorbell)) {
				int err = ret < 0 ? errno : 0;
				char msg[200];
				snprintf(msg, sizeof msg,
					 "unexpected exit in batch %llu run %llu: ret %d errno %d reason %u hsr %#x",
					 (unsigned long long)b, (unsigned long long)i, ret, err, r->exit_reason,
					 r->exit_reason == KVM_EXIT_DEBUG ? r->debug.arch.hsr : 0);
				vfail(v, "KVM_RUN", err, msg);
				free(ns);
				free(irq);
				return;
			}
		}
		ns[b] = now_ns() - t0;
		if (irqs)
			irq[b] = interrupts_total() - i0;
	}
	sb_printf(&v->body, ",\"ns\":[");
	for (uint64_t b = 0; b < k; b++)
		sb_printf(&v->body, "%s%llu", b ? "," : "", (unsigned long long)ns[b]);
	sb_printf(&v->body, "]");
	if (irqs) {
		sb_printf(&v->body, ",\"irqs\":[");
		for (uint64_t b = 0; b < k; b++)
			sb_printf(&v->body, "%s%llu", b ? "," : "", (unsigned long long)irq[b]);
		sb_printf(&v->body, "]");
	}
	free(ns);
	free(irq);
}

static void vcmd_guest_debug(struct vcpu *v, const struct args *a)
{
	struct kvm_guest_debug d;
	memset(&d, 0, sizeof d);
	uint64_t ctl;
	if (a->n < 4 || parse_u64(a->t[3], &ctl)) {
		vfail(v, NULL, 0, "usage: guest_debug <vcpu> <control> [bcrN=v bvrN=v wcrN=v wvrN=v ...]");
		return;
	}
	d.control = (uint32_t)ctl;
	for (int i = 4; i < a->n; i++) {
		char bank[4] = {0};
		unsigned idx;
		char *eq = strchr(a->t[i], '=');
		uint64_t val;
		if (!eq || sscanf(a->t[i], "%3[a-z]%u=", bank, &idx) != 2 || idx >= KVM_ARM_MAX_DBG_REGS ||
		    parse_u64(eq + 1, &val)) {
			vfail(v, NULL, 0, "guest_debug: bad register token");
			return;
		}
		if (!strcmp(bank, "bcr"))
			d.arch.dbg_bcr[idx] = val;
		else if (!strcmp(bank, "bvr"))
			d.arch.dbg_bvr[idx] = val;
		else if (!strcmp(bank, "wcr"))
			d.arch.dbg_wcr[idx] = val;
		else if (!strcmp(bank, "wvr"))
			d.arch.dbg_wvr[idx] = val;
		else {
			vfail(v, NULL, 0, "guest_debug: bank is bcr, bvr, wcr or wvr");
			return;
		}
	}
	if (ioctl(v->fd, KVM_SET_GUEST_DEBUG, &d) < 0)
		vfail(v, "KVM_SET_GUEST_DEBUG", errno, NULL);
}

static void vcmd_perf_arm(struct vcpu *v, const struct args *a)
{
	const char *kind = a->n > 3 ? a->t[3] : "w";
	struct perf_event_attr at;
	memset(&at, 0, sizeof at);
	at.type = PERF_TYPE_BREAKPOINT;
	at.size = sizeof at;
	at.exclude_kernel = 1;
	at.exclude_hv = 1;
	if (!strcmp(kind, "x")) {
		at.bp_type = HW_BREAKPOINT_X;
		at.bp_addr = (uint64_t)(uintptr_t)&perf_func;
		at.bp_len = HW_BREAKPOINT_LEN_4;
	} else if (!strcmp(kind, "w") || !strcmp(kind, "rw")) {
		at.bp_type = !strcmp(kind, "w") ? HW_BREAKPOINT_W : HW_BREAKPOINT_RW;
		at.bp_addr = (uint64_t)(uintptr_t)&perf_var;
		at.bp_len = HW_BREAKPOINT_LEN_8;
	} else {
		vfail(v, NULL, 0, "perf_arm kind is w, rw or x");
		return;
	}
	if (v->perf_fd >= 0)
		close(v->perf_fd);
	/* pid 0, cpu -1: this vcpu thread, wherever it runs. */
	v->perf_fd = (int)syscall(__NR_perf_event_open, &at, 0, -1, -1, PERF_FLAG_FD_CLOEXEC);
	if (v->perf_fd < 0) {
		vfail(v, "perf_event_open", errno, NULL);
		return;
	}
	sb_printf(&v->body, ",\"addr\":%llu", (unsigned long long)at.bp_addr);
}

static void vcmd_perf_check(struct vcpu *v)
{
	uint64_t before = 0, after = 0;
	if (v->perf_fd < 0) {
		vfail(v, NULL, 0, "perf_check: no perf breakpoint armed on this vcpu thread");
		return;
	}
	if (read(v->perf_fd, &before, sizeof before) != sizeof before) {
		vfail(v, "read(perf)", errno, NULL);
		return;
	}
	perf_var = perf_var + 1;
	perf_func();
	if (read(v->perf_fd, &after, sizeof after) != sizeof after) {
		vfail(v, "read(perf)", errno, NULL);
		return;
	}
	sb_printf(&v->body, ",\"before\":%llu,\"after\":%llu,\"fired\":%s,\"cpu\":%d",
		  (unsigned long long)before, (unsigned long long)after, after > before ? "true" : "false",
		  sched_getcpu());
}

static void vcmd_reg_list(struct vcpu *v)
{
	struct kvm_reg_list probe = {.n = 0};
	if (ioctl(v->fd, KVM_GET_REG_LIST, &probe) == 0 || errno != E2BIG) {
		vfail(v, "KVM_GET_REG_LIST", errno, NULL);
		return;
	}
	struct kvm_reg_list *l = calloc(1, sizeof *l + probe.n * sizeof(uint64_t));
	if (!l)
		abort();
	l->n = probe.n;
	if (ioctl(v->fd, KVM_GET_REG_LIST, l) < 0) {
		vfail(v, "KVM_GET_REG_LIST", errno, NULL);
		free(l);
		return;
	}
	sb_printf(&v->body, ",\"ids\":[");
	for (uint64_t i = 0; i < l->n; i++)
		sb_printf(&v->body, "%s%llu", i ? "," : "", (unsigned long long)l->reg[i]);
	sb_printf(&v->body, "]");
	free(l);
}

/* A vcpu command, on the vcpu thread. Tokens: seq, command, vcpu, ... */
static void vcpu_dispatch(struct vcpu *v)
{
	const struct args *a = &v->args;
	const char *cmd = a->t[1];
	uint64_t x, y;
	sb_reset(&v->body);
	v->err_op = NULL;
	v->err_errno = 0;
	v->err_msg[0] = 0;

	if (!strcmp(cmd, "run")) {
		vcmd_run(v, a);
	} else if (!strcmp(cmd, "vcpu_init")) {
		struct kvm_vcpu_init init;
		memset(&init, 0, sizeof init);
		if (ioctl(vm_fd, KVM_ARM_PREFERRED_TARGET, &init) < 0) {
			vfail(v, "KVM_ARM_PREFERRED_TARGET", errno, NULL);
			return;
		}
		init.features[0] |= (uint32_t)opt_u64(a, 3, "features", 1u << KVM_ARM_VCPU_PSCI_0_2);
		if (ioctl(v->fd, KVM_ARM_VCPU_INIT, &init) < 0) {
			vfail(v, "KVM_ARM_VCPU_INIT", errno, NULL);
			return;
		}
		sb_printf(&v->body, ",\"target\":%u,\"features\":%u", init.target, init.features[0]);
	} else if (!strcmp(cmd, "get_reg")) {
		if (a->n < 4 || parse_u64(a->t[3], &x)) {
			vfail(v, NULL, 0, "usage: get_reg <vcpu> <id>");
			return;
		}
		if (get_reg(v, x, &y) < 0) {
			vfail(v, "KVM_GET_ONE_REG", errno, NULL);
			return;
		}
		sb_printf(&v->body, ",\"value\":%llu", (unsigned long long)y);
	} else if (!strcmp(cmd, "set_reg")) {
		if (a->n < 5 || parse_u64(a->t[3], &x) || parse_u64(a->t[4], &y)) {
			vfail(v, NULL, 0, "usage: set_reg <vcpu> <id> <value>");
			return;
		}
		if (set_reg(v, x, y) < 0)
			vfail(v, "KVM_SET_ONE_REG", errno, NULL);
	} else if (!strcmp(cmd, "set_regs")) {
		/* set_regs <vcpu> <id>=<value> ...: several KVM_SET_ONE_REG in one round trip. */
		for (int i = 3; i < a->n; i++) {
			char *eq = strchr(a->t[i], '=');
			if (!eq) {
				vfail(v, NULL, 0, "usage: set_regs <vcpu> <id>=<value> ...");
				return;
			}
			*eq = 0;
			int bad = parse_u64(a->t[i], &x) || parse_u64(eq + 1, &y);
			*eq = '=';
			if (bad) {
				vfail(v, NULL, 0, "usage: set_regs <vcpu> <id>=<value> ...");
				return;
			}
			if (set_reg(v, x, y) < 0) {
				char msg[96];
				snprintf(msg, sizeof msg, "register %#llx: %s", (unsigned long long)x, strerror(errno));
				vfail(v, "KVM_SET_ONE_REG", errno, msg);
				return;
			}
		}
	} else if (!strcmp(cmd, "get_regs")) {
		sb_printf(&v->body, ",\"values\":[");
		for (int i = 3; i < a->n; i++) {
			if (parse_u64(a->t[i], &x)) {
				vfail(v, NULL, 0, "usage: get_regs <vcpu> <id> ...");
				return;
			}
			if (get_reg(v, x, &y) < 0) {
				char msg[96];
				snprintf(msg, sizeof msg, "register %#llx: %s", (unsigned long long)x, strerror(errno));
				vfail(v, "KVM_GET_ONE_REG", errno, msg);
				return;
			}
			sb_printf(&v->body, "%s%llu", i > 3 ? "," : "", (unsigned long long)y);
		}
		sb_printf(&v->body, "]");
	} else if (!strcmp(cmd, "reg_list")) {
		vcmd_reg_list(v);
	} else if (!strcmp(cmd, "guest_debug")) {
		vcmd_guest_debug(v, a);
	} else if (!strcmp(cmd, "set_mp_state")) {
		if (a->n < 4 || parse_u64(a->t[3], &x)) {
			vfail(v, NULL, 0, "usage: set_mp_state <vcpu> <state>");
			return;
		}
		struct kvm_mp_state mp = {.mp_state = (uint32_t)x};
		if (ioctl(v->fd, KVM_SET_MP_STATE, &mp) < 0)
			vfail(v, "KVM_SET_MP_STATE", errno, NULL);
	} else if (!strcmp(cmd, "get_mp_state")) {
		struct kvm_mp_state mp;
		if (ioctl(v->fd, KVM_GET_MP_STATE, &mp) < 0) {
			vfail(v, "KVM_GET_MP_STATE", errno, NULL);
			return;
		}
		sb_printf(&v->body, ",\"mp_state\":%u", mp.mp_state);
	} else if (!strcmp(cmd, "migrate")) {
		if (a->n < 4 || parse_u64(a->t[3], &x) || x >= CPU_SETSIZE) {
			vfail(v, NULL, 0, "usage: migrate <vcpu> <cpu>");
			return;
		}
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET((int)x, &set);
		if (sched_setaffinity(0, sizeof set, &set) < 0) {
			vfail(v, "sched_setaffinity", errno, NULL);
			return;
		}
		sched_yield();
		sb_printf(&v->body, ",\"cpu\":%d", sched_getcpu());
	} else if (!strcmp(cmd, "perf_arm")) {
		vcmd_perf_arm(v, a);
	} else if (!strcmp(cmd, "perf_check")) {
		vcmd_perf_check(v);
	} else if (!strcmp(cmd, "bench")) {
		vcmd_bench(v, a);
	} else {
		vfail(v, NULL, 0, "unknown vcpu command");
	}
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	pthread_mutex_lock(&v->mu);
	for (;;) {
		while (v->job == JOB_NONE)
			pthread_cond_wait(&v->cv, &v->mu);
		enum job_kind job = v->job;
		pthread_mutex_unlock(&v->mu);
		if (job == JOB_CMD)
			vcpu_dispatch(v);
		pthread_mutex_lock(&v->mu);
		v->job = JOB_NONE;
		v->done = 1;
		pthread_cond_broadcast(&v->cv);
		if (job == JOB_EXIT)
			break;
	}
	pthread_mutex_unlock(&v->mu);
	return NULL;
}

/* Hand a command to a vcpu thread. */
static void vcpu_post(struct vcpu *v, enum job_kind job, const struct args *a, long seq)
{
	pthread_mutex_lock(&v->mu);
	if (a)
		v->args = *a;
	v->seq = seq;
	v->done = 0;
	v->job = job;
	pthread_cond_broadcast(&v->cv);
	pthread_mutex_unlock(&v->mu);
}

/* Wait for a vcpu thread; past `kick_after_ms` (0: never) kick it with SIGALRM every
 * KICK_INTERVAL_MS until it is done. */
static void vcpu_wait(struct vcpu *v, uint64_t kick_after_ms)
{
	uint64_t deadline = now_ns() + kick_after_ms * 1000000ull;
	pthread_mutex_lock(&v->mu);
	while (!v->done) {
		if (kick_after_ms) {
			uint64_t t = now_ns();
			if (t >= deadline) {
				kick_seen[v->index] = 1;
				pthread_kill(v->thread, SIGALRM);
				deadline = t + KICK_INTERVAL_MS * 1000000ull;
			}
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			uint64_t wait = deadline - t;
			ts.tv_sec += (time_t)(wait / 1000000000ull);
			ts.tv_nsec += (long)(wait % 1000000000ull);
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&v->cv, &v->mu, &ts);
		} else {
			pthread_cond_wait(&v->cv, &v->mu);
		}
	}
	pthread_mutex_unlock(&v->mu);
}

static void vcpu_reply(struct vcpu *v, long seq)
{
	if (v->err_op || v->err_msg[0])
		reply_err(seq, v->err_op, v->err_errno, v->err_msg[0] ? v->err_msg : NULL);
	else
		reply_ok(seq, v->body.p);
}

/* ------------------------------------------------------------------------------------------ */
/*
 * A destroyed VM's memory is kept mapped, not given back: under QEMU TCG (7.2 measured), when
 * the pages that held one VM's guest code are freed and the next VM's program is written into
 * the same physical pages, the next guest can run translations of the old code (a scenario
 * whose first instructions differ from the previous scenario's then takes a step at the wrong
 * instruction). Keeping the pages allocated means a new VM never gets them. Only the pages a
 * guest touched cost memory (the slots are MAP_NORESERVE); past RETIRED_MAX slots (two per
 * scenario VM: RAM and the runtime) the oldest are unmapped.
 */
#define RETIRED_MAX 1024
static struct {
	void *host;
	uint64_t size;
} retired[RETIRED_MAX];
static unsigned retired_next;

static void retire_slot_memory(void *host, uint64_t size)
{
	unsigned i = retired_next++ % RETIRED_MAX;
	if (retired[i].host)
		munmap(retired[i].host, (size_t)retired[i].size);
	retired[i].host = host;
	retired[i].size = size;
}

/* Main-thread commands. */

/* Time spent in the last vm_destroy, ns: vcpus (threads joined, fds closed), the VM fd's close
 * (the kernel's teardown), retiring the slots (kept mapped, see retire_slot_memory). */
static uint64_t destroy_ns[3];

static void vm_destroy(void)
{
	uint64_t t0 = now_ns();
	for (int i = 0; i < MAX_VCPUS; i++) {
		struct vcpu *v = &vcpus[i];
		if (!v->exists)
			continue;
		vcpu_post(v, JOB_EXIT, NULL, 0);
		pthread_join(v->thread, NULL);
		if (v->perf_fd >= 0)
			close(v->perf_fd);
		if (v->run)
			munmap(v->run, (size_t)run_size);
		if (v->fd >= 0)
			close(v->fd);
		free(v->body.p);
		pthread_mutex_destroy(&v->mu);
		pthread_cond_destroy(&v->cv);
		memset(v, 0, sizeof *v);
	}
	uint64_t t1 = now_ns();
	if (vm_fd >= 0)
		close(vm_fd);
	vm_fd = -1;
	uint64_t t2 = now_ns();
	for (int i = 0; i < MAX_SLOTS; i++) {
		if (slots[i].used)
			retire_slot_memory(slots[i].host, slots[i].size);
		memset(&slots[i], 0, sizeof slots[i]);
	}
	destroy_ns[0] = t1 - t0;
	destroy_ns[1] = t2 - t1;
	destroy_ns[2] = now_ns() - t2;
}

/* Lines of the kernel log that contain `needle` (all when NULL), at most `max` from the end. */
static void kernel_log(struct sb *o, const char *needle, int max)
{
	int size = klogctl(10 /* SYSLOG_ACTION_SIZE_BUFFER */, NULL, 0);
	if (size <= 0)
		size = 1 << 17;
	char *buf = malloc((size_t)size + 1);
	if (!buf)
		abort();
	int n = klogctl(3 /* SYSLOG_ACTION_READ_ALL */, buf, size);
	if (n < 0)
		n = 0;
	buf[n] = 0;
	/* Collect matching line starts, keep the last `max`. */
	int count = 0;
	for (char *l = buf; *l;) {
		char *e = strchr(l, '\n');
		size_t len = e ? (size_t)(e - l) : strlen(l);
		char save = l[len];
		l[len] = 0;
		if (!needle || strstr(l, needle))
			count++;
		l[len] = save;
		l += len + (e ? 1 : 0);
	}
	int skip = count > max ? count - max : 0;
	int first = 1;
	sb_printf(o, "[");
	for (char *l = buf; *l;) {
		char *e = strchr(l, '\n');
		size_t len = e ? (size_t)(e - l) : strlen(l);
		char save = l[len];
		l[len] = 0;
		if (!needle || strstr(l, needle)) {
			if (skip)
				skip--;
			else {
				/* Drop the "<level>" prefix klogctl leaves on each line. */
				const char *t = l;
				if (*t == '<') {
					const char *q = t + 1;
					while (*q >= '0' && *q <= '9')
						q++;
					if (*q == '>')
						t = q + 1;
				}
				if (!first)
					sb_printf(o, ",");
				first = 0;
				sb_json_str(o, t, len - (size_t)(t - l));
			}
		}
		l[len] = save;
		l += len + (e ? 1 : 0);
	}
	sb_printf(o, "]");
	free(buf);
}

static void info_body(struct sb *o)
{
	struct utsname u;
	uname(&u);
	sb_printf(o, ",\"proto\":%d,\"agent\":\"%s\",\"release\":", PROTO, AGENT_HASH);
	sb_json_str(o, u.release, strlen(u.release));
	sb_printf(o, ",\"version\":");
	sb_json_str(o, u.version, strlen(u.version));
	sb_printf(o, ",\"machine\":");
	sb_json_str(o, u.machine, strlen(u.machine));
	sb_printf(o, ",\"cpus\":%ld", sysconf(_SC_NPROCESSORS_ONLN));
	struct timespec up;
	clock_gettime(CLOCK_BOOTTIME, &up);
	sb_printf(o, ",\"uptime_ms\":%lld", (long long)up.tv_sec * 1000 + up.tv_nsec / 1000000);
	if (kvm_fd >= 0)
		sb_printf(o, ",\"kvm\":{\"api\":%d,\"run_size\":%d}", ioctl(kvm_fd, KVM_GET_API_VERSION, 0),
			  run_size);
	else
		sb_printf(o, ",\"kvm\":null,\"kvm_errno\":%d", kvm_open_errno);
	if (shm_ok) {
		sb_printf(o, ",\"shm\":{\"page\":%d,\"data_pages\":%d,\"req_pages\":%d,\"rep_pages\":%d,\"pfns\":[",
			  PAGE, SHM_DATA_PAGES, SHM_REQ_PAGES, SHM_REP_PAGES);
		for (int i = 0; i < SHM_PAGES; i++)
			sb_printf(o, "%s%llu", i ? "," : "", (unsigned long long)shm_pfn[i]);
		sb_printf(o, "]}");
	} else {
		sb_printf(o, ",\"shm\":null,\"shm_why\":");
		sb_json_str(o, shm_why, strlen(shm_why));
	}
	sb_printf(o, ",\"kvm_log\":");
	kernel_log(o, "kvm", 40);
}

static int vcpu_index(const struct args *a, long seq, struct vcpu **out_v)
{
	uint64_t idx;
	if (a->n < 3 || parse_u64(a->t[2], &idx) || idx >= MAX_VCPUS) {
		reply_err(seq, NULL, 0, "vcpu index must be 0 or 1");
		return -1;
	}
	if (!vcpus[idx].exists) {
		reply_err(seq, NULL, 0, "no such vcpu: create it first (vcpu_create)");
		return -1;
	}
	*out_v = &vcpus[idx];
	return 0;
}

static void cmd_vcpu_create(const struct args *a, long seq)
{
	uint64_t idx;
	if (vm_fd < 0) {
		reply_err(seq, NULL, 0, "no VM: vm_create first");
		return;
	}
	if (a->n < 3 || parse_u64(a->t[2], &idx) || idx >= MAX_VCPUS) {
		reply_err(seq, NULL, 0, "usage: vcpu_create <0|1>");
		return;
	}
	struct vcpu *v = &vcpus[idx];
	if (v->exists) {
		reply_err(seq, NULL, 0, "vcpu exists");
		return;
	}
	int fd = ioctl(vm_fd, KVM_CREATE_VCPU, (unsigned long)idx);
	if (fd < 0) {
		reply_err(seq, "KVM_CREATE_VCPU", errno, NULL);
		return;
	}
	void *run = mmap(NULL, (size_t)run_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (run == MAP_FAILED) {
		int e = errno;
		close(fd);
		reply_err(seq, "mmap(kvm_run)", e, NULL);
		return;
	}
	memset(v, 0, sizeof *v);
	v->index = (int)idx;
	v->fd = fd;
	v->run = run;
	v->perf_fd = -1;
	pthread_mutex_init(&v->mu, NULL);
	pthread_cond_init(&v->cv, NULL);
	int e = pthread_create(&v->thread, NULL, vcpu_thread, v);
	if (e) {
		munmap(run, (size_t)run_size);
		close(fd);
		memset(v, 0, sizeof *v);
		reply_err(seq, "pthread_create", e, NULL);
		return;
	}
	v->exists = 1;
	reply_ok(seq, NULL);
}

static void cmd_mem_map(const struct args *a, long seq)
{
	uint64_t slot, gpa, size;
	if (vm_fd < 0) {
		reply_err(seq, NULL, 0, "no VM: vm_create first");
		return;
	}
	if (a->n < 5 || parse_u64(a->t[2], &slot) || parse_u64(a->t[3], &gpa) || parse_u64(a->t[4], &size) ||
	    slot >= MAX_SLOTS || size == 0 || size % 4096 || gpa % 4096) {
		reply_err(seq, NULL, 0, "usage: mem_map <slot 0..7> <gpa> <size> (page aligned)");
		return;
	}
	if (slots[slot].used) {
		reply_err(seq, NULL, 0, "slot in use");
		return;
	}
	void *host = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (host == MAP_FAILED) {
		reply_err(seq, "mmap", errno, NULL);
		return;
	}
	struct kvm_userspace_memory_region r = {
		.slot = (uint32_t)slot,
		.flags = 0,
		.guest_phys_addr = gpa,
		.memory_size = size,
		.userspace_addr = (uint64_t)(uintptr_t)host,
	};
	if (ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0) {
		int e = errno;
		munmap(host, size);
		reply_err(seq, "KVM_SET_USER_MEMORY_REGION", e, NULL);
		return;
	}
	slots[slot] = (struct slot){.used = 1, .gpa = gpa, .size = size, .host = host};
	reply_ok(seq, NULL);
}

static void cmd_mem_write(const struct args *a, long seq)
{
	uint64_t gpa;
	uint8_t *b;
	long n;
	if (a->n < 4 || parse_u64(a->t[2], &gpa) || (n = unhex(a->t[3], &b)) < 0) {
		reply_err(seq, NULL, 0, "usage: mem_write <gpa> <hex bytes>");
		return;
	}
	struct slot *s = slot_for(gpa, (uint64_t)n);
	if (!s) {
		free(b);
		reply_err(seq, NULL, 0, "mem_write: range not inside one memslot");
		return;
	}
	memcpy(s->host + (gpa - s->gpa), b, (size_t)n);
	free(b);
	reply_ok(seq, NULL);
}

static void cmd_mem_read(const struct args *a, long seq)
{
	uint64_t gpa, n;
	if (a->n < 4 || parse_u64(a->t[2], &gpa) || parse_u64(a->t[3], &n) || n > 65536) {
		reply_err(seq, NULL, 0, "usage: mem_read <gpa> <len up to 65536>");
		return;
	}
	struct slot *s = slot_for(gpa, n);
	if (!s) {
		reply_err(seq, NULL, 0, "mem_read: range not inside one memslot");
		return;
	}
	struct sb o = {0};
	sb_printf(&o, ",\"data\":");
	sb_hex(&o, s->host + (gpa - s->gpa), (size_t)n);
	reply_ok(seq, o.p);
	free(o.p);
}

/* mem_write_shm <gpa> <len> <fnv1a64>: copy len bytes from the shared buffer. */
static void cmd_mem_write_shm(const struct args *a, long seq)
{
	uint64_t gpa, n, hash;
	if (!shm_ok) {
		reply_err(seq, NULL, 0, "no shared buffer");
		return;
	}
	if (a->n < 5 || parse_u64(a->t[2], &gpa) || parse_u64(a->t[3], &n) || parse_u64(a->t[4], &hash) ||
	    n > SHM_DATA_PAGES * PAGE) {
		reply_err(seq, NULL, 0, "usage: mem_write_shm <gpa> <len up to 128 KiB> <fnv1a64>");
		return;
	}
	struct slot *s = slot_for(gpa, n);
	if (!s) {
		reply_err(seq, NULL, 0, "mem_write_shm: range not inside one memslot");
		return;
	}
	if (fnv1a64(shm, (size_t)n) != hash) {
		reply_err(seq, NULL, 0, "mem_write_shm: the shared buffer does not hold the bytes sent (hash)");
		return;
	}
	memcpy(s->host + (gpa - s->gpa), shm, (size_t)n);
	reply_ok(seq, NULL);
}

/* mem_read_shm <gpa> <len>: copy len bytes into the shared buffer; reply with their hash. */
static void cmd_mem_read_shm(const struct args *a, long seq)
{
	uint64_t gpa, n;
	if (!shm_ok) {
		reply_err(seq, NULL, 0, "no shared buffer");
		return;
	}
	if (a->n < 4 || parse_u64(a->t[2], &gpa) || parse_u64(a->t[3], &n) || n > SHM_DATA_PAGES * PAGE) {
		reply_err(seq, NULL, 0, "usage: mem_read_shm <gpa> <len up to 128 KiB>");
		return;
	}
	struct slot *s = slot_for(gpa, n);
	if (!s) {
		reply_err(seq, NULL, 0, "mem_read_shm: range not inside one memslot");
		return;
	}
	memcpy(shm, s->host + (gpa - s->gpa), (size_t)n);
	char body[48];
	snprintf(body, sizeof body, ",\"hash\":%llu", (unsigned long long)fnv1a64(shm, (size_t)n));
	reply_ok(seq, body);
}

static void cmd_smccc_filter(const struct args *a, long seq)
{
	uint64_t base, nr, action;
	if (vm_fd < 0) {
		reply_err(seq, NULL, 0, "no VM: vm_create first");
		return;
	}
	if (a->n < 5 || parse_u64(a->t[2], &base) || parse_u64(a->t[3], &nr) || parse_u64(a->t[4], &action)) {
		reply_err(seq, NULL, 0, "usage: smccc_filter <base> <nr_functions> <action 0..2>");
		return;
	}
	struct kvm_smccc_filter f;
	memset(&f, 0, sizeof f);
	f.base = (uint32_t)base;
	f.nr_functions = (uint32_t)nr;
	f.action = (uint8_t)action;
	struct kvm_device_attr attr = {
		.flags = 0,
		.group = KVM_ARM_VM_SMCCC_CTRL,
		.attr = KVM_ARM_VM_SMCCC_FILTER,
		.addr = (uint64_t)(uintptr_t)&f,
	};
	if (ioctl(vm_fd, KVM_HAS_DEVICE_ATTR, &attr) < 0) {
		char body[64];
		snprintf(body, sizeof body, ",\"supported\":false,\"errno\":%d", errno);
		reply_ok(seq, body);
		return;
	}
	if (ioctl(vm_fd, KVM_SET_DEVICE_ATTR, &attr) < 0) {
		reply_err(seq, "KVM_SET_DEVICE_ATTR(SMCCC_FILTER)", errno, NULL);
		return;
	}
	reply_ok(seq, ",\"supported\":true");
}

static void cmd_run2(const struct args *a, long seq)
{
	/* run2 <vcpu a> <vcpu b> [options for both]: both KVM_RUNs at once. */
	uint64_t i0, i1;
	if (a->n < 4 || parse_u64(a->t[2], &i0) || parse_u64(a->t[3], &i1) || i0 >= MAX_VCPUS ||
	    i1 >= MAX_VCPUS || i0 == i1 || !vcpus[i0].exists || !vcpus[i1].exists) {
		reply_err(seq, NULL, 0, "usage: run2 <vcpu> <other vcpu> [ie=1 timeout_ms=N regs=1]");
		return;
	}
	/* Each thread sees "<seq> run <idx> <options>": rebuild the token list per vcpu. */
	struct args per[2];
	char idx_tok[2][4];
	uint64_t idx[2] = {i0, i1};
	for (int k = 0; k < 2; k++) {
		per[k].n = 0;
		per[k].t[per[k].n++] = a->t[0];
		per[k].t[per[k].n++] = "run";
		snprintf(idx_tok[k], sizeof idx_tok[k], "%llu", (unsigned long long)idx[k]);
		per[k].t[per[k].n++] = idx_tok[k];
		for (int i = 4; i < a->n && per[k].n < MAX_TOKENS; i++)
			if (strncmp(a->t[i], "mmio=", 5))
				per[k].t[per[k].n++] = a->t[i];
	}
	uint64_t timeout = opt_u64(a, 4, "timeout_ms", DEFAULT_RUN_TIMEOUT_MS);
	vcpu_post(&vcpus[i0], JOB_CMD, &per[0], seq);
	vcpu_post(&vcpus[i1], JOB_CMD, &per[1], seq);
	vcpu_wait(&vcpus[i0], timeout);
	vcpu_wait(&vcpus[i1], timeout);
	struct sb o = {0};
	sb_printf(&o, ",\"exits\":[");
	for (int k = 0; k < 2; k++) {
		struct vcpu *v = &vcpus[idx[k]];
		if (v->err_op || v->err_msg[0]) {
			sb_printf(&o, "%s{\"vcpu\":%llu,\"error\":", k ? "," : "", (unsigned long long)idx[k]);
			sb_json_str(&o, v->err_msg, strlen(v->err_msg));
			sb_printf(&o, "}");
		} else {
			sb_printf(&o, "%s{\"vcpu\":%llu%s}", k ? "," : "", (unsigned long long)idx[k],
				  v->body.p ? v->body.p : "");
		}
	}
	sb_printf(&o, "]");
	reply_ok(seq, o.p);
	free(o.p);
}

static void power_off(void)
{
	sync();
	reboot(RB_POWER_OFF);
	for (;;)
		pause();
}

static void dispatch(struct args *a)
{
	uint64_t u;
	long seq = (a->n > 0 && !parse_u64(a->t[0], &u)) ? (long)u : -1;
	if (a->n < 2 || seq < 0) {
		reply_err(-1, NULL, 0, "request is \"<seq> <command> [args]\"");
		return;
	}
	const char *cmd = a->t[1];
	struct vcpu *v;

	if (!strcmp(cmd, "hello") || !strcmp(cmd, "info")) {
		struct sb o = {0};
		info_body(&o);
		reply_ok(seq, o.p);
		free(o.p);
	} else if (!strcmp(cmd, "ping")) {
		reply_ok(seq, NULL);
	} else if (!strcmp(cmd, "cap") || !strcmp(cmd, "vm_cap")) {
		int fd = !strcmp(cmd, "cap") ? kvm_fd : vm_fd;
		if (fd < 0) {
			reply_err(seq, NULL, 0, !strcmp(cmd, "cap") ? "/dev/kvm is not open" : "no VM");
			return;
		}
		if (a->n < 3 || parse_u64(a->t[2], &u)) {
			reply_err(seq, NULL, 0, "usage: cap <number>");
			return;
		}
		int r = ioctl(fd, KVM_CHECK_EXTENSION, (unsigned long)u);
		if (r < 0) {
			reply_err(seq, "KVM_CHECK_EXTENSION", errno, NULL);
			return;
		}
		char body[48];
		snprintf(body, sizeof body, ",\"value\":%d", r);
		reply_ok(seq, body);
	} else if (!strcmp(cmd, "dmesg")) {
		struct sb o = {0};
		sb_printf(&o, ",\"lines\":");
		kernel_log(&o, opt(a, 2, "match"), (int)opt_u64(a, 2, "max", 200));
		reply_ok(seq, o.p);
		free(o.p);
	} else if (!strcmp(cmd, "vm_create")) {
		if (kvm_fd < 0) {
			reply_err(seq, NULL, 0, "/dev/kvm is not open");
			return;
		}
		vm_destroy();
		int fd = ioctl(kvm_fd, KVM_CREATE_VM, (unsigned long)opt_u64(a, 2, "type", 0));
		if (fd < 0) {
			reply_err(seq, "KVM_CREATE_VM", errno, NULL);
			return;
		}
		vm_fd = fd;
		char body[32];
		snprintf(body, sizeof body, ",\"vm\":%u", ++vm_serial);
		reply_ok(seq, body);
	} else if (!strcmp(cmd, "vm_destroy")) {
		vm_destroy();
		char body[96];
		snprintf(body, sizeof body, ",\"vcpus_ns\":%llu,\"vm_fd_ns\":%llu,\"unmap_ns\":%llu",
			 (unsigned long long)destroy_ns[0], (unsigned long long)destroy_ns[1],
			 (unsigned long long)destroy_ns[2]);
		reply_ok(seq, body);
	} else if (!strcmp(cmd, "mem_map")) {
		cmd_mem_map(a, seq);
	} else if (!strcmp(cmd, "mem_write")) {
		cmd_mem_write(a, seq);
	} else if (!strcmp(cmd, "mem_read")) {
		cmd_mem_read(a, seq);
	} else if (!strcmp(cmd, "mem_write_shm")) {
		cmd_mem_write_shm(a, seq);
	} else if (!strcmp(cmd, "mem_read_shm")) {
		cmd_mem_read_shm(a, seq);
	} else if (!strcmp(cmd, "smccc_filter")) {
		cmd_smccc_filter(a, seq);
	} else if (!strcmp(cmd, "vcpu_create")) {
		cmd_vcpu_create(a, seq);
	} else if (!strcmp(cmd, "run2")) {
		cmd_run2(a, seq);
	} else if (!strcmp(cmd, "poweroff")) {
		vm_destroy();
		reply_ok(seq, NULL);
		power_off();
	} else if (!strcmp(cmd, "run") || !strcmp(cmd, "vcpu_init") || !strcmp(cmd, "get_reg") ||
		   !strcmp(cmd, "set_reg") || !strcmp(cmd, "set_regs") || !strcmp(cmd, "get_regs") ||
		   !strcmp(cmd, "reg_list") || !strcmp(cmd, "guest_debug") || !strcmp(cmd, "set_mp_state") ||
		   !strcmp(cmd, "get_mp_state") || !strcmp(cmd, "migrate") || !strcmp(cmd, "perf_arm") ||
		   !strcmp(cmd, "perf_check") || !strcmp(cmd, "bench")) {
		if (vcpu_index(a, seq, &v))
			return;
		uint64_t kick = 0;
		if (!strcmp(cmd, "run") || !strcmp(cmd, "bench"))
			kick = opt_u64(a, 3, "timeout_ms", DEFAULT_RUN_TIMEOUT_MS);
		vcpu_post(v, JOB_CMD, a, seq);
		vcpu_wait(v, kick);
		vcpu_reply(v, seq);
	} else {
		reply_err(seq, NULL, 0, "unknown command");
	}
}

/* ------------------------------------------------------------------------------------------ */

static void setup(void)
{
	mkdir("/dev", 0755);
	mkdir("/proc", 0555);
	mkdir("/sys", 0555);
	mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	mount("proc", "/proc", "proc", 0, NULL);
	mount("sysfs", "/sys", "sysfs", 0, NULL);

	/* Only KERN_EMERG on the console from now on: replies must not be split. */
	klogctl(8 /* SYSLOG_ACTION_CONSOLE_LEVEL */, NULL, 1);

	struct termios t;
	if (tcgetattr(0, &t) == 0) {
		cfmakeraw(&t);
		tcsetattr(0, TCSANOW, &t);
	}

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_sigalrm;
	sa.sa_flags = 0; /* no SA_RESTART: KVM_RUN returns -EINTR */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);

	setup_shm();

	kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm_fd < 0)
		kvm_open_errno = errno;
	else
		run_size = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
}

/* hypdbg.idle=SECONDS on the kernel command line: power off after that long without input. */
static int idle_seconds(void)
{
	char buf[4096];
	if (read_text("/proc/cmdline", buf, sizeof buf) < 0)
		return 600;
	char *p = strstr(buf, "hypdbg.idle=");
	return p ? atoi(p + 12) : 600;
}

int main(void)
{
	setup();
	int idle = idle_seconds();
	{
		struct sb o = {0};
		info_body(&o);
		reply_ok(0, o.p);
		free(o.p);
	}

	static char line[MAX_LINE];
	size_t len = 0;
	for (;;) {
		struct pollfd p = {.fd = 0, .events = POLLIN};
		int r = poll(&p, 1, idle > 0 ? idle * 1000 : -1);
		if (r == 0) {
			reply_err(-1, NULL, 0, "idle timeout: no request for hypdbg.idle seconds, powering off");
			power_off();
		}
		if (r < 0)
			continue;
		char buf[4096];
		ssize_t n = read(0, buf, sizeof buf);
		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			if (n == 0)
				usleep(10000);
			continue;
		}
		for (ssize_t i = 0; i < n; i++) {
			char c = buf[i];
			if (c == '\r')
				continue;
			if (c != '\n') {
				if (len < sizeof line - 1)
					line[len++] = c;
				else
					len = sizeof line; /* too long: reported at the newline */
				continue;
			}
			if (len >= sizeof line - 1) {
				reply_err(-1, NULL, 0, "request line too long");
				len = 0;
				continue;
			}
			line[len] = 0;
			len = 0;
			mbox_reply = 0;
			if (!strcmp(line, "@")) {
				/* The request is in the mailbox. */
				uint64_t l = 0;
				if (shm_ok)
					memcpy(&l, shm + SHM_REQ_OFF, 8);
				if (!shm_ok || l == 0 || l + 8 > SHM_REQ_PAGES * PAGE || l >= sizeof line) {
					reply_err(-1, NULL, 0, "bad request mailbox");
					continue;
				}
				__sync_synchronize();
				memcpy(line, shm + SHM_REQ_OFF + 8, l);
				line[l] = 0;
				mbox_reply = 1;
			}
			struct args a = {0};
			for (char *tok = strtok(line, " \t"); tok && a.n < MAX_TOKENS; tok = strtok(NULL, " \t"))
				a.t[a.n++] = tok;
			if (a.n == 0)
				continue;
			dispatch(&a);
			mbox_reply = 0;
		}
	}
}
