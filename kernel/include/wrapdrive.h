/* SPDX-License-Identifier: GPL-2.0 */
/*
 * WrapDrive in-kernel API: what an accelerator driver uses to expose its
 * hardware queues to user space as vfio-mdev devices.
 *
 * Registration has two steps, like uacce: wd_accel_alloc() makes an
 * accelerator nobody can see yet; the driver finishes its own setup (its
 * debugfs files in wd_accel_debugfs(), its engine), then wd_accel_register()
 * creates the mdev types, their capabilities/ and the device attributes, and
 * only then tells udev (MDEV_STATE=registered).  wd_accel_remove() undoes
 * both.  WrapDrive owns the mdev types, the VFIO device of each queue, the
 * rings shared with user space, the interrupt eventfd, pinned pages and
 * debugfs.  The driver owns the engine: it is told when a queue starts and
 * stops, and uses the wd_queue_*() helpers to take descriptors, reach user
 * memory (by CPU copies, or mapped for its device with the DMA API) and
 * post completions.
 *
 * A queue's life, as the driver sees it: @queue_open when user space opens
 * it (and again after each VFIO_DEVICE_RESET), @queue_close when it closes,
 * resets, or dies (its device is removed, its mdev is removed while open, or
 * the process that opened it exits).  Between the two the engine may call
 * every wd_queue_*() helper; after @queue_close has returned it must not
 * touch the queue.
 *
 * Locking, outermost first: WrapDrive's accelerator lock, the queue lock
 * (held across @queue_open, @queue_close and @kick), then the driver's own
 * locks.  The engine helpers take no WrapDrive lock except where their
 * kernel-doc says so.
 */
#ifndef _WRAPDRIVE_H
#define _WRAPDRIVE_H

#include <linux/device.h>
#include <linux/dma-direction.h>
#include <linux/module.h>
#include <linux/scatterlist.h>
#include <linux/types.h>
#include "../uapi/wrapdrive.h"

struct dentry;
struct wd_accel;
struct wd_queue;

/**
 * struct wd_capa - one capability of a device, one mdev type
 * @sysfs_name: mdev type name suffix, e.g. "crc32c"
 * @algo_type: algorithm string shown in capabilities/algo_type
 * @flags: WD_CAPA_* / WD_WEAK_ORDER bits shown in capabilities/flags
 * @max_queues: maximum number of queues of this type (0: device limit)
 * @max_streams: stream slots of each queue of this type, for algorithms
 *	whose chained state the driver keeps (zlib); user space reads it in
 *	wd_ring_hdr.max_streams.  0: none.
 */
struct wd_capa {
	const char *sysfs_name;
	const char *algo_type;
	u32 flags;
	u32 max_queues;
	u32 max_streams;
};

/**
 * struct wd_accel_info - static description of a device
 * @name: human readable name (the mdev type's pretty name prefix)
 * @owner: module implementing the ops; pinned while a queue is open
 * @numa_zone: NUMA zone of the device, shown in sysfs numa_zone
 * @priority: initial priority, 1..100, smaller is preferred
 * @max_queues: maximum number of queues on the whole device (<= 4096)
 * @ring_entries: ring length of each queue, a power of two, 2..65536
 * @capas: capability list, one mdev type each
 * @nr_capas: number of entries in @capas (1..64)
 */
struct wd_accel_info {
	const char *name;
	struct module *owner;
	int numa_zone;
	int priority;
	u32 max_queues;
	u32 ring_entries;
	const struct wd_capa *capas;
	unsigned int nr_capas;
};

/**
 * struct wd_accel_ops - driver callbacks; every one is optional
 * @queue_open: start serving @q: its ring is empty and zeroed.  The engine
 *	may take descriptors from now on.  Return 0 or a negative errno (the
 *	open, or the reset, fails).  Called with the queue lock held.
 * @queue_close: stop serving @q.  When it returns the driver must not
 *	touch @q any more, and must have released every wd_dma_map of @q.
 *	Called once for each successful @queue_open, with the queue lock held.
 * @kick: user space wrote the doorbell slow path (a pwrite() of sq_tail):
 *	wake the engine.  Called with the queue lock held, only while @q is
 *	served (between @queue_open and @queue_close); must not sleep long.
 */
struct wd_accel_ops {
	int (*queue_open)(struct wd_queue *q);
	void (*queue_close)(struct wd_queue *q);
	void (*kick)(struct wd_queue *q);
};

/**
 * wd_accel_alloc() - prepare an accelerator, not yet visible
 * @parent: the device the queues (mdevs) hang off; its driver name prefixes
 *	the mdev type names
 * @info: capabilities and limits, copied
 * @ops: callbacks, must stay valid until wd_accel_remove()
 * @priv: driver data, see wd_accel_priv()
 *
 * Nothing is visible to user space until wd_accel_register(), except the
 * accelerator's debugfs directory (wd_accel_debugfs()).
 *
 * Context: process context, may sleep.
 * Locking: none held by the caller is needed; takes none the driver holds.
 * Return: the accelerator or an ERR_PTR(): -EINVAL for bad @info or @ops.
 */
struct wd_accel *wd_accel_alloc(struct device *parent,
				const struct wd_accel_info *info,
				const struct wd_accel_ops *ops, void *priv);

/**
 * wd_accel_register() - make an accelerator visible
 * @accel: what wd_accel_alloc() returned
 *
 * Creates the device attributes (numa_zone, priority), the mdev types and
 * their capabilities/ directories, and only then sends the parent's
 * MDEV_STATE=registered uevent: whoever reacts to it (udev, mdevctl) finds
 * everything in place.  From now on queues can be created and opened.
 *
 * Context: process context, may sleep.
 * Locking: the caller must not hold a lock its @ops take: queues can be
 * opened, and @queue_open called, before this returns.
 * Return: 0, -EEXIST if @parent already has an accelerator, -EBUSY if
 * @accel was registered before, or another negative errno.  On failure
 * nothing was made visible; call wd_accel_remove() to free @accel.
 */
int wd_accel_register(struct wd_accel *accel);

/**
 * wd_accel_remove() - unregister (if registered) and free an accelerator
 * @accel: what wd_accel_alloc() returned; NULL or an ERR_PTR() is ignored
 *
 * Open queues die: WD_Q_DEAD in their status, the eventfd signalled,
 * @ops->queue_close called; their mappings stay valid.  Then every mdev is
 * removed, which blocks until user space has closed the device fds of the
 * dead queues.  The driver must not use @accel afterwards; the memory
 * itself is freed once the kobjects that referred to it are gone.
 *
 * Context: process context, may sleep (for as long as users keep queues).
 * Locking: takes the accelerator lock and each queue lock to kill the
 * queues (calling @queue_close): the caller must hold none of the locks
 * its @ops take.
 */
void wd_accel_remove(struct wd_accel *accel);

/**
 * wd_accel_priv() - driver data given to wd_accel_alloc()
 * @accel: the accelerator
 *
 * Return: the @priv pointer.
 */
void *wd_accel_priv(struct wd_accel *accel);

/**
 * wd_accel_debugfs() - the accelerator's debugfs directory
 * @accel: the accelerator
 *
 * /sys/kernel/debug/wrapdrive/<parent device>/: the driver may add its own
 * files there (the sample's selfbench); they are removed with the directory
 * by wd_accel_remove().
 *
 * Return: the directory (an error pointer when debugfs is unavailable,
 * which the debugfs_create_*() functions accept).
 */
struct dentry *wd_accel_debugfs(struct wd_accel *accel);

/**
 * wd_accel_add_busy_ns() - account engine busy time (debugfs busy_ns)
 * @accel: the accelerator
 * @ns: nanoseconds spent working
 */
void wd_accel_add_busy_ns(struct wd_accel *accel, u64 ns);

/**
 * wd_queue_accel() - the accelerator of a queue
 * @q: the queue
 *
 * Return: the accelerator @q was created on.
 */
struct wd_accel *wd_queue_accel(struct wd_queue *q);

/**
 * wd_queue_capa() - the capability (mdev type) of a queue
 * @q: the queue
 *
 * Return: the capability, with its algo_type and flags.
 */
const struct wd_capa *wd_queue_capa(struct wd_queue *q);

/**
 * wd_queue_set_priv() - attach driver data to an open queue
 * @q: the queue
 * @priv: driver data
 */
void wd_queue_set_priv(struct wd_queue *q, void *priv);

/**
 * wd_queue_priv() - driver data of a queue
 * @q: the queue
 *
 * Return: what wd_queue_set_priv() stored, NULL by default.
 */
void *wd_queue_priv(struct wd_queue *q);

/**
 * struct wd_doorbell_page - a doorbell page the driver provides itself
 * @pfn: the page frame WD_REGION_DOORBELL maps for user space, e.g. a
 *	page of the device's MMIO space
 * @kaddr: the same page in the kernel.  WrapDrive reads and writes it as
 *	memory: it zeroes it, pread()/pwrite() of the region and the engine
 *	helpers (wd_queue_pending(), wd_queue_notify()) use it.  RAM, or
 *	device memory mapped with memremap().
 * @uncached: map it uncached for user space (MMIO); false: as the vma's
 *	default page protection
 */
struct wd_doorbell_page {
	unsigned long pfn;
	struct wd_doorbell *kaddr;
	bool uncached;
};

/**
 * wd_queue_set_doorbell() - serve the queue's doorbell from the driver's page
 * @q: a queue inside @queue_open
 * @page: the page; it must stay valid until @queue_close returns
 *
 * Call it from @queue_open, before the engine may look at @q.  WrapDrive
 * zeroes the page and points user mappings of WD_REGION_DOORBELL at it
 * while @q is served.  Before @queue_close is called (close, reset, death)
 * the user mappings are pointed at a per-queue scratch page instead, so
 * they stay readable and writable and never reach a page the driver has
 * let go.
 *
 * Context: process context, inside @queue_open.
 * Locking: the queue lock is held (by WrapDrive, around @queue_open).
 */
void wd_queue_set_doorbell(struct wd_queue *q,
			   const struct wd_doorbell_page *page);

/**
 * wd_queue_pending() - descriptors the engine may take now
 * @q: a served queue
 *
 * Reads the user's sq_tail and cq_head once each and bounds the result by
 * the room left in the CQ, so a hostile sq_tail never causes an overrun;
 * an sq_tail more than a ring ahead of sq_head is ignored (0 is returned).
 *
 * Context: any.
 * Locking: none taken; at most one caller per queue at a time (the engine
 * owns the ring indices of a served queue).
 * Return: number of descriptors available, 0..entries.
 */
u32 wd_queue_pending(struct wd_queue *q);

/**
 * wd_queue_fetch() - copy and consume the next descriptors
 * @q: a served queue
 * @descs: where to copy them
 * @max: at most this many (bounded by wd_queue_pending())
 *
 * Advances sq_head and the submitted counter.  Each descriptor must later
 * be completed with wd_queue_post(), exactly once.
 *
 * Context: as wd_queue_pending().
 * Return: number of descriptors copied.
 */
u32 wd_queue_fetch(struct wd_queue *q, struct wd_desc *descs, u32 max);

/**
 * wd_queue_post() - post one completion
 * @q: a served queue
 * @cqe: the completion; status != WD_STS_OK counts as an error
 *
 * WrapDrive counts what was fetched: a completion for which no descriptor
 * is outstanding is a driver bug, warned about once and dropped, so user
 * space never sees more completions than it submitted.  Call
 * wd_queue_notify() after a batch of posts.
 *
 * Context: as wd_queue_pending().
 */
void wd_queue_post(struct wd_queue *q, const struct wd_cqe *cqe);

/**
 * wd_queue_notify() - signal the eventfd if user space asked for it
 * @q: a served queue
 *
 * Issues a full barrier, then if doorbell.irq_request is set and the irq is
 * not masked, clears irq_request and signals the trigger eventfd once.
 *
 * Context: any, including hard interrupt context.
 * Locking: takes the queue's irq lock, a spinlock, with interrupts off.
 */
void wd_queue_notify(struct wd_queue *q);

/**
 * wd_queue_set_idle() - set or clear WD_Q_ENGINE_IDLE in ring.status
 * @q: a served queue
 * @idle: true when the engine stops polling @q
 *
 * Context: as wd_queue_pending().
 */
void wd_queue_set_idle(struct wd_queue *q, bool idle);

/**
 * wd_queue_read() - read a user buffer of a queue into kernel memory
 * @q: a served queue
 * @addr: IOVA (or process VA on a WD_CAPA_SHARE_ALL queue)
 * @buf: destination
 * @len: bytes
 *
 * IOVA pages are pinned through VFIO; when the queue's owner has
 * CAP_IPC_LOCK the pins are cached per queue (bounded) until the range is
 * unmapped or the queue stops, otherwise each copy pins and unpins, and a
 * user out of RLIMIT_MEMLOCK budget is served by a copy that pins nothing.
 * Process VAs are reached through the owner's mm, never its device
 * mappings: a buffer in any queue's regions (any VM_PFNMAP or VM_IO
 * mapping) is refused.  VFIO_IOMMU_UNMAP_DMA waits for a copy in progress
 * and later copies from the unmapped range fail.
 *
 * Context: process context, may sleep (page faults in user memory): from a
 * kernel thread or workqueue, not from the owner's own syscalls.
 * Locking: takes the queue's pin lock, then vfio's and the owner's mm
 * locks; the caller may hold its own engine locks, not the queue lock.
 * Return: 0, or -EFAULT when the range is not (fully) shared.
 */
int wd_queue_read(struct wd_queue *q, u64 addr, void *buf, size_t len);

/**
 * wd_queue_write() - write kernel memory to a user buffer of a queue
 * @q: a served queue
 * @addr: IOVA (or process VA on a WD_CAPA_SHARE_ALL queue)
 * @buf: source
 * @len: bytes
 *
 * As wd_queue_read(); the range must be shared writable.
 *
 * Context: as wd_queue_read().
 * Return: 0, or -EFAULT when the range is not (fully) shared writable.
 */
int wd_queue_write(struct wd_queue *q, u64 addr, const void *buf, size_t len);

/**
 * wd_queue_begin_access() - bracket the memory accesses of one request
 * @q: a served queue
 *
 * Optional: on a WD_CAPA_SHARE_ALL queue it holds the owner's address space
 * for the request and tells early that it is gone; it never changes the
 * calling thread's mm.  Pair with wd_queue_end_access().
 *
 * Context: process context.
 * Locking: none.
 * Return: 0, or -EFAULT if the owner's address space is gone (complete the
 * request with WD_STS_BAD_ADDR).
 */
int wd_queue_begin_access(struct wd_queue *q);

/**
 * wd_queue_end_access() - undo wd_queue_begin_access()
 * @q: the queue
 *
 * Context: process context; never runs the owner's mm teardown itself.
 * Locking: none.
 */
void wd_queue_end_access(struct wd_queue *q);

/**
 * struct wd_dma_map - user memory of a queue mapped for the device
 * @sgt: the pages, mapped with dma_map_sgtable() on the accelerator's
 *	parent device: walk it with for_each_sgtable_dma_sg(), using
 *	sg_dma_address() and sg_dma_len().  The first entry starts at the
 *	mapped address (not at its page).
 * @len: bytes mapped
 *
 * Everything after @len is WrapDrive's.
 */
struct wd_dma_map {
	struct sg_table sgt;
	u32 len;
	/* private: */
	struct list_head node;
	u64 addr;
	u64 first_page;
	unsigned int npages;
	enum dma_data_direction dir;
	bool iova;
	bool revoked;
	bool releasing;
	struct page **pages;
};

/**
 * wd_queue_dma_map() - pin and map [addr, addr + len) of a queue for DMA
 * @q: a served queue
 * @addr: IOVA (or process VA on a WD_CAPA_SHARE_ALL queue)
 * @len: bytes, 1..WD_MAX_LEN
 * @dir: DMA_TO_DEVICE (the device reads: src), DMA_FROM_DEVICE or
 *	DMA_BIDIRECTIONAL (it writes: dst, a context)
 *
 * Pins the pages (IOVAs through vfio_pin_pages(), in chunks of at most
 * VFIO_PIN_PAGES_MAX_ENTRIES; process VAs short-term with FOLL_PIN) and maps
 * them with dma_map_sgtable() on the parent device.  The pins count against
 * the owner's RLIMIT_MEMLOCK when it lacks CAP_IPC_LOCK: map a large request
 * in windows (the sample maps 64 KiB at a time) so that any request runs
 * within the default limit.
 *
 * The map must be released with wd_queue_dma_unmap() when the device is
 * done with it, and at the latest from @queue_close.  An
 * VFIO_IOMMU_UNMAP_DMA of a range that a map covers waits for that
 * wd_queue_dma_unmap(): keep maps short-lived, finish or abort the
 * device's access promptly.
 *
 * Context: process context, may sleep.
 * Locking: as wd_queue_read().  Must not be called with a lock held that
 * the thread calling wd_queue_dma_unmap() for another map of @q needs.
 * Return: the map, or an ERR_PTR(): -EFAULT (not shared, shared read-only
 * for a device write, the queue's own regions, or a range being unmapped),
 * -ENOMEM (memory, or RLIMIT_MEMLOCK: retry with a smaller window), -EINVAL
 * (@len).
 */
struct wd_dma_map *wd_queue_dma_map(struct wd_queue *q, u64 addr, u32 len,
				    enum dma_data_direction dir);

/**
 * wd_queue_dma_unmap() - unmap and unpin what wd_queue_dma_map() mapped
 * @q: the queue
 * @map: the map; freed
 *
 * Context: process context, may sleep.
 * Locking: takes the queue's pin lock, then vfio's locks.
 */
void wd_queue_dma_unmap(struct wd_queue *q, struct wd_dma_map *map);

/**
 * wd_dma_map_revoked() - does user space want a mapped range back?
 * @map: a map of wd_queue_dma_map(), not yet unmapped
 *
 * True once a VFIO_IOMMU_UNMAP_DMA overlapping @map has begun: it now
 * waits for wd_queue_dma_unmap() of @map.  A device that needs long for a
 * map (many DMAs, or slow ones) checks this between its DMAs, stops the
 * request (WD_STS_BAD_ADDR) and unmaps, so the unmap returns promptly;
 * the DMA in flight must still finish first.  A hint, read without a lock:
 * a map the device finishes quickly need not look.
 *
 * Context: any.
 * Return: true if @map has been revoked.
 */
bool wd_dma_map_revoked(const struct wd_dma_map *map);

#endif /* _WRAPDRIVE_H */
