// SPDX-License-Identifier: GPL-2.0
/*
 * wd_edu: WrapDrive on a real PCI device that does DMA, QEMU's "edu"
 * (PCI 1234:11e8), the sample a vendor with hardware copies.
 *
 * The device: BAR 0 holds a few registers, a 4 KiB buffer on the device
 * and a DMA engine that moves up to 4 KiB between that buffer and RAM at a
 * time, raising an MSI when it is done.  The driver offers one capability,
 * "memcpy", and carries out each request with that engine:
 *
 *   user memory --DMA--> device buffer --DMA--> user memory, 4 KiB a step
 *
 * What every DMA driver on WrapDrive does, in the order of this file:
 *
 *  - Queues: WrapDrive owns the rings; queue_open/queue_close/kick tell the
 *    driver when a queue starts, stops and has work (the seed's doorbell).
 *  - The engine, NAPI-like: a kick puts the queue on the device's poll
 *    list and wakes the engine thread, which serves a budget of requests
 *    per turn and keeps polling the ring while requests keep coming (the
 *    user then submits without a system call); when the ring stays empty
 *    for poll_us it marks the queue WD_Q_ENGINE_IDLE and the next
 *    submission kicks again.
 *  - Memory: a request's buffers are IOVAs of the queue's VFIO container.
 *    wd_queue_dma_map() pins a window of them and maps it with the DMA
 *    API for this PCI device, through the IOMMU when there is one; the
 *    device is only ever given those DMA addresses.  Every map is released
 *    before the request completes: nothing stays pinned between requests.
 *  - Completion: each DMA raises an MSI; the handler acks it and wakes the
 *    engine.  A DMA is never abandoned while the device may still write:
 *    close, reset, unbind and VFIO_IOMMU_UNMAP_DMA stop the request between
 *    two fills of the buffer (wd_dma_map_revoked()) and wait for the DMAs
 *    in flight.
 *  - Errors become statuses: a buffer the DMA API cannot map
 *    WD_STS_BAD_ADDR (or WD_STS_NOMEM), a device that stops answering
 *    WD_STS_ABORTED; the queue goes on.
 *
 * Without an IOMMU ("legacy mode", README) the same code runs: the user
 * side still goes through VFIO's emulated IOMMU (type1 pins the pages and
 * checks every range); only the DMA addresses the device gets are then
 * physical addresses instead of IOVAs of this device's IOMMU domain.
 *
 * QEMU's edu takes 100 ms of the guest's virtual clock per DMA: it is a
 * model of the driver's shape, not of anyone's speed.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/completion.h>
#include <linux/debugfs.h>
#include <linux/dma-mapping.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/kthread.h>
#include <linux/ktime.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/wait.h>

#include "wrapdrive.h"

#define WD_EDU_NAME		"wd_edu"

/* ---------------------------------------------------------------------- */
/* The device (QEMU docs/specs/edu.rst) */

#define EDU_VENDOR_ID		0x1234	/* QEMU's own emulated devices */
#define EDU_DEVICE_ID		0x11e8

#define EDU_REG_ID		0x00	/* reads EDU_ID_MAGIC (version 1.0) */
#define EDU_REG_IRQ_STATUS	0x24	/* pending interrupt causes */
#define EDU_REG_IRQ_ACK		0x64	/* write: clear these causes */
#define EDU_REG_DMA_SRC		0x80	/* 64-bit DMA source address */
#define EDU_REG_DMA_DST		0x88	/* 64-bit DMA destination address */
#define EDU_REG_DMA_CNT		0x90	/* bytes to move, <= EDU_BUF_SIZE */
#define EDU_REG_DMA_CMD		0x98	/* EDU_DMA_*; RUN clears when done */

#define EDU_ID_MAGIC		0x010000ed
#define EDU_DMA_RUN		BIT(0)	/* start; reads 1 while running */
#define EDU_DMA_TO_RAM		BIT(1)	/* device buffer -> RAM (else RAM ->) */
#define EDU_DMA_IRQ		BIT(2)	/* raise EDU_IRQ_DMA when done */
#define EDU_IRQ_DMA		BIT(8)	/* cause: a DMA finished */

#define EDU_BUF_ADDR		0x40000	/* the device buffer, as DMA sees it */
#define EDU_BUF_SIZE		4096
/*
 * Bytes moved per fill of the buffer.  QEMU 7.2's edu (Debian bookworm's)
 * checks a transfer's end with a strict bound and stops the whole virtual
 * machine ("hardware error: EDU: DMA range ... out of bounds") on a DMA
 * that reaches the buffer's last byte: use one byte less.
 */
#define EDU_BUF_FILL		(EDU_BUF_SIZE - 1)

/* ---------------------------------------------------------------------- */
/* Parameters and limits */

#define WD_EDU_WINDOW		(64 * 1024)	/* bytes mapped at once */
#define WD_EDU_BUDGET		16		/* requests per turn */
#define WD_EDU_DMA_TIMEOUT	(5 * HZ)	/* a DMA takes 100 ms */
#define WD_EDU_MAX_QUEUES	64

static unsigned int dma_bits = 28;
module_param(dma_bits, uint, 0444);
MODULE_PARM_DESC(dma_bits, "DMA address bits of the device: 28 for QEMU's default edu, 64 for -device edu,dma_mask=0xffffffffffffffff (28..64)");

static int priority = 50;
module_param(priority, int, 0444);
MODULE_PARM_DESC(priority, "initial priority of each device, 1..100 (default 50: a slow device)");

static unsigned int poll_us = 200;
module_param(poll_us, uint, 0644);
MODULE_PARM_DESC(poll_us, "a queue's ring is polled this long after its last request before it goes idle (default 200)");

static const struct wd_capa wd_edu_capas[] = {
	{ .sysfs_name = "memcpy", .algo_type = "memcpy" },
};

/* ---------------------------------------------------------------------- */
/* Driver state */

/* Where a queue stands with the engine. */
enum wd_edu_qstate {
	WD_EDU_Q_IDLE,		/* not polled: the ring says WD_Q_ENGINE_IDLE */
	WD_EDU_Q_LISTED,	/* on the poll list */
	WD_EDU_Q_RUNNING,	/* the engine is serving it */
};

/*
 * struct wd_edu_queue - an open queue.
 * @state and @node are under wd_edu.lock; @kicked and @closing are written
 * under it and read by the engine without it (READ_ONCE); the rest
 * belongs to the engine while it serves the queue and to queue_open and
 * queue_close otherwise (they run while the engine does not hold it).
 */
struct wd_edu_queue {
	struct wd_queue *q;
	enum wd_edu_qstate state;
	struct list_head node;
	bool kicked;
	bool closing;
	bool ring_idle;			/* WD_Q_ENGINE_IDLE is set */
	u64 last_work_ns;
};

/*
 * struct wd_edu - one edu device.
 *
 * Locking: @lock (a spinlock: kick runs under WrapDrive's queue lock)
 * protects @poll_list and the scheduling fields of every queue, including
 * the WrapDrive queue's priv pointer.  WrapDrive's queue lock comes before
 * it.  The engine thread never takes the queue lock (no helper it calls
 * does), so queue_close may wait for it: @release_wq.  Only the engine
 * thread programs the DMA engine, one DMA at a time: @dma_done needs no
 * lock.  The counters are atomics (debugfs).
 */
struct wd_edu {
	struct pci_dev *pdev;
	void __iomem *regs;
	struct wd_accel *accel;
	struct task_struct *engine;
	spinlock_t lock;		/* see above */
	struct list_head poll_list;	/* queues with work */
	wait_queue_head_t engine_wq;	/* the engine sleeps here */
	wait_queue_head_t release_wq;	/* queue_close waits here */
	struct completion dma_done;	/* completed by the MSI handler */
	bool broken;			/* the device stopped answering */
	atomic64_t dma_maps;		/* live wd_dma_maps (0 when idle) */
	atomic64_t dmas;		/* DMAs carried out */
	atomic64_t irqs;		/* DMA interrupts taken */
	atomic64_t lost_irqs;		/* DMAs finished without one */
	atomic64_t requests;		/* requests completed */
};

/* ---------------------------------------------------------------------- */
/* The DMA engine */

static irqreturn_t wd_edu_irq(int irq, void *data)
{
	struct wd_edu *edu = data;
	u32 status = readl(edu->regs + EDU_REG_IRQ_STATUS);

	if (!status || status == ~0U)	/* not ours, or the device is gone */
		return IRQ_NONE;
	writel(status, edu->regs + EDU_REG_IRQ_ACK);
	if (status & EDU_IRQ_DMA) {
		atomic64_inc(&edu->irqs);
		complete(&edu->dma_done);
	}
	return IRQ_HANDLED;
}

/*
 * Move @len bytes (at most EDU_BUF_FILL) from @src to @dst, one side being
 * the device buffer, and wait until the device has finished.  Done means
 * the RUN bit is clear, not that an interrupt came: a wake-up can be stale
 * and an MSI can be lost.  A DMA still running after the timeout keeps
 * this thread waiting, for as long as it takes: the memory it writes must
 * stay mapped until it stops (a device with a reset would be reset here;
 * edu has none).  Return 0, or -EIO when the device is gone or misbehaved:
 * it is then disabled, and every later request fails with WD_STS_ABORTED.
 */
static int wd_edu_dma(struct wd_edu *edu, dma_addr_t src, dma_addr_t dst,
		      u32 len, bool to_ram)
{
	u32 cmd = EDU_DMA_RUN | EDU_DMA_IRQ | (to_ram ? EDU_DMA_TO_RAM : 0);
	unsigned long left;

	if (edu->broken)
		return -EIO;
	reinit_completion(&edu->dma_done);
	writeq(src, edu->regs + EDU_REG_DMA_SRC);
	writeq(dst, edu->regs + EDU_REG_DMA_DST);
	writeq(len, edu->regs + EDU_REG_DMA_CNT);
	writeq(cmd, edu->regs + EDU_REG_DMA_CMD);	/* posted after the above */

	for (;;) {
		left = wait_for_completion_timeout(&edu->dma_done,
						   WD_EDU_DMA_TIMEOUT);
		cmd = readl(edu->regs + EDU_REG_DMA_CMD);
		if (cmd == ~0U) {	/* gone: it does no DMA any more */
			dev_err(&edu->pdev->dev, "device gone: disabled\n");
			edu->broken = true;
			return -EIO;
		}
		if (!(cmd & EDU_DMA_RUN))
			break;
		if (!left) {
			dev_err_ratelimited(&edu->pdev->dev,
					    "DMA still running after %u s: disabled, waiting for it to stop\n",
					    WD_EDU_DMA_TIMEOUT / HZ);
			edu->broken = true;
		}
	}
	if (!left)
		atomic64_inc(&edu->lost_irqs);
	atomic64_inc(&edu->dmas);
	return edu->broken ? -EIO : 0;
}

/* A position in a DMA-mapped scatterlist. */
struct wd_edu_cursor {
	struct scatterlist *sg;
	u32 off;
};

static dma_addr_t wd_edu_cur_addr(const struct wd_edu_cursor *c)
{
	return sg_dma_address(c->sg) + c->off;
}

/* Bytes left in the current segment. */
static u32 wd_edu_cur_len(const struct wd_edu_cursor *c)
{
	return sg_dma_len(c->sg) - c->off;
}

static void wd_edu_cur_advance(struct wd_edu_cursor *c, u32 n)
{
	c->off += n;
	if (c->off == sg_dma_len(c->sg)) {
		c->sg = sg_next(c->sg);
		c->off = 0;
	}
}

/*
 * Copy @len bytes from the mapped @src to the mapped @dst through the
 * device buffer: fill it from one or more source segments, then empty it
 * into one or more destination segments.  Each DMA stays inside one
 * segment (contiguous in DMA address space) and inside the buffer.
 * Between two fills, stop if the queue is closing (-ECANCELED) or user
 * space unmaps either range (-EFAULT): close, reset and unmap then wait
 * for one fill at most, not for the whole window.
 */
static int wd_edu_copy(struct wd_edu *edu, struct wd_edu_queue *eq,
		       struct wd_dma_map *src, struct wd_dma_map *dst, u32 len)
{
	struct wd_edu_cursor s = { .sg = src->sgt.sgl }, d = { .sg = dst->sgt.sgl };
	u32 fill, n, off;
	int ret;

	while (len) {
		if (READ_ONCE(eq->closing))
			return -ECANCELED;
		if (wd_dma_map_revoked(src) || wd_dma_map_revoked(dst))
			return -EFAULT;
		fill = min_t(u32, len, EDU_BUF_FILL);
		for (off = 0; off < fill; off += n) {
			n = min(fill - off, wd_edu_cur_len(&s));
			ret = wd_edu_dma(edu, wd_edu_cur_addr(&s),
					 EDU_BUF_ADDR + off, n, false);
			if (ret)
				return ret;
			wd_edu_cur_advance(&s, n);
		}
		for (off = 0; off < fill; off += n) {
			n = min(fill - off, wd_edu_cur_len(&d));
			ret = wd_edu_dma(edu, EDU_BUF_ADDR + off,
					 wd_edu_cur_addr(&d), n, true);
			if (ret)
				return ret;
			wd_edu_cur_advance(&d, n);
		}
		len -= fill;
	}
	return 0;
}

static struct wd_dma_map *wd_edu_map(struct wd_edu *edu, struct wd_queue *q,
				     u64 addr, u32 len,
				     enum dma_data_direction dir)
{
	struct wd_dma_map *map = wd_queue_dma_map(q, addr, len, dir);

	if (!IS_ERR(map))
		atomic64_inc(&edu->dma_maps);
	return map;
}

static void wd_edu_unmap(struct wd_edu *edu, struct wd_queue *q,
			 struct wd_dma_map *map)
{
	wd_queue_dma_unmap(q, map);
	atomic64_dec(&edu->dma_maps);
}

/* A WD_STS_* for an errno of wd_queue_dma_map(), the device or a stop. */
static u16 wd_edu_status(int err)
{
	switch (err) {
	case 0:
		return WD_STS_OK;
	case -ENOMEM:
		return WD_STS_NOMEM;
	case -EIO:		/* the device stopped answering */
	case -ECANCELED:	/* the queue is closing */
		return WD_STS_ABORTED;
	}
	return WD_STS_BAD_ADDR;
}

/* ---------------------------------------------------------------------- */
/* Requests */

/* A buffer of @len bytes at @addr that wraps around the address space. */
static bool wd_edu_wraps(u64 addr, u32 len)
{
	return len && addr + (len - 1) < addr;
}

/* The checks made before memory is touched, in uapi/wrapdrive.h's order. */
static u16 wd_edu_check(const struct wd_desc *desc)
{
	if (desc->opcode != WD_OP_MEMCPY && desc->opcode != WD_OP_NOP)
		return WD_STS_BAD_OPCODE;
	if (desc->flags || desc->__rsvd[0] || desc->__rsvd[1])
		return WD_STS_BAD_FLAGS;
	if (desc->src_len > WD_MAX_LEN || desc->dst_len > WD_MAX_LEN ||
	    wd_edu_wraps(desc->src, desc->src_len) ||
	    wd_edu_wraps(desc->dst, desc->dst_len))
		return WD_STS_BAD_LEN;
	if (desc->opcode == WD_OP_MEMCPY && desc->dst_len < desc->src_len)
		return WD_STS_NOSPC;
	return WD_STS_OK;
}

/*
 * Run one memcpy, a window at a time: map the window of src and dst, copy
 * it through the device, unmap both.  Mapping in windows bounds what a
 * request pins at once (RLIMIT_MEMLOCK, see wd_queue_dma_map()).
 */
static u16 wd_edu_memcpy(struct wd_edu *edu, struct wd_edu_queue *eq,
			 const struct wd_desc *desc)
{
	struct wd_dma_map *src, *dst;
	u32 off, n;
	int ret;

	for (off = 0; off < desc->src_len; off += n) {
		n = min_t(u32, desc->src_len - off, WD_EDU_WINDOW);
		src = wd_edu_map(edu, eq->q, desc->src + off, n, DMA_TO_DEVICE);
		if (IS_ERR(src))
			return wd_edu_status(PTR_ERR(src));
		dst = wd_edu_map(edu, eq->q, desc->dst + off, n,
				 DMA_FROM_DEVICE);
		if (IS_ERR(dst)) {
			wd_edu_unmap(edu, eq->q, src);
			return wd_edu_status(PTR_ERR(dst));
		}
		ret = wd_edu_copy(edu, eq, src, dst, n);
		wd_edu_unmap(edu, eq->q, dst);
		wd_edu_unmap(edu, eq->q, src);
		if (ret)
			return wd_edu_status(ret);
	}
	return WD_STS_OK;
}

static void wd_edu_exec(struct wd_edu *edu, struct wd_edu_queue *eq,
			const struct wd_desc *desc)
{
	u16 sts = wd_edu_check(desc);
	struct wd_cqe cqe = { .tag = desc->tag };

	if (!sts && desc->opcode == WD_OP_MEMCPY)
		sts = wd_edu_memcpy(edu, eq, desc);
	cqe.status = sts;
	if (!sts && desc->opcode == WD_OP_MEMCPY)
		cqe.out_len = desc->src_len;
	/* Counted before the user can see the completion (and read the count). */
	atomic64_inc(&edu->requests);
	wd_queue_post(eq->q, &cqe);
	wd_queue_notify(eq->q);
}

/* ---------------------------------------------------------------------- */
/* The engine thread: NAPI-like polling of the queues with work */

/* Serve up to a budget of @eq's requests; true if there were any. */
static bool wd_edu_serve(struct wd_edu *edu, struct wd_edu_queue *eq)
{
	struct wd_desc desc;
	unsigned int done;

	if (eq->ring_idle) {
		/* Woken by a kick: tell the user we poll again. */
		wd_queue_set_idle(eq->q, false);
		eq->ring_idle = false;
		eq->last_work_ns = ktime_get_ns();
	}
	for (done = 0; done < WD_EDU_BUDGET && !READ_ONCE(eq->closing);
	     done++) {
		if (!wd_queue_fetch(eq->q, &desc, 1))
			break;
		wd_edu_exec(edu, eq, &desc);
	}
	if (done)
		eq->last_work_ns = ktime_get_ns();
	return done;
}

/*
 * May the queue go idle after a turn?  Not while it had work, was kicked
 * or is inside its polling window.  Otherwise set WD_Q_ENGINE_IDLE, then
 * look at the doorbell once more: pairs with the user's store of sq_tail,
 * full barrier, read of the status, so no submission is left behind.
 */
static bool wd_edu_try_idle(struct wd_edu_queue *eq, bool busy)
{
	u64 window = (u64)READ_ONCE(poll_us) * NSEC_PER_USEC;

	if (busy || READ_ONCE(eq->kicked) || READ_ONCE(eq->closing) ||
	    ktime_get_ns() - eq->last_work_ns < window)
		return false;
	wd_queue_set_idle(eq->q, true);
	smp_mb();	/* IDLE visible before sq_tail is read */
	if (wd_queue_pending(eq->q)) {
		wd_queue_set_idle(eq->q, false);
		return false;
	}
	eq->ring_idle = true;
	return true;
}

static int wd_edu_engine_fn(void *data)
{
	struct wd_edu *edu = data;
	struct wd_edu_queue *eq;
	bool idle;

	while (!kthread_should_stop()) {
		spin_lock(&edu->lock);
		eq = list_first_entry_or_null(&edu->poll_list,
					      struct wd_edu_queue, node);
		if (!eq) {
			spin_unlock(&edu->lock);
			/* No timer: an idle device costs nothing. */
			wait_event_idle(edu->engine_wq,
					!list_empty_careful(&edu->poll_list) ||
					kthread_should_stop());
			continue;
		}
		list_del(&eq->node);
		eq->state = WD_EDU_Q_RUNNING;
		WRITE_ONCE(eq->kicked, false);
		spin_unlock(&edu->lock);

		idle = wd_edu_try_idle(eq, wd_edu_serve(edu, eq));

		spin_lock(&edu->lock);
		if (eq->closing) {
			eq->state = WD_EDU_Q_IDLE;
			wake_up_all(&edu->release_wq);
		} else if (idle && !eq->kicked) {
			eq->state = WD_EDU_Q_IDLE;
		} else {
			/* Work left, or polling: back at the tail. */
			eq->state = WD_EDU_Q_LISTED;
			list_add_tail(&eq->node, &edu->poll_list);
		}
		spin_unlock(&edu->lock);
		cond_resched();
	}
	return 0;
}

/* ---------------------------------------------------------------------- */
/* WrapDrive ops */

static int wd_edu_queue_open(struct wd_queue *q)
{
	struct wd_edu *edu = wd_accel_priv(wd_queue_accel(q));
	struct wd_edu_queue *eq;

	eq = kzalloc(sizeof(*eq), GFP_KERNEL);
	if (!eq)
		return -ENOMEM;
	eq->q = q;
	eq->state = WD_EDU_Q_IDLE;
	eq->ring_idle = true;
	wd_queue_set_idle(q, true);	/* the first submission kicks */
	spin_lock(&edu->lock);
	wd_queue_set_priv(q, eq);
	spin_unlock(&edu->lock);
	return 0;
}

static bool wd_edu_queue_held(struct wd_edu *edu, struct wd_edu_queue *eq)
{
	bool held;

	spin_lock(&edu->lock);
	held = eq->state == WD_EDU_Q_RUNNING;
	spin_unlock(&edu->lock);
	return held;
}

/*
 * Close, reset, unbind, owner death: stop the request between two DMAs
 * (the one in flight finishes; its maps are released) and wait for the
 * engine to let go of the queue.  Its later requests are WrapDrive's.
 */
static void wd_edu_queue_close(struct wd_queue *q)
{
	struct wd_edu *edu = wd_accel_priv(wd_queue_accel(q));
	struct wd_edu_queue *eq = wd_queue_priv(q);

	spin_lock(&edu->lock);
	WRITE_ONCE(eq->closing, true);
	wd_queue_set_priv(q, NULL);
	if (eq->state == WD_EDU_Q_LISTED) {
		list_del(&eq->node);
		eq->state = WD_EDU_Q_IDLE;
	}
	spin_unlock(&edu->lock);
	wait_event(edu->release_wq, !wd_edu_queue_held(edu, eq));
	kfree(eq);
}

/* The doorbell's slow path: put an idle queue on the poll list. */
static void wd_edu_kick(struct wd_queue *q)
{
	struct wd_edu *edu = wd_accel_priv(wd_queue_accel(q));
	struct wd_edu_queue *eq;

	spin_lock(&edu->lock);
	eq = wd_queue_priv(q);
	if (eq && eq->state == WD_EDU_Q_IDLE) {
		eq->state = WD_EDU_Q_LISTED;
		list_add_tail(&eq->node, &edu->poll_list);
		wake_up(&edu->engine_wq);
	} else if (eq && eq->state == WD_EDU_Q_RUNNING) {
		WRITE_ONCE(eq->kicked, true);
	}
	spin_unlock(&edu->lock);
}

static const struct wd_accel_ops wd_edu_ops = {
	.queue_open = wd_edu_queue_open,
	.queue_close = wd_edu_queue_close,
	.kick = wd_edu_kick,
};

/* ---------------------------------------------------------------------- */
/* debugfs: counters in the accelerator's directory (docs/ABI) */

static int wd_edu_counter_get(void *data, u64 *val)
{
	*val = atomic64_read(data);
	return 0;
}
DEFINE_DEBUGFS_ATTRIBUTE(wd_edu_counter_fops, wd_edu_counter_get, NULL,
			 "%llu\n");

/* Removed with the directory, by wd_accel_remove(). */
static void wd_edu_debugfs_init(struct wd_edu *edu)
{
	struct dentry *dir = wd_accel_debugfs(edu->accel);

	debugfs_create_file_unsafe("dma_maps", 0444, dir, &edu->dma_maps,
				   &wd_edu_counter_fops);
	debugfs_create_file_unsafe("dmas", 0444, dir, &edu->dmas,
				   &wd_edu_counter_fops);
	debugfs_create_file_unsafe("irqs", 0444, dir, &edu->irqs,
				   &wd_edu_counter_fops);
	debugfs_create_file_unsafe("lost_irqs", 0444, dir, &edu->lost_irqs,
				   &wd_edu_counter_fops);
	debugfs_create_file_unsafe("requests", 0444, dir, &edu->requests,
				   &wd_edu_counter_fops);
}

/* ---------------------------------------------------------------------- */
/* PCI driver */

static int wd_edu_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct wd_accel_info info = {
		.name = WD_EDU_NAME,
		.owner = THIS_MODULE,
		.numa_zone = max(dev_to_node(&pdev->dev), 0),
		.priority = priority,
		.max_queues = WD_EDU_MAX_QUEUES,
		.ring_entries = 64,
		.capas = wd_edu_capas,
		.nr_capas = ARRAY_SIZE(wd_edu_capas),
	};
	struct wd_edu *edu;
	u32 magic;
	int ret;

	edu = kzalloc(sizeof(*edu), GFP_KERNEL);
	if (!edu)
		return -ENOMEM;
	edu->pdev = pdev;
	spin_lock_init(&edu->lock);
	INIT_LIST_HEAD(&edu->poll_list);
	init_waitqueue_head(&edu->engine_wq);
	init_waitqueue_head(&edu->release_wq);
	init_completion(&edu->dma_done);

	ret = pci_enable_device_mem(pdev);
	if (ret)
		goto err_free;
	ret = pci_request_region(pdev, 0, WD_EDU_NAME);
	if (ret)
		goto err_disable;
	edu->regs = pci_iomap(pdev, 0, 0);
	if (!edu->regs) {
		ret = -ENOMEM;
		goto err_region;
	}
	magic = readl(edu->regs + EDU_REG_ID);
	if (magic != EDU_ID_MAGIC) {
		dev_err(&pdev->dev, "not an edu device (id %#x)\n", magic);
		ret = -ENODEV;
		goto err_iounmap;
	}
	/* What addresses the device can take; the DMA API keeps to them. */
	ret = dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(dma_bits));
	if (ret)
		goto err_iounmap;
	pci_set_master(pdev);

	ret = pci_alloc_irq_vectors(pdev, 1, 1, PCI_IRQ_MSI);
	if (ret < 0)
		goto err_master;
	ret = request_irq(pci_irq_vector(pdev, 0), wd_edu_irq, 0, WD_EDU_NAME,
			  edu);
	if (ret)
		goto err_vectors;

	edu->engine = kthread_run(wd_edu_engine_fn, edu, WD_EDU_NAME "/%s",
				  pci_name(pdev));
	if (IS_ERR(edu->engine)) {
		ret = PTR_ERR(edu->engine);
		goto err_irq;
	}

	/* Two steps: everything ready before a queue can be opened. */
	edu->accel = wd_accel_alloc(&pdev->dev, &info, &wd_edu_ops, edu);
	if (IS_ERR(edu->accel)) {
		ret = PTR_ERR(edu->accel);
		goto err_engine;
	}
	wd_edu_debugfs_init(edu);
	ret = wd_accel_register(edu->accel);
	if (ret)
		goto err_accel;
	pci_set_drvdata(pdev, edu);
	dev_info(&pdev->dev, "%u-bit DMA%s\n", dma_bits,
		 device_iommu_mapped(&pdev->dev) ? " through an IOMMU" : "");
	return 0;

err_accel:
	wd_accel_remove(edu->accel);
err_engine:
	kthread_stop(edu->engine);
err_irq:
	free_irq(pci_irq_vector(pdev, 0), edu);
err_vectors:
	pci_free_irq_vectors(pdev);
err_master:
	pci_clear_master(pdev);
err_iounmap:
	pci_iounmap(pdev, edu->regs);
err_region:
	pci_release_region(pdev, 0);
err_disable:
	pci_disable_device(pdev);
err_free:
	kfree(edu);
	return ret;
}

static void wd_edu_remove(struct pci_dev *pdev)
{
	struct wd_edu *edu = pci_get_drvdata(pdev);

	/* Kills the open queues (queue_close), waits for their users. */
	wd_accel_remove(edu->accel);
	kthread_stop(edu->engine);	/* no queue left: it sleeps */
	free_irq(pci_irq_vector(pdev, 0), edu);
	pci_free_irq_vectors(pdev);
	pci_clear_master(pdev);
	pci_iounmap(pdev, edu->regs);
	pci_release_region(pdev, 0);
	pci_disable_device(pdev);
	kfree(edu);
}

static const struct pci_device_id wd_edu_ids[] = {
	{ PCI_DEVICE(EDU_VENDOR_ID, EDU_DEVICE_ID) },
	{ }
};
MODULE_DEVICE_TABLE(pci, wd_edu_ids);

static struct pci_driver wd_edu_driver = {
	.name = WD_EDU_NAME,
	.id_table = wd_edu_ids,
	.probe = wd_edu_probe,
	.remove = wd_edu_remove,
};

static int __init wd_edu_init(void)
{
	if (dma_bits < 28 || dma_bits > 64) {
		pr_err("dma_bits must be 28..64\n");
		return -EINVAL;
	}
	if (priority < 1 || priority > 100) {
		pr_err("priority must be 1..100\n");
		return -EINVAL;
	}
	return pci_register_driver(&wd_edu_driver);
}

static void __exit wd_edu_exit(void)
{
	pci_unregister_driver(&wd_edu_driver);
}

module_init(wd_edu_init);
module_exit(wd_edu_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("WrapDrive sample driver: QEMU's edu PCI device, memcpy by DMA");
MODULE_SOFTDEP("pre: wrapdrive");
