/* SPDX-License-Identifier: GPL-2.0 */
/*
 * WrapDrive core internals: what the files of wrapdrive.ko share.  Drivers
 * include include/wrapdrive.h only.
 *
 *   wd_main.c     module, accelerator registration, sysfs, mdev driver
 *   wd_queue.c    queue state machine, engine ring helpers, irq signalling
 *   wd_vfio.c     the VFIO device: open/close, ioctls, regions, mmap, the
 *                 owner's mm
 *   wd_mem.c      user memory: pin cache, unmap fences, copies, DMA API
 *   wd_debugfs.c  debugfs
 *
 * Lock order, outermost first:
 *   wd_accels_lock
 *   wd_accel.lock
 *   wd_queue.lock           driver ops (queue_open/close, kick) run under it,
 *                           then the driver's own locks
 *   mmap_lock of the owner  (taken to zap a driver-provided doorbell)
 *   wd_queue.map_lock
 *   wd_queue.pin_lock       also taken by vfio type1's dma_unmap callback,
 *                           under type1's device_list_lock; a leaf: never
 *                           held into type1 (see wd_mem.c)
 *   vfio type1 iommu->lock, then the owner's mm locks (inside
 *                           vfio_pin_pages() and vfio_dma_rw(), called
 *                           without pin_lock)
 *   wd_queue.irq_lock       (spinlock, interrupts off)
 */
#ifndef _WD_INTERNAL_H
#define _WD_INTERNAL_H

#include <linux/kref.h>
#include <linux/list.h>
#include <linux/mdev.h>
#include <linux/mmu_notifier.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/vfio.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <linux/xarray.h>

#include "wrapdrive.h"

#define WD_MAX_QUEUES		4096
#define WD_MAX_CAPAS		64
#define WD_REGION_SHIFT		40
#define WD_REGION_MASK		((1ULL << WD_REGION_SHIFT) - 1)
#define WD_REGION_OFFSET(i)	((u64)(i) << WD_REGION_SHIFT)
#define WD_MAX_FENCES		16

extern struct workqueue_struct *wd_wq;
extern struct dentry *wd_debugfs_root;
extern atomic64_t wd_total_pinned;

/*
 * enum wd_accel_state - registration of an accelerator.
 * NEW: allocated, invisible.  LIVE: registered, queues may be created and
 * opened.  DEAD: being removed (or failed to register): no new queue, no
 * open.  Changes under wd_accel.lock; read locklessly (READ_ONCE) by open.
 */
enum wd_accel_state {
	WD_ACCEL_NEW,
	WD_ACCEL_LIVE,
	WD_ACCEL_DEAD,
};

/*
 * struct wd_mtype - one mdev type (capability) of an accelerator.
 * @caps is the type's capabilities/ directory, a kobject of ours under the
 * mdev core's type kobject; each one holds a reference on the accelerator
 * until its (possibly delayed) release.
 * Locking: @nr_queues under wd_accel.lock.
 */
struct wd_mtype {
	struct mdev_type type;
	struct kobject caps;
	bool caps_added;
	struct wd_accel *accel;
	const struct wd_capa *capa;
	unsigned int nr_queues;
};

/*
 * struct wd_accel - a device registered with WrapDrive.
 * Locking: @lock protects @state, @queues, @nr_queues and every
 * wd_mtype.nr_queues.  @node is on wd_accels under wd_accels_lock.
 * @priority is read and written with READ_ONCE/WRITE_ONCE.
 * Lifetime: @ref counts the driver's hold (until wd_accel_remove()) and
 * each capabilities kobject; the memory, which also holds the mdev core's
 * struct mdev_parent and struct mdev_type, is freed after the last put, a
 * grace period later under CONFIG_DEBUG_KOBJECT_RELEASE (the mdev core's
 * type release reads it).
 */
struct wd_accel {
	struct mdev_parent parent;
	struct device *dev;
	struct wd_accel_info info;
	struct wd_capa *capas;
	const struct wd_accel_ops *ops;
	void *priv;
	struct wd_mtype *mtypes;
	struct mdev_type **types;
	struct list_head node;
	struct dentry *dbg;
	int priority;
	bool parent_group;
	struct mutex lock;		/* state, queues, counts */
	enum wd_accel_state state;
	struct list_head queues;
	unsigned int nr_queues;
	atomic64_t busy_ns;
	struct kref ref;
	struct delayed_work free_work;
};

/*
 * enum wd_queue_state - a queue's life; transitions in wd_queue.c only.
 * CLOSED: no device fd open, no regions.  STARTED: open and served by the
 * driver.  STOPPED: open, not served (inside a reset).  DEAD: open, never
 * served again: WD_Q_DEAD in hdr.status, the mappings stay valid, fd
 * operations fail with ENODEV; only close leaves it.
 */
enum wd_queue_state {
	WD_QS_CLOSED,
	WD_QS_STARTED,
	WD_QS_STOPPED,
	WD_QS_DEAD,
};

/* A range being unmapped: no new pin in [first, last] until @expires. */
struct wd_fence {
	u64 first;
	u64 last;
	unsigned long expires;
};

struct wd_mm_watch;

/*
 * struct wd_queue - one queue: an mdev and its VFIO device.
 *
 * Locking:
 * @lock: @state, @serving, the ring contents outside the engine,
 *	the driver doorbell (@drv_db, @has_drv_db, @db) and every call of the
 *	driver's ops.  The regions (@own_db, @cqr, @sq) exist from open to
 *	close: a mapping holds the device file, so they outlive every mapping
 *	and a dead queue's mappings stay valid.
 * @sq_head, @cq_tail, @status: the engine's while @serving (it is the only
 *	caller of the ring helpers), the queue lock holder's otherwise.
 * @map_lock: what user mappings of WD_REGION_DOORBELL show (@db_pfn,
 *	@db_uncached) and whether new mmaps are allowed (@mappable); the fault
 *	handler inserts @db_pfn under it, a change of @db_pfn zaps the old
 *	PTEs under it.
 * @irq_lock: @trigger and @irq_masked.
 * @pin_lock: @pins, @nr_cached, @fences, @nr_fences, @dma_maps (and each
 *	map's @releasing), @dma_released, @unmap_epoch, @pins_in_flight and
 *	the @unmap_* retry record.  Never held across a call into type1
 *	(vfio_pin_pages(), vfio_unpin_pages(), vfio_dma_rw()): type1's
 *	dma_unmap callback takes it under type1's device_list_lock, see
 *	wd_mem.c.  Held across the copy through a cached page, so the
 *	callback cannot unpin the page under the copy.
 * @mm_watch: the mmu notifier on the owner's mm (wd_vfio.c), shared by
 *	the queues of that mm; @mm_node is on its list under its own lock.
 */
struct wd_queue {
	struct vfio_device vdev;	/* must be first */
	struct mdev_device *mdev;
	struct wd_accel *accel;
	struct wd_mtype *mtype;
	struct list_head node;		/* wd_accel.queues */

	struct mutex lock;		/* state; see above */
	enum wd_queue_state state;
	bool serving;
	bool cache_pins;
	struct mm_struct *mm;
	struct wd_mm_watch *mm_watch;
	struct list_head mm_node;	/* wd_mm_watch.queues */
	struct work_struct mm_exit_work;

	struct wd_doorbell *db;		/* what the engine and pread/pwrite use */
	struct wd_doorbell *own_db;	/* WrapDrive's doorbell page */
	struct wd_doorbell_page drv_db;	/* the driver's, if @has_drv_db */
	bool has_drv_db;
	void *cqr;			/* WD_REGION_CQ: @hdr, then @cq */
	size_t cqr_size;
	struct wd_desc *sq;		/* WD_REGION_SQ */
	size_t sq_size;
	struct wd_ring_hdr *hdr;
	struct wd_cqe *cq;
	u32 entries;
	u32 sq_head;
	u32 cq_tail;
	u32 status;

	struct mutex map_lock;		/* doorbell mapping; see above */
	unsigned long db_pfn;
	bool db_uncached;
	bool mappable;
	struct page *scratch;

	spinlock_t irq_lock;		/* trigger, irq_masked */
	struct eventfd_ctx *trigger;
	bool irq_masked;

	struct mutex pin_lock;		/* see above */
	struct xarray pins;		/* iova pfn -> tagged struct page * */
	unsigned long nr_cached;
	struct wd_fence fences[WD_MAX_FENCES];
	unsigned int nr_fences;
	struct list_head dma_maps;
	unsigned long dma_released;
	unsigned long unmap_epoch;	/* unmap callbacks begun */
	unsigned int pins_in_flight[2];	/* by unmap_epoch & 1 */
	u64 unmap_first;		/* the last callback's range, ... */
	u64 unmap_last;
	unsigned long unmap_at;		/* ... when it came ... */
	unsigned long unmap_ttl;	/* ... and its fence's life */
	wait_queue_head_t dma_wq;	/* maps released, pins landed */
	atomic64_t nr_pinned;

	void *priv;
	atomic64_t submitted;
	atomic64_t completed;
	atomic64_t errors;
	struct dentry *dbg;
};

static inline struct wd_queue *vdev_to_q(struct vfio_device *vdev)
{
	return container_of(vdev, struct wd_queue, vdev);
}

static inline bool wd_queue_is_sva(struct wd_queue *q)
{
	return q->mtype->capa->flags & WD_CAPA_SHARE_ALL;
}

/* wd_main.c */
extern const struct vfio_device_ops wd_vfio_ops;
void wd_accel_get(struct wd_accel *accel);
void wd_accel_put(struct wd_accel *accel);

/* wd_queue.c */
const char *wd_queue_state_name(enum wd_queue_state state);
int wd_queue_open_locked(struct wd_queue *q);
int wd_queue_reset_locked(struct wd_queue *q);
void wd_queue_kill_locked(struct wd_queue *q, u32 why);
void wd_queue_close_locked(struct wd_queue *q);
void wd_queue_signal(struct wd_queue *q, bool force);
void wd_queue_init_ring(struct wd_queue *q);

/* wd_vfio.c */
void wd_queue_set_db_pfn(struct wd_queue *q, unsigned long pfn, bool uncached);
void wd_queue_forbid_mmap(struct wd_queue *q);

/* wd_mem.c */
void wd_mem_init(struct wd_queue *q);
void wd_mem_release(struct wd_queue *q);
bool wd_mem_hold_owner(struct wd_queue *q);
void wd_mem_drop_owner(struct wd_queue *q, bool held);
void wd_mem_dma_unmap(struct wd_queue *q, u64 iova, u64 length);
void wd_mem_set_limits(void);

/* wd_debugfs.c */
void wd_debugfs_init(void);
void wd_debugfs_exit(void);
void wd_debugfs_accel(struct wd_accel *accel);
void wd_debugfs_queue(struct wd_queue *q);

#endif /* _WD_INTERNAL_H */
