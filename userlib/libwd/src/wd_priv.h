/* SPDX-License-Identifier: GPL-2.0 */
/*
 * libwd internals: the state behind struct wd_queue.
 *
 * Locking: everything in struct wd_queue_priv below "lock" is guarded by
 * it, except what is marked otherwise.  The lock is never held across a
 * spin or a sleep.  Reads of the device's indices (hdr->cq_tail,
 * hdr->status) are atomic loads and may be made without the lock, as hints
 * (the spin loop does); acting on them takes the lock.
 */
#ifndef WD_PRIV_H
#define WD_PRIV_H

#include <pthread.h>
#include <stdarg.h>
#include <sys/types.h>

#include "wd.h"

#define WD_DEFAULT_SPIN		4096	/* ring polls before sleeping, if uncalibrated */
#define WD_SPIN_US		100	/* longest spin of the sync calls before sleeping */
#define WD_SPIN_MIN_US		2	/* shortest (the spin adapts in between) */
#define WD_PAGE			4096UL

/* struct wd_req.state */
enum wd_req_state {
	WD_RS_IDLE = 0,		/* not the library's */
	WD_RS_SENT,		/* in flight; goes to the done list (wd_send) */
	WD_RS_RUN,		/* in flight; its runner waits on it (wd_run) */
	WD_RS_DONE,		/* completed, on the done list */
	WD_RS_RUN_DONE,		/* completed, its runner takes it */
};

struct wd_share {
	uintptr_t va;		/* page aligned */
	size_t len;		/* page multiple */
	__u64 iova;
	int refs;
};

struct wd_range {
	__u64 start, end;
};

struct wd_stage {
	void *mem;
	size_t size;
	struct wd_stage *next;
};

struct wd_queue_priv {
	pthread_mutex_t lock;
	pthread_cond_t wake;	/* broadcast when the sleeper wakes */
	int sleeper;		/* a thread sleeps on the eventfd */
	int waiters;		/* threads waiting for the sleeper to wake */
	unsigned long wake_gen;

	/* the regions (fixed after open) */
	struct wd_doorbell *db;
	const struct wd_ring_hdr *hdr;
	const struct wd_cqe *cq;
	struct wd_desc *sq;
	__u32 entries, mask;
	int share_all;
	int sim;		/* wd_attach_memory: no VFIO */
	int kick_fd;
	off_t kick_off;
	int event_fd;		/* the queue's eventfd (struct wd_queue.event_fd) */

	/* ring state */
	__u32 sq_tail, cq_head;
	struct wd_req **slots;	/* by tag & mask: requests in flight */
	struct wd_req **done;	/* completed, not yet received (2 * entries) */
	__u32 done_head, done_tail;
	int dead;		/* WD_Q_DEAD seen, or ENODEV */
	int broken;		/* the device broke the protocol */
	unsigned long kicks, spurious, sleeps, spins;
	__u32 spin_us;		/* the adaptive spin (racy hint, no lock) */

	/* memory shared with the device, sorted by va */
	struct wd_share *shares;
	int nshares, cap_shares;
	int last;		/* index of the last share hit, or -1 */
	struct wd_range *iova_free;	/* sorted free IOVA ranges */
	int niova_free, cap_iova_free;
	struct wd_stage *stages;	/* free staging buffers */
	__u8 *stream_slots;	/* zlib slots held by wd_stream (max_streams) */
	int nstages;

	/* VFIO (fixed after open) */
	int container_fd, group_fd;
	void *db_map, *cq_map, *sq_map;
	size_t db_len, cq_len, sq_len;
	char root[256];
};

/* err.c */
/* Record a message for wd_errmsg(): wd_err appends strerror(err) and
 * returns -err; wd_fail records the message alone and returns ret. */
int wd_err(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int wd_fail(int ret, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ops.c */
void wd_set_last_status(int status);
/* -ENODEV if @r was aborted because its queue died, else 0 (ring.c). */
int wd_death_of(struct wd_queue *q, const struct wd_req *r, const char *what);

/* ring.c */
int wd_ring_init(struct wd_queue *q);
void wd_ring_fini(struct wd_queue *q);
int wd_ring_check_hdr(struct wd_queue *q, size_t cq_size, size_t sq_size);
int wd_wait_drain(struct wd_queue *q, int timeout_ms);

/* mem.c (the caller holds the lock where it says _locked) */
int wd_xlate_locked(struct wd_queue_priv *p, const void *addr, size_t len, __u64 *iova);
void wd_mem_fini(struct wd_queue *q, int unmap);
void *wd_stage_get(struct wd_queue *q, size_t size, struct wd_stage **st);
void wd_stage_put(struct wd_queue *q, struct wd_stage *st);

/* select.c */
int wd_sel_group(const char *root, const char *uuid);
int wd_sel_remove(const char *root, const char *uuid);

static inline __u32 wd_load(const __u32 *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline void wd_store(__u32 *p, __u32 v)
{
	__atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static inline void wd_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#endif
}

#endif /* WD_PRIV_H */
