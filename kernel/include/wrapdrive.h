/* SPDX-License-Identifier: GPL-2.0 */
/*
 * WrapDrive in-kernel API: what an accelerator driver uses to expose its
 * hardware queues to user space as vfio-mdev devices.
 *
 * A driver fills a struct wd_accel_info (its capabilities) and a
 * struct wd_accel_ops, calls wd_register_accel() for each of its devices and
 * wd_unregister_accel() before the device goes away.  WrapDrive owns the
 * mdev types, the VFIO device of each queue, the rings shared with user
 * space, the interrupt eventfd, pinned pages and debugfs.  The driver owns
 * the engine: it is told when a queue opens and closes, and uses the
 * wd_queue_*() helpers to take descriptors, move data and post completions.
 */
#ifndef _WRAPDRIVE_H
#define _WRAPDRIVE_H

#include <linux/types.h>
#include <linux/device.h>
#include <linux/module.h>
#include "../uapi/wrapdrive.h"

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
 * @nr_capas: number of entries in @capas
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
 * @queue_open: a queue was opened by user space: the engine may serve it
 *	from now on.  Return 0 or a negative errno (the open fails).
 * @queue_close: stop serving @q.  When it returns the driver must not
 *	touch @q any more.  Called once for each successful @queue_open.
 * @kick: user space wrote the doorbell slow path: wake the engine.
 *	Called from process context without WrapDrive locks held.
 * @selfbench: run @count operations of algorithm @algo on @size-byte
 *	kernel buffers, store the elapsed time in @nsec.  Returns 0 or a
 *	negative errno (-EINVAL for an unknown @algo).
 */
struct wd_accel_ops {
	int (*queue_open)(struct wd_queue *q);
	void (*queue_close)(struct wd_queue *q);
	void (*kick)(struct wd_queue *q);
	int (*selfbench)(struct wd_accel *accel, const char *algo, u32 size,
			 u32 count, u64 *nsec);
};

/**
 * wd_register_accel() - expose a device through WrapDrive
 * @parent: the device the queues (mdevs) hang off; its driver name prefixes
 *	the mdev type names
 * @info: capabilities and limits, copied
 * @ops: callbacks, must stay valid until wd_unregister_accel()
 * @priv: driver data, see wd_accel_priv()
 *
 * Return: the new accelerator or an ERR_PTR().
 */
struct wd_accel *wd_register_accel(struct device *parent,
				   const struct wd_accel_info *info,
				   const struct wd_accel_ops *ops, void *priv);

/**
 * wd_unregister_accel() - remove a device from WrapDrive
 * @accel: what wd_register_accel() returned
 *
 * Open queues are marked dead (WD_Q_DEAD, eventfd signalled, mappings
 * zapped, @ops->queue_close called), then every mdev is removed.  Blocks
 * until user space has closed the device fds of the dead queues.
 */
void wd_unregister_accel(struct wd_accel *accel);

/**
 * wd_accel_priv() - driver data given to wd_register_accel()
 * @accel: the accelerator
 *
 * Return: the @priv pointer.
 */
void *wd_accel_priv(struct wd_accel *accel);

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
 * wd_queue_pending() - descriptors the engine may take now
 * @q: an open queue
 *
 * Reads the user's sq_tail and cq_head once each and bounds the result by
 * the room left in the CQ, so a hostile sq_tail never causes an overrun;
 * an sq_tail more than a ring ahead of sq_head is ignored (0 is returned).
 *
 * Return: number of descriptors available, 0..entries.
 */
u32 wd_queue_pending(struct wd_queue *q);

/**
 * wd_queue_fetch() - copy and consume the next descriptors
 * @q: an open queue
 * @descs: where to copy them
 * @max: at most this many (bounded by wd_queue_pending())
 *
 * Advances sq_head and the submitted counter.  Each descriptor must later
 * be completed with wd_queue_post().
 *
 * Return: number of descriptors copied.
 */
u32 wd_queue_fetch(struct wd_queue *q, struct wd_desc *descs, u32 max);

/**
 * wd_queue_post() - post one completion
 * @q: an open queue
 * @cqe: the completion; status != WD_STS_OK counts as an error
 *
 * Call wd_queue_notify() after a batch of posts.
 */
void wd_queue_post(struct wd_queue *q, const struct wd_cqe *cqe);

/**
 * wd_queue_notify() - signal the eventfd if user space asked for it
 * @q: an open queue
 *
 * Issues a full barrier, then if doorbell.irq_request is set and the irq is
 * not masked, clears irq_request and signals the trigger eventfd once.
 */
void wd_queue_notify(struct wd_queue *q);

/**
 * wd_queue_set_idle() - set or clear WD_Q_ENGINE_IDLE in ring.status
 * @q: an open queue
 * @idle: true when the engine stops polling @q
 */
void wd_queue_set_idle(struct wd_queue *q, bool idle);

/**
 * wd_queue_read() - read a user buffer of a queue into kernel memory
 * @q: an open queue
 * @addr: IOVA (or process VA on a WD_CAPA_SHARE_ALL queue)
 * @buf: destination
 * @len: bytes
 *
 * May sleep.  IOVA pages are pinned through VFIO and cached per queue
 * until unmapped or the queue closes; VA accesses use the owner's mm.
 *
 * Return: 0, or -EFAULT when the range is not (fully) shared.
 */
int wd_queue_read(struct wd_queue *q, u64 addr, void *buf, size_t len);

/**
 * wd_queue_write() - write kernel memory to a user buffer of a queue
 * @q: an open queue
 * @addr: IOVA (or process VA on a WD_CAPA_SHARE_ALL queue)
 * @buf: source
 * @len: bytes
 *
 * Return: 0, or -EFAULT when the range is not (fully) shared.
 */
int wd_queue_write(struct wd_queue *q, u64 addr, const void *buf, size_t len);

/**
 * wd_queue_begin_access() - prepare the engine thread to access a queue
 * @q: an open queue
 *
 * On a WD_CAPA_SHARE_ALL queue, makes the owner's mm current in the calling
 * kernel thread.  Pair with wd_queue_end_access() around the
 * wd_queue_read()/wd_queue_write() calls of one request.
 *
 * Return: 0, or -EFAULT if the owner's address space is gone.
 */
int wd_queue_begin_access(struct wd_queue *q);

/**
 * wd_queue_end_access() - undo wd_queue_begin_access()
 * @q: the queue
 */
void wd_queue_end_access(struct wd_queue *q);

#endif /* _WRAPDRIVE_H */
