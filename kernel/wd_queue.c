// SPDX-License-Identifier: GPL-2.0
/*
 * WrapDrive core: the queue state machine, the ring helpers the engine
 * calls, and signalling the queue's eventfd.
 *
 * Every state change happens here, under the queue lock:
 *
 *   CLOSED --open--> STARTED --reset--> STOPPED --> STARTED
 *                       |                  |
 *                       +------kill--------+--> DEAD
 *   any --close--> CLOSED
 *
 * A failed restart after a reset ends in DEAD.  Killing a DEAD or CLOSED
 * queue only adds the reason bits, so every transition is idempotent.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/eventfd.h>
#include <linux/vmalloc.h>

#include "wd_internal.h"
#include "wd_compat.h"

static const char * const wd_queue_state_names[] = {
	[WD_QS_CLOSED] = "closed",
	[WD_QS_STARTED] = "started",
	[WD_QS_STOPPED] = "stopped",
	[WD_QS_DEAD] = "dead",
};

const char *wd_queue_state_name(enum wd_queue_state state)
{
	return state < ARRAY_SIZE(wd_queue_state_names) ?
		wd_queue_state_names[state] : "?";
}

/* ---------------------------------------------------------------------- */
/* Accessors for drivers */

void *wd_accel_priv(struct wd_accel *accel)
{
	return accel->priv;
}
EXPORT_SYMBOL_GPL(wd_accel_priv);

struct dentry *wd_accel_debugfs(struct wd_accel *accel)
{
	return accel->dbg;
}
EXPORT_SYMBOL_GPL(wd_accel_debugfs);

void wd_accel_add_busy_ns(struct wd_accel *accel, u64 ns)
{
	atomic64_add(ns, &accel->busy_ns);
}
EXPORT_SYMBOL_GPL(wd_accel_add_busy_ns);

struct wd_accel *wd_queue_accel(struct wd_queue *q)
{
	return q->accel;
}
EXPORT_SYMBOL_GPL(wd_queue_accel);

const struct wd_capa *wd_queue_capa(struct wd_queue *q)
{
	return q->mtype->capa;
}
EXPORT_SYMBOL_GPL(wd_queue_capa);

void wd_queue_set_priv(struct wd_queue *q, void *priv)
{
	q->priv = priv;
}
EXPORT_SYMBOL_GPL(wd_queue_set_priv);

void *wd_queue_priv(struct wd_queue *q)
{
	return q->priv;
}
EXPORT_SYMBOL_GPL(wd_queue_priv);

/* ---------------------------------------------------------------------- */
/* Ring helpers for the engine */

u32 wd_queue_pending(struct wd_queue *q)
{
	u32 tail = READ_ONCE(q->db->sq_tail);
	u32 cq_head = READ_ONCE(q->db->cq_head);
	u32 avail = tail - q->sq_head;
	/* CQ slots taken: completions not consumed, and requests in flight. */
	u32 used = q->sq_head - cq_head;
	u32 room = used > q->entries ? 0 : q->entries - used;

	WARN_ON_ONCE(!READ_ONCE(q->serving));
	/*
	 * A tail more than a ring ahead is garbage, or a torn store caught
	 * mid-way (CPython's struct.pack_into zeroes before it writes):
	 * take nothing now, the next read sees the real value.
	 */
	if (avail > q->entries) {
		pr_debug_ratelimited("%s: sq_tail %u beyond ring (head %u), ignored\n",
				     dev_name(mdev_dev(q->mdev)), tail,
				     q->sq_head);
		return 0;
	}
	return min(avail, room);
}
EXPORT_SYMBOL_GPL(wd_queue_pending);

u32 wd_queue_fetch(struct wd_queue *q, struct wd_desc *descs, u32 max)
{
	u32 n = min(max, wd_queue_pending(q));
	u32 mask = q->entries - 1;
	u32 i;

	/* Pairs with the user's store of sq_tail after filling the slots. */
	smp_rmb();
	for (i = 0; i < n; i++)
		memcpy(&descs[i], &q->sq[(q->sq_head + i) & mask],
		       sizeof(*descs));
	q->sq_head += n;
	WRITE_ONCE(q->hdr->sq_head, q->sq_head);
	atomic64_add(n, &q->submitted);
	return n;
}
EXPORT_SYMBOL_GPL(wd_queue_fetch);

void wd_queue_post(struct wd_queue *q, const struct wd_cqe *cqe)
{
	/* Only a fetched, not yet completed descriptor can complete. */
	if (WARN_ON_ONCE(q->cq_tail == q->sq_head || !READ_ONCE(q->serving)))
		return;
	memcpy(&q->cq[q->cq_tail & (q->entries - 1)], cqe, sizeof(*cqe));
	q->cq_tail++;
	/* Counted before it is seen: whoever reaps it reads counts with it. */
	atomic64_inc(&q->completed);
	if (cqe->status != WD_STS_OK)
		atomic64_inc(&q->errors);
	/* The CQE is visible before the new tail: pairs with the user's rmb. */
	smp_store_release(&q->hdr->cq_tail, q->cq_tail);
}
EXPORT_SYMBOL_GPL(wd_queue_post);

/*
 * Signal the eventfd: always when @force (death, release request, the
 * user's own loopback trigger), else only if user space armed irq_request
 * and did not mask the irq, consuming the request.
 */
void wd_queue_signal(struct wd_queue *q, bool force)
{
	unsigned long flags;

	spin_lock_irqsave(&q->irq_lock, flags);
	if (q->trigger && (force || (!q->irq_masked &&
				     xchg(&q->db->irq_request, 0))))
		wd_eventfd_signal(q->trigger);
	spin_unlock_irqrestore(&q->irq_lock, flags);
}

void wd_queue_notify(struct wd_queue *q)
{
	/* Completions visible before irq_request is read (user: the reverse). */
	smp_mb();
	if (READ_ONCE(q->db->irq_request))
		wd_queue_signal(q, false);
}
EXPORT_SYMBOL_GPL(wd_queue_notify);

void wd_queue_set_idle(struct wd_queue *q, bool idle)
{
	/* After queue_close the status is WrapDrive's (WD_Q_DEAD). */
	if (WARN_ON_ONCE(!READ_ONCE(q->serving)))
		return;
	if (idle)
		q->status |= WD_Q_ENGINE_IDLE;
	else
		q->status &= ~WD_Q_ENGINE_IDLE;
	WRITE_ONCE(q->hdr->status, q->status);
}
EXPORT_SYMBOL_GPL(wd_queue_set_idle);

void wd_queue_set_doorbell(struct wd_queue *q,
			   const struct wd_doorbell_page *page)
{
	lockdep_assert_held(&q->lock);
	if (WARN_ON_ONCE(!page || !page->kaddr || q->state == WD_QS_DEAD))
		return;
	memset(page->kaddr, 0, PAGE_SIZE);
	q->drv_db = *page;
	q->has_drv_db = true;
	q->db = page->kaddr;
}
EXPORT_SYMBOL_GPL(wd_queue_set_doorbell);

/* ---------------------------------------------------------------------- */
/* State machine */

/* Zero the regions and write the header: every index back to 0. */
void wd_queue_init_ring(struct wd_queue *q)
{
	struct wd_ring_hdr *hdr = q->hdr;

	memset(q->own_db, 0, PAGE_SIZE);
	memset(q->cqr, 0, q->cqr_size);
	memset(q->sq, 0, q->sq_size);
	hdr->magic = WD_RING_MAGIC;
	hdr->version = WD_ABI_VERSION;
	hdr->entries = q->entries;
	hdr->desc_size = sizeof(struct wd_desc);
	hdr->cqe_size = sizeof(struct wd_cqe);
	hdr->cq_off = (void *)q->cq - q->cqr;
	hdr->capa_flags = q->mtype->capa->flags;
	hdr->max_streams = q->mtype->capa->max_streams;
	q->sq_head = 0;
	q->cq_tail = 0;
	q->status = 0;
	q->db = q->own_db;
}

/* Hand @q to the driver: STOPPED or CLOSED -> STARTED. */
static int wd_queue_start(struct wd_queue *q)
{
	const struct wd_accel_ops *ops = q->accel->ops;
	int ret = 0;

	lockdep_assert_held(&q->lock);
	wd_queue_init_ring(q);
	q->has_drv_db = false;
	/* The engine may run as soon as queue_open made @q visible to it. */
	WRITE_ONCE(q->serving, true);
	if (ops->queue_open)
		ret = ops->queue_open(q);
	if (ret) {
		WRITE_ONCE(q->serving, false);
		q->has_drv_db = false;
		q->db = q->own_db;
		return ret;
	}
	if (q->has_drv_db)
		wd_queue_set_db_pfn(q, q->drv_db.pfn, q->drv_db.uncached);
	else
		wd_queue_set_db_pfn(q, vmalloc_to_pfn(q->own_db), false);
	WRITE_ONCE(q->state, WD_QS_STARTED);
	return 0;
}

/* The engine no longer writes status: it is ours now. */
static void wd_queue_set_dead(struct wd_queue *q, u32 why)
{
	q->status = (q->status & ~WD_Q_ENGINE_IDLE) | WD_Q_DEAD | why;
	WRITE_ONCE(q->hdr->status, q->status);
}

/*
 * Take @q back from the driver: user mappings leave its doorbell page
 * first, then queue_close, then whatever @q holds of user memory goes.
 * A queue dying for @dead_why says so right after queue_close, before its
 * memory goes (a while, for a full pin cache on a slow machine): whoever
 * reaps a completion the close aborted finds WD_Q_DEAD with it.
 * The owner's mm is held across both (see wd_mem.c): the caller may be
 * about to wait for @q's release.
 */
static void wd_queue_stop(struct wd_queue *q, bool dying, u32 dead_why)
{
	const struct wd_accel_ops *ops = q->accel->ops;
	bool held;

	lockdep_assert_held(&q->lock);
	if (!q->serving)
		return;
	held = wd_mem_hold_owner(q);
	if (q->has_drv_db)
		wd_queue_set_db_pfn(q, page_to_pfn(q->scratch), false);
	if (ops->queue_close)
		ops->queue_close(q);
	WRITE_ONCE(q->serving, false);
	if (dying)
		wd_queue_set_dead(q, dead_why);
	wd_mem_release(q);
	wd_mem_drop_owner(q, held);
	q->has_drv_db = false;
	q->db = q->own_db;
}

int wd_queue_open_locked(struct wd_queue *q)
{
	int ret;

	lockdep_assert_held(&q->lock);
	if (WARN_ON_ONCE(q->state != WD_QS_CLOSED))
		return -EBUSY;
	ret = wd_queue_start(q);
	if (!ret)
		dev_dbg(mdev_dev(q->mdev), "queue started\n");
	return ret;
}

/*
 * VFIO_DEVICE_RESET: stop, zero the ring and every index, start again.  A
 * driver that cannot serve the queue again leaves it DEAD.
 */
int wd_queue_reset_locked(struct wd_queue *q)
{
	int ret;

	lockdep_assert_held(&q->lock);
	if (q->state != WD_QS_STARTED)
		return -ENODEV;
	wd_queue_stop(q, false, 0);
	WRITE_ONCE(q->state, WD_QS_STOPPED);
	ret = wd_queue_start(q);
	if (ret) {
		dev_warn(mdev_dev(q->mdev), "restart after reset failed: %d\n",
			 ret);
		wd_queue_kill_locked(q, 0);
	}
	return ret;
}

/*
 * The queue dies for good (device removed, removal requested with @why =
 * WD_Q_RELEASE, or the owner's mm gone): the driver lets go, WD_Q_DEAD is
 * written and the eventfd signalled.  The mappings stay: the regions live
 * until close, a driver's doorbell page was replaced by the scratch page.
 */
void wd_queue_kill_locked(struct wd_queue *q, u32 why)
{
	lockdep_assert_held(&q->lock);
	if (q->state == WD_QS_CLOSED)
		return;
	if (q->state != WD_QS_DEAD) {
		wd_queue_stop(q, true, why);
		WRITE_ONCE(q->state, WD_QS_DEAD);
		wd_queue_forbid_mmap(q);
	}
	wd_queue_set_dead(q, why);
	/* DEAD is visible before the eventfd wakes the user. */
	smp_mb();
	wd_queue_signal(q, true);
}

void wd_queue_close_locked(struct wd_queue *q)
{
	lockdep_assert_held(&q->lock);
	wd_queue_stop(q, false, 0);
	WRITE_ONCE(q->state, WD_QS_CLOSED);
}
