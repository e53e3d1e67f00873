// SPDX-License-Identifier: GPL-2.0
/*
 * libwd: the ring protocol of kernel/uapi/wrapdrive.h, implemented once.
 *
 * Submit: fill SQ slots, release-store doorbell.sq_tail, full barrier,
 * read hdr.status, kick with a pwrite when WD_Q_ENGINE_IDLE.
 * Complete: acquire-load hdr.cq_tail, copy the CQEs, store
 * doorbell.cq_head.  Sleep: drain the eventfd, arm irq_request, barrier,
 * re-check, disarm or poll.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "wd_priv.h"

#define DEAD_BITS	(WD_Q_DEAD | WD_Q_RELEASE)

/*
 * The sync calls spin about WD_SPIN_US microseconds before sleeping.  The
 * spin cannot read the clock: in a guest without a vDSO clocksource that is
 * a system call (7 us under TCG).  On x86 it reads the TSC, whose rate is
 * measured once per process against CLOCK_MONOTONIC across a short sleep
 * (robust to being descheduled meanwhile); elsewhere it counts polls.
 */
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define WD_HAVE_TSC 1

static __u64 spin_us = WD_SPIN_US;

/* WD_SPIN_US in the environment overrides the longest spin (0: never spin). */
static void spin_env(void)
{
	const char *v = getenv("WD_SPIN_US");

	if (v && *v)
		spin_us = strtoull(v, NULL, 10);
	if (spin_us > 100000)
		spin_us = 100000;
}

static __u64 spin_ticks(void)
{
	static __u64 ticks;
	struct timespec a, b, nap = { 0, 2000000 };
	__u64 t0, t1, ns;

	if (__atomic_load_n(&ticks, __ATOMIC_RELAXED))
		return ticks;
	spin_env();
	clock_gettime(CLOCK_MONOTONIC, &a);
	t0 = __rdtsc();
	nanosleep(&nap, NULL);
	t1 = __rdtsc();
	clock_gettime(CLOCK_MONOTONIC, &b);
	ns = (__u64)(b.tv_sec - a.tv_sec) * 1000000000ULL + (__u64)b.tv_nsec - (__u64)a.tv_nsec;
	t1 = ns && t1 > t0 ? (t1 - t0) * 1000ULL / ns : 0;	/* ticks per us */
	if (!t1)
		t1 = 1000;	/* no usable TSC: assume 1 GHz */
	__atomic_store_n(&ticks, t1, __ATOMIC_RELAXED);	/* TSC ticks per microsecond */
	return t1;
}
#endif

int wd_ring_init(struct wd_queue *q)
{
	struct wd_queue_priv *p = q->priv;

	p->slots = calloc(p->entries, sizeof(*p->slots));
	p->done = calloc(2 * (size_t)p->entries, sizeof(*p->done));
	if (!p->slots || !p->done)
		return wd_err(ENOMEM, "ring tables of %u entries", p->entries);
	p->mask = p->entries - 1;
	p->sq_tail = wd_load(&p->hdr->cq_tail);
	p->cq_head = p->sq_tail;
	p->last = -1;
	q->entries = p->entries;
#ifdef WD_HAVE_TSC
	spin_ticks();	/* measured now, not in the first wait */
#else
	if (!q->spin)
		q->spin = WD_DEFAULT_SPIN;
#endif
	return 0;
}

void wd_ring_fini(struct wd_queue *q)
{
	struct wd_queue_priv *p = q->priv;

	free(p->slots);
	free(p->done);
	free(p->stream_slots);
	p->slots = NULL;
	p->done = NULL;
	p->stream_slots = NULL;
}

/* Check the header of a freshly mapped queue against this library's ABI. */
int wd_ring_check_hdr(struct wd_queue *q, size_t cq_size, size_t sq_size)
{
	struct wd_queue_priv *p = q->priv;
	const struct wd_ring_hdr *h = p->hdr;
	__u32 n = h->entries;

	if (h->magic != WD_RING_MAGIC || h->version != WD_ABI_VERSION)
		return wd_err(EPROTO, "%s: ring magic %#x version %u, this library speaks %#x v%d",
			      q->name, h->magic, h->version, WD_RING_MAGIC, WD_ABI_VERSION);
	if (h->desc_size != sizeof(struct wd_desc) || h->cqe_size != sizeof(struct wd_cqe))
		return wd_err(EPROTO, "%s: descriptor/completion sizes %u/%u, expected %zu/%zu",
			      q->name, h->desc_size, h->cqe_size, sizeof(struct wd_desc),
			      sizeof(struct wd_cqe));
	if (!n || (n & (n - 1)) || n > (1U << 20))
		return wd_err(EPROTO, "%s: ring entries %u is not a power of two", q->name, n);
	if (h->cq_off < sizeof(*h) || h->cq_off > cq_size ||
	    (cq_size - h->cq_off) / sizeof(struct wd_cqe) < n ||
	    sq_size / sizeof(struct wd_desc) < n)
		return wd_err(EPROTO, "%s: SQ/CQ of %u entries outside the regions", q->name, n);
	p->entries = n;
	p->cq = (const struct wd_cqe *)((const char *)h + h->cq_off);
	q->capa_flags = h->capa_flags;
	q->max_streams = h->max_streams;
	p->share_all = p->sim || !!(h->capa_flags & WD_CAPA_SHARE_ALL);
	return 0;
}

static int check_usable_locked(struct wd_queue_priv *p)
{
	if (p->broken)
		return wd_fail(-EIO, "the device broke the ring protocol (bad cq_tail)");
	if (p->dead || (wd_load(&p->hdr->status) & DEAD_BITS)) {
		p->dead = 1;
		return wd_fail(-ENODEV, "queue is dead: its device went away");
	}
	return 0;
}

/*
 * Someone made progress for others (took completions, freed room): wake the
 * thread sleeping on the eventfd (a count it drains before its next wait)
 * and those waiting for it.  Costs nothing when nobody waits.
 */
static void wake_waiters_locked(struct wd_queue_priv *p, int event_fd)
{
	__u64 one = 1;

	if (!p->sleeper && !p->waiters)
		return;
	if (event_fd >= 0 && write(event_fd, &one, sizeof(one)) < 0)
		p->wake_gen++;	/* cannot happen with a valid eventfd */
	p->wake_gen++;
	pthread_cond_broadcast(&p->wake);
}

/*
 * Move every posted completion to its request: runners' requests are
 * marked done, the others go to the done list.  Returns how many CQEs
 * were taken, or -EIO when the device posted a cq_tail beyond the ring.
 */
static int reap_locked(struct wd_queue_priv *p)
{
	__u32 tail = wd_load(&p->hdr->cq_tail);
	__u32 head = p->cq_head;
	__u32 n = tail - head;
	__u32 i;

	if (!n)
		return 0;
	if (n > p->entries || n > p->sq_tail - head) {
		p->broken = 1;
		return wd_fail(-EIO, "device posted cq_tail %u (cq_head %u, sq_tail %u, %u entries)",
			      tail, head, p->sq_tail, p->entries);
	}
	for (i = 0; i < n; i++, head++) {
		struct wd_cqe c = p->cq[head & p->mask];
		struct wd_req *r = p->slots[c.tag & p->mask];

		if (!r || r->tag != c.tag) {
			p->spurious++;	/* a tag we never sent: ignore it */
			continue;
		}
		p->slots[c.tag & p->mask] = NULL;
		r->status = c.status;
		r->cqe_flags = c.flags;
		r->out_len = c.out_len;
		r->result = c.result;
		if (r->state == WD_RS_RUN) {
			__atomic_store_n(&r->state, WD_RS_RUN_DONE, __ATOMIC_RELEASE);
		} else {
			r->state = WD_RS_DONE;
			p->done[p->done_tail++ & (2 * p->entries - 1)] = r;
		}
	}
	p->cq_head = tail;
	wd_store(&p->db->cq_head, tail);
	wake_waiters_locked(p, p->event_fd);
	return (int)n;
}

static int fill_desc_locked(struct wd_queue_priv *p, struct wd_desc *d, const struct wd_req *r,
			    __u32 tag)
{
	__u64 src, dst, ctx = 0;
	int ret;

	if (r->src_len > WD_MAX_LEN || r->dst_len > WD_MAX_LEN)
		return wd_fail(-E2BIG, "request of %u bytes is over WD_MAX_LEN (%u bytes)",
			      r->src_len > r->dst_len ? r->src_len : r->dst_len, WD_MAX_LEN);
	ret = wd_xlate_locked(p, r->src, r->src_len, &src);
	if (!ret)
		ret = wd_xlate_locked(p, r->dst, r->dst_len, &dst);
	if (!ret && r->ctx)
		ret = wd_xlate_locked(p, r->ctx, sizeof(struct wd_sha256_ctx), &ctx);
	if (ret)
		return ret;
	d->tag = tag;
	d->opcode = r->opcode;
	d->flags = r->flags;
	d->src = src;
	d->dst = dst;
	d->src_len = r->src_len;
	d->dst_len = r->dst_len;
	d->ctx = ctx;
	d->seed = r->seed;
	d->stream = r->stream;
	d->level = r->level;
	d->flush = r->flush;
	d->__rsvd[0] = 0;
	d->__rsvd[1] = 0;
	return 0;
}

/* Room for one more request at sq_tail?  Reaps once when there is none. */
static int room_locked(struct wd_queue_priv *p)
{
	int i;

	for (i = 0; i < 2; i++) {
		/*
		 * At most a ring in flight, and at most two rings' worth in
		 * flight or completed but not yet received (the done list).
		 */
		__u32 flying = p->sq_tail - p->cq_head;

		if (flying < p->entries && flying + (p->done_tail - p->done_head) < 2 * p->entries &&
		    !p->slots[p->sq_tail & p->mask])
			return 1;
		if (i == 0 && reap_locked(p) <= 0)
			return 0;
	}
	return 0;
}

/*
 * Publish everything up to sq_tail with one doorbell store; kick the
 * engine if it went idle.  The descriptors are written before: the
 * release store orders them.
 */
static int publish_locked(struct wd_queue_priv *p)
{
	__u32 status;

	wd_store(&p->db->sq_tail, p->sq_tail);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	status = wd_load(&p->hdr->status);
	if (status & DEAD_BITS) {
		p->dead = 1;
		return wd_fail(-ENODEV, "queue is dead: its device went away");
	}
	if (status & WD_Q_ENGINE_IDLE) {
		__u32 tail = p->sq_tail;

		p->kicks++;
		if (pwrite(p->kick_fd, &tail, sizeof(tail), p->kick_off) != sizeof(tail)) {
			if (errno == ENODEV) {
				/* Refused because the queue is stopping: its death. */
				p->dead = 1;
				return wd_fail(-ENODEV, "queue is dead: its device went away (kick refused)");
			}
			return wd_err(errno, "kick (pwrite of the doorbell)");
		}
	}
	return 0;
}

/* Forget requests posted but lost to a dead queue (never completed). */
static void unwind_locked(struct wd_queue_priv *p, __u32 from)
{
	for (; from != p->sq_tail; from++) {
		struct wd_req *r = p->slots[from & p->mask];

		if (r && r->tag == from) {
			r->state = WD_RS_IDLE;
			p->slots[from & p->mask] = NULL;
		}
	}
}

/* Post up to n requests with one doorbell store; how many, or -errno if none. */
static int send_locked(struct wd_queue_priv *p, struct wd_req **reqs, struct wd_req *arr,
		       int n, enum wd_req_state state)
{
	__u32 first = p->sq_tail;
	int i, ret = 0;

	ret = check_usable_locked(p);
	if (ret)
		return ret;
	for (i = 0; i < n; i++) {
		struct wd_req *r = reqs ? reqs[i] : &arr[i];
		__u32 tag = p->sq_tail;

		if (!room_locked(p)) {
			ret = p->broken ? -EIO : -EBUSY;
			break;
		}
		if (r->state == WD_RS_SENT || r->state == WD_RS_RUN) {
			ret = wd_fail(-EINVAL, "request %p is already in flight", (void *)r);
			break;
		}
		ret = fill_desc_locked(p, &p->sq[tag & p->mask], r, tag);
		if (ret)
			break;
		r->tag = tag;
		r->state = state;
		r->status = 0;
		r->cqe_flags = 0;
		r->out_len = 0;
		r->result = 0;
		p->slots[tag & p->mask] = r;
		p->sq_tail = tag + 1;
	}
	if (i) {
		int err = publish_locked(p);

		if (err) {
			unwind_locked(p, first);
			return err;
		}
		return i;
	}
	return ret;
}

int wd_send_many(struct wd_queue *q, struct wd_req **reqs, int n)
{
	struct wd_queue_priv *p = q->priv;
	int ret;

	if (!p || !reqs || n < 0)
		return wd_fail(-EINVAL, "wd_send_many: bad arguments");
	if (!n)
		return 0;
	pthread_mutex_lock(&p->lock);
	ret = send_locked(p, reqs, NULL, n, WD_RS_SENT);
	pthread_mutex_unlock(&p->lock);
	return ret;
}

int wd_send(struct wd_queue *q, void *req)
{
	struct wd_req *r = req;
	int ret;

	if (!req)
		return wd_fail(-EINVAL, "wd_send: NULL request");
	ret = wd_send_many(q, &r, 1);
	return ret < 0 ? ret : 0;
}

static int recv_locked(struct wd_queue_priv *p, struct wd_req **out, int n)
{
	int got = 0, ret;

	if (p->done_head == p->done_tail) {
		ret = reap_locked(p);
		if (ret < 0)
			return ret;
	}
	while (got < n && p->done_head != p->done_tail) {
		struct wd_req *r = p->done[p->done_head++ & (2 * p->entries - 1)];

		r->state = WD_RS_IDLE;
		out[got++] = r;
	}
	if (got) {
		wake_waiters_locked(p, p->event_fd);	/* room for a sync sender */
		return got;
	}
	ret = check_usable_locked(p);
	return ret ? ret : -EAGAIN;
}

int wd_recv_many(struct wd_queue *q, struct wd_req **reqs, int n)
{
	struct wd_queue_priv *p = q->priv;
	int ret;

	if (!p || !reqs || n <= 0)
		return wd_fail(-EINVAL, "wd_recv_many: bad arguments");
	pthread_mutex_lock(&p->lock);
	ret = recv_locked(p, reqs, n);
	pthread_mutex_unlock(&p->lock);
	return ret;
}

int wd_recv(struct wd_queue *q, void **req)
{
	struct wd_req *r = NULL;
	int ret;

	if (!req)
		return wd_fail(-EINVAL, "wd_recv: NULL result pointer");
	ret = wd_recv_many(q, &r, 1);
	if (ret < 0)
		return ret;
	*req = r;
	return 0;
}

/* -- waiting ------------------------------------------------------------------ */

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* What a waiter waits for, besides any new completion. */
struct wd_cond {
	int want_space;			/* room in the ring */
	int want_done;			/* a request on the done list */
	const struct wd_req *req;	/* this runner's request done */
};

static __u32 relaxed(const __u32 *v)
{
	return __atomic_load_n(v, __ATOMIC_RELAXED);
}

/*
 * Whether a waiter should look at the ring again.  Without the lock it is
 * a hint (the spin loop); under the lock it is exact, which is what lets
 * sleep_once check and wait without losing a wake-up.
 */
static int cond_met(struct wd_queue_priv *p, const struct wd_cond *c)
{
	if (wd_load(&p->hdr->cq_tail) != relaxed(&p->cq_head))
		return 1;
	if (wd_load(&p->hdr->status) & DEAD_BITS)
		return 1;
	if (c->req && __atomic_load_n(&c->req->state, __ATOMIC_ACQUIRE) == WD_RS_RUN_DONE)
		return 1;
	if (c->want_done && relaxed(&p->done_head) != relaxed(&p->done_tail))
		return 1;
	if (c->want_space) {
		__u32 tail = relaxed(&p->sq_tail);
		__u32 flying = tail - relaxed(&p->cq_head);
		__u32 used = flying + (relaxed(&p->done_tail) - relaxed(&p->done_head));

		if (flying < p->entries && used < 2 * p->entries &&
		    !__atomic_load_n(&p->slots[tail & p->mask], __ATOMIC_RELAXED))
			return 1;
	}
	return 0;
}

static int spin(struct wd_queue *q, const struct wd_cond *c)
{
	struct wd_queue_priv *p = q->priv;
	__u32 i;

	__atomic_fetch_add(&p->spins, 1, __ATOMIC_RELAXED);
#ifdef WD_HAVE_TSC
	/*
	 * The default spin adapts, as the engine's polling window does: it
	 * starts at WD_SPIN_US, halves each time it ends without a completion
	 * (down to WD_SPIN_MIN_US) and doubles (up to WD_SPIN_US) each time one
	 * arrives in it.  An engine on another CPU answers within the spin and
	 * the caller never sleeps; an engine sharing the caller's CPU cannot run
	 * while the caller polls, so there the spin shrinks and the caller
	 * sleeps on the eventfd at once, which lets the engine run.
	 */
	if (!q->spin) {
		__u64 t0 = __rdtsc(), per_us = spin_ticks();
		__u32 us = __atomic_load_n(&p->spin_us, __ATOMIC_RELAXED);
		__u64 ticks;

		if (!us)
			us = (__u32)spin_us;
		ticks = per_us * us;
		for (;;) {
			if (cond_met(p, c)) {
				us = us * 2 > spin_us ? (__u32)spin_us : us * 2;
				__atomic_store_n(&p->spin_us, us, __ATOMIC_RELAXED);
				return 1;
			}
			if (__rdtsc() - t0 > ticks)
				break;
			wd_cpu_relax();
		}
		us = us / 2 < WD_SPIN_MIN_US ? WD_SPIN_MIN_US : us / 2;
		__atomic_store_n(&p->spin_us, us, __ATOMIC_RELAXED);
		return 0;
	}
#endif
	for (i = 0; i < q->spin; i++) {
		if (cond_met(p, c))
			return 1;
		wd_cpu_relax();
	}
	return 0;
}

/*
 * Sleep until the queue's state changes or the deadline passes (-1: no
 * deadline).  One thread sleeps on the eventfd; others wait for it to
 * wake.  Returns 0 (re-check the ring) or -ETIMEDOUT.
 */
static int sleep_once(struct wd_queue *q, const struct wd_cond *c, long deadline)
{
	struct wd_queue_priv *p = q->priv;
	int timeout = -1;
	__u64 cnt;

	if (deadline >= 0) {
		long left = deadline - now_ms();

		if (left <= 0)
			return -ETIMEDOUT;
		timeout = left > 1000000 ? 1000000 : (int)left;
	}
	pthread_mutex_lock(&p->lock);
	if (cond_met(p, c)) {
		pthread_mutex_unlock(&p->lock);
		return 0;
	}
	if (p->sleeper) {
		unsigned long gen = p->wake_gen;

		p->waiters++;
		while (gen == p->wake_gen) {
			if (deadline < 0) {
				pthread_cond_wait(&p->wake, &p->lock);
			} else {
				struct timespec ts;

				clock_gettime(CLOCK_MONOTONIC, &ts);
				ts.tv_sec += timeout / 1000;
				ts.tv_nsec += (timeout % 1000) * 1000000L;
				if (ts.tv_nsec >= 1000000000L) {
					ts.tv_sec++;
					ts.tv_nsec -= 1000000000L;
				}
				if (pthread_cond_timedwait(&p->wake, &p->lock, &ts) == ETIMEDOUT)
					break;
			}
		}
		p->waiters--;
		pthread_mutex_unlock(&p->lock);
		return 0;
	}
	p->sleeper = 1;
	pthread_mutex_unlock(&p->lock);

	/* 1. a count left from an earlier wait is stale */
	if (read(q->event_fd, &cnt, sizeof(cnt)) < 0 && errno != EAGAIN)
		cnt = 0;
	/* 2. arm, barrier, re-check */
	wd_store(&p->db->irq_request, 1);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (cond_met(p, c)) {
		/* 3. something arrived: disarm, do not sleep */
		wd_store(&p->db->irq_request, 0);
	} else {
		struct pollfd pfd = { .fd = q->event_fd, .events = POLLIN };

		p->sleeps++;	/* only the sleeper writes it */
		if (poll(&pfd, 1, timeout) > 0 && read(q->event_fd, &cnt, sizeof(cnt)) < 0)
			cnt = 0;
	}
	pthread_mutex_lock(&p->lock);
	p->sleeper = 0;
	p->wake_gen++;
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->lock);
	return 0;
}

int wd_recv_sync_timeout(struct wd_queue *q, void **req, int timeout_ms)
{
	struct wd_cond c = { .want_done = 1 };
	long deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	int ret, spun = 0;

	for (;;) {
		ret = wd_recv(q, req);
		if (ret != -EAGAIN)
			return ret;
		if (!spun) {
			spun = 1;
			if (spin(q, &c))
				continue;
		}
		ret = sleep_once(q, &c, deadline);
		if (ret)
			return wd_fail(ret, "no request completed within %d ms", timeout_ms);
	}
}

int wd_recv_sync(struct wd_queue *q, void **req)
{
	return wd_recv_sync_timeout(q, req, -1);
}

int wd_send_sync_timeout(struct wd_queue *q, void *req, int timeout_ms)
{
	struct wd_cond c = { .want_space = 1 };
	long deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	int ret, spun = 0;

	for (;;) {
		ret = wd_send(q, req);
		if (ret != -EBUSY)
			return ret;
		if (!spun) {
			spun = 1;
			if (spin(q, &c))
				continue;
		}
		ret = sleep_once(q, &c, deadline);
		if (ret)
			return wd_fail(ret, "the ring stayed full for %d ms", timeout_ms);
	}
}

int wd_send_sync(struct wd_queue *q, void *req)
{
	return wd_send_sync_timeout(q, req, -1);
}

/* Drop a runner's requests still in flight (the queue died or broke). */
static void abandon(struct wd_queue_priv *p, struct wd_req *reqs, int n)
{
	int i;

	pthread_mutex_lock(&p->lock);
	for (i = 0; i < n; i++) {
		struct wd_req *r = &reqs[i];

		if (r->state == WD_RS_RUN && p->slots[r->tag & p->mask] == r)
			p->slots[r->tag & p->mask] = NULL;
		if (r->state == WD_RS_RUN)
			r->state = WD_RS_IDLE;
	}
	pthread_mutex_unlock(&p->lock);
}

int wd_run_many(struct wd_queue *q, struct wd_req *reqs, int n, int timeout_ms)
{
	struct wd_queue_priv *p = q->priv;
	long deadline = -1;
	int sent = 0, first = 0, ret = 0, err = 0, idle = 0;

	if (!p || !reqs || n < 0)
		return wd_fail(-EINVAL, "wd_run_many: bad arguments");
	while (first < n) {
		int progress = 0;

		if (sent < n && !err) {
			pthread_mutex_lock(&p->lock);
			ret = send_locked(p, NULL, reqs + sent, n - sent, WD_RS_RUN);
			if (ret > 0) {
				sent += ret;
				progress = 1;
			} else if (ret != -EBUSY) {
				err = ret;
			}
			pthread_mutex_unlock(&p->lock);
		}
		while (first < sent &&
		       __atomic_load_n(&reqs[first].state, __ATOMIC_ACQUIRE) == WD_RS_RUN_DONE)
			first++;
		if (first == n || (err && first == sent))
			break;
		pthread_mutex_lock(&p->lock);
		ret = reap_locked(p);
		if (ret == 0)
			ret = check_usable_locked(p);
		pthread_mutex_unlock(&p->lock);
		if (ret < 0) {
			abandon(p, reqs, sent);
			return ret;
		}
		if (ret > 0 || progress) {
			idle = 0;
			continue;
		}
		if (first < sent &&
		    __atomic_load_n(&reqs[first].state, __ATOMIC_ACQUIRE) == WD_RS_RUN_DONE)
			continue;
		{
			struct wd_cond c = {
				.want_space = sent < n,
				.req = first < sent ? &reqs[first] : NULL,
			};

			if (!idle++ && spin(q, &c))
				continue;
			if (timeout_ms >= 0 && deadline < 0)
				deadline = now_ms() + timeout_ms;
			if (sleep_once(q, &c, deadline)) {
				abandon(p, reqs, sent);
				return wd_fail(-ETIMEDOUT, "requests did not complete within %d ms",
					      timeout_ms);
			}
		}
	}
	for (first = 0; first < sent; first++)
		reqs[first].state = WD_RS_IDLE;
	return err;
}

int wd_run(struct wd_queue *q, struct wd_req *req, int timeout_ms)
{
	return wd_run_many(q, req, 1, timeout_ms);
}

int wd_run_start(struct wd_queue *q, struct wd_req *req, int timeout_ms)
{
	struct wd_queue_priv *p = q ? q->priv : NULL;
	struct wd_cond c = { .want_space = 1 };
	long deadline = -1;
	int ret, spun = 0;

	if (!p || !req)
		return wd_fail(-EINVAL, "wd_run_start: bad arguments");
	for (;;) {
		pthread_mutex_lock(&p->lock);
		ret = send_locked(p, NULL, req, 1, WD_RS_RUN);
		if (ret == -EBUSY) {
			ret = reap_locked(p);
			if (ret >= 0)
				ret = -EBUSY;
		}
		pthread_mutex_unlock(&p->lock);
		if (ret == 1)
			return 0;
		if (ret != -EBUSY)
			return ret;
		if (!spun++ && spin(q, &c))
			continue;
		if (timeout_ms >= 0 && deadline < 0)
			deadline = now_ms() + timeout_ms;
		if (sleep_once(q, &c, deadline))
			return wd_fail(-ETIMEDOUT, "the ring stayed full for %d ms", timeout_ms);
	}
}

int wd_run_wait(struct wd_queue *q, struct wd_req *req, int timeout_ms)
{
	struct wd_queue_priv *p = q ? q->priv : NULL;
	struct wd_cond c = { .req = req };
	long deadline = -1;
	int ret, spun = 0;

	if (!p || !req)
		return wd_fail(-EINVAL, "wd_run_wait: bad arguments");
	for (;;) {
		__u32 state = __atomic_load_n(&req->state, __ATOMIC_ACQUIRE);

		if (state == WD_RS_RUN_DONE) {
			req->state = WD_RS_IDLE;
			return 0;
		}
		if (state != WD_RS_RUN)
			return wd_fail(-EINVAL, "wd_run_wait: request %p was not started with "
				       "wd_run_start", (void *)req);
		pthread_mutex_lock(&p->lock);
		ret = reap_locked(p);
		if (ret == 0)
			ret = check_usable_locked(p);
		pthread_mutex_unlock(&p->lock);
		if (ret < 0) {
			abandon(p, req, 1);
			return ret;
		}
		if (ret > 0)
			continue;
		if (!spun++ && spin(q, &c))
			continue;
		if (timeout_ms >= 0 && deadline < 0)
			deadline = now_ms() + timeout_ms;
		if (sleep_once(q, &c, deadline)) {
			abandon(p, req, 1);
			return wd_fail(-ETIMEDOUT, "request did not complete within %d ms", timeout_ms);
		}
	}
}

int wd_in_flight(struct wd_queue *q)
{
	struct wd_queue_priv *p = q->priv;
	int n;

	if (!p)
		return 0;
	pthread_mutex_lock(&p->lock);
	n = (int)(p->sq_tail - p->cq_head) + (int)(p->done_tail - p->done_head);
	pthread_mutex_unlock(&p->lock);
	return n;
}

int wd_arm_wait(struct wd_queue *q)
{
	struct wd_queue_priv *p = q->priv;
	struct wd_cond c = { .want_done = 1 };
	__u64 cnt;

	if (!p)
		return 0;
	if (read(q->event_fd, &cnt, sizeof(cnt)) < 0 && errno != EAGAIN)
		cnt = 0;
	wd_store(&p->db->irq_request, 1);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	pthread_mutex_lock(&p->lock);
	if (cond_met(p, &c) || p->broken) {
		pthread_mutex_unlock(&p->lock);
		wd_store(&p->db->irq_request, 0);
		return 0;
	}
	pthread_mutex_unlock(&p->lock);
	return 1;
}

void wd_queue_stats(struct wd_queue *q, struct wd_stats *st)
{
	struct wd_queue_priv *p = q->priv;

	memset(st, 0, sizeof(*st));
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	st->kicks = p->kicks;
	st->sleeps = p->sleeps;
	st->spurious = p->spurious;
	st->spins = p->spins;
	pthread_mutex_unlock(&p->lock);
}

int wd_is_dead(struct wd_queue *q)
{
	struct wd_queue_priv *p = q->priv;

	return !p || p->dead || (wd_load(&p->hdr->status) & DEAD_BITS);
}

/*
 * A request completed WD_STS_ABORTED because its queue died is the queue's
 * death to the caller, not a failed request.  The kernel posts the aborted
 * completions while it stops the queue and writes WD_Q_DEAD right after,
 * in the same call: give that store a moment (bounded) to arrive.
 */
int wd_death_of(struct wd_queue *q, const struct wd_req *r, const char *what)
{
	long deadline = now_ms() + 100;

	if (r->status != WD_STS_ABORTED)
		return 0;
	do {
		if (wd_is_dead(q)) {
			q->priv->dead = 1;
			return wd_fail(-ENODEV, "queue is dead: its device went away (%s aborted)",
				       what);
		}
		wd_cpu_relax();
	} while (now_ms() < deadline);
	return 0;
}

/* Release: wait (bounded) for what is in flight so no DMA outlives the maps. */
int wd_wait_drain(struct wd_queue *q, int timeout_ms)
{
	struct wd_queue_priv *p = q->priv;
	struct wd_cond c = { .want_space = 1 };
	long deadline = now_ms() + timeout_ms;

	for (;;) {
		int ret;

		pthread_mutex_lock(&p->lock);
		ret = reap_locked(p);
		if (ret >= 0)
			ret = check_usable_locked(p);
		if (ret >= 0 && p->sq_tail == p->cq_head) {
			pthread_mutex_unlock(&p->lock);
			return 0;
		}
		pthread_mutex_unlock(&p->lock);
		if (ret < 0)
			return ret;
		if (sleep_once(q, &c, deadline))
			return -ETIMEDOUT;
	}
}
