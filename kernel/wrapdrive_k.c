// SPDX-License-Identifier: GPL-2.0
/*
 * WrapDrive_k: exposes accelerator queues to user space as vfio-mdev
 * devices.  See include/wrapdrive.h for the driver API and
 * uapi/wrapdrive.h for what user space sees.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/debugfs.h>
#include <linux/eventfd.h>
#include <linux/highmem.h>
#include <linux/iommu.h>
#include <linux/kernel.h>
#include <linux/kthread.h>
#include <linux/list.h>
#include <linux/log2.h>
#include <linux/mdev.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/uaccess.h>
#include <linux/vfio.h>
#include <linux/vmalloc.h>
#include <linux/xarray.h>

#include "wrapdrive.h"
#include "wd_compat.h"

#define WD_MAX_QUEUES		4096
#define WD_MAX_CAPAS		64
#define WD_REGION_SHIFT		40
#define WD_REGION_MASK		((1ULL << WD_REGION_SHIFT) - 1)
#define WD_REGION_OFFSET(i)	((u64)(i) << WD_REGION_SHIFT)
#define WD_PIN_CACHE_MAX	4096	/* pages kept pinned per queue */

static struct dentry *wd_debugfs_root;
static atomic64_t wd_total_pinned = ATOMIC64_INIT(0);

/* All registered accelerators, for the parent device attributes. */
static LIST_HEAD(wd_accels);
static DEFINE_MUTEX(wd_accels_lock);

/*
 * struct wd_mtype - one mdev type (capability) of an accelerator.
 * Locking: @nr_queues is protected by the accelerator's lock.
 */
struct wd_mtype {
	struct mdev_type type;
	struct wd_accel *accel;
	const struct wd_capa *capa;
	unsigned int nr_queues;
	bool group_added;
};

/*
 * struct wd_accel - a registered device.
 * Locking: @lock protects @queues, @nr_queues, every wd_mtype.nr_queues,
 * @dead and the open/engine state of each queue (wd_queue.open,
 * wd_queue.engine_on, wd_queue.dead).  Lock order: @lock, then the
 * driver's own engine locks (ops are called with @lock held, except kick
 * and selfbench).  @bench_lock serialises selfbench runs and guards
 * @bench_result.  @node is on wd_accels under wd_accels_lock.
 */
struct wd_accel {
	struct mdev_parent parent;
	struct device *dev;
	struct wd_accel_info info;
	struct wd_capa *capas;
	const struct wd_accel_ops *ops;
	void *priv;
	int priority;
	struct wd_mtype *mtypes;
	struct mdev_type **types;
	struct list_head node;
	struct mutex lock;		/* queues, counts, dead, queue state */
	struct list_head queues;
	unsigned int nr_queues;
	bool dead;
	atomic64_t busy_ns;
	struct dentry *dbg;
	struct mutex bench_lock;	/* one selfbench at a time */
	char bench_result[96];
};

/*
 * struct wd_queue - one queue: an mdev and its VFIO device.
 * Locking: open/engine_on/dead change under accel->lock; @dead is also
 * read locklessly (READ_ONCE) by the fd operations.  The regions (@db,
 * @cqr, @sq) exist from open_device to close_device: a mapping holds the
 * device file, so they outlive every mapping of them and a dead queue's
 * mappings stay valid.  The engine only touches them between queue_open
 * and queue_close.  @sq_head, @cq_tail and @status are owned by the engine
 * while engine_on, by WrapDrive otherwise.  @irq_lock protects @trigger
 * and @irq_masked.  @pin_lock protects @pins (iova pfn -> tagged struct
 * page *).
 */
struct wd_queue {
	struct vfio_device vdev;	/* must be first */
	struct mdev_device *mdev;
	struct wd_accel *accel;
	struct wd_mtype *mtype;
	struct list_head node;
	bool open;
	bool engine_on;
	bool dead;
	struct mm_struct *mm;
	struct wd_doorbell *db;		/* WD_REGION_DOORBELL */
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
	spinlock_t irq_lock;		/* see above */
	struct eventfd_ctx *trigger;
	bool irq_masked;
	struct mutex pin_lock;		/* pins */
	struct xarray pins;
	atomic64_t nr_pinned;
	void *priv;
	atomic64_t submitted;
	atomic64_t completed;
	atomic64_t errors;
	struct dentry *dbg;
};

static struct wd_queue *vdev_to_q(struct vfio_device *vdev)
{
	return container_of(vdev, struct wd_queue, vdev);
}

static struct wd_mtype *to_wd_mtype(struct mdev_type *mtype)
{
	return container_of(mtype, struct wd_mtype, type);
}

/* ---------------------------------------------------------------------- */
/* Accessors for drivers */

void *wd_accel_priv(struct wd_accel *accel)
{
	return accel->priv;
}
EXPORT_SYMBOL_GPL(wd_accel_priv);

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
	u32 used = q->cq_tail - cq_head;
	u32 room = used > q->entries ? 0 : q->entries - used;

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
	memcpy(&q->cq[q->cq_tail & (q->entries - 1)], cqe, sizeof(*cqe));
	q->cq_tail++;
	/* The CQE is visible before the new tail: pairs with the user's rmb. */
	smp_store_release(&q->hdr->cq_tail, q->cq_tail);
	atomic64_inc(&q->completed);
	if (cqe->status != WD_STS_OK)
		atomic64_inc(&q->errors);
}
EXPORT_SYMBOL_GPL(wd_queue_post);

static void wd_queue_signal(struct wd_queue *q, bool force)
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
	if (idle)
		q->status |= WD_Q_ENGINE_IDLE;
	else
		q->status &= ~WD_Q_ENGINE_IDLE;
	WRITE_ONCE(q->hdr->status, q->status);
}
EXPORT_SYMBOL_GPL(wd_queue_set_idle);

/* ---------------------------------------------------------------------- */
/* Data access: pinned IOVA pages (cached), or the owner's mm (SHARE_ALL) */

static bool wd_queue_is_sva(struct wd_queue *q)
{
	return q->mtype->capa->flags & WD_CAPA_SHARE_ALL;
}

static void wd_unpin_range(struct wd_queue *q, unsigned long first,
			   unsigned long last)
{
	unsigned long idx;
	void *entry;

	lockdep_assert_held(&q->pin_lock);
	xa_for_each_range(&q->pins, idx, entry, first, last) {
		vfio_unpin_pages(&q->vdev, (dma_addr_t)idx << PAGE_SHIFT, 1);
		xa_erase(&q->pins, idx);
		atomic64_dec(&q->nr_pinned);
		atomic64_dec(&wd_total_pinned);
	}
}

/*
 * Find or pin the page at @iova; NULL when the cache is full (the caller
 * falls back to vfio_dma_rw), ERR_PTR when the page is not shared.
 */
static struct page *wd_pin_page(struct wd_queue *q, u64 iova, bool write)
{
	unsigned long idx = iova >> PAGE_SHIFT;
	struct page *page;
	void *entry;
	int ret;

	lockdep_assert_held(&q->pin_lock);
	entry = xa_load(&q->pins, idx);
	if (entry) {
		if (write && !xa_pointer_tag(entry))
			return ERR_PTR(-EFAULT);
		return xa_untag_pointer(entry);
	}
	if (atomic64_read(&q->nr_pinned) >= WD_PIN_CACHE_MAX)
		return NULL;

	ret = vfio_pin_pages(&q->vdev, iova & PAGE_MASK, 1,
			     IOMMU_READ | IOMMU_WRITE, &page);
	if (ret == 1) {
		entry = xa_tag_pointer(page, 1);
	} else {
		if (write)
			return ERR_PTR(-EFAULT);
		ret = vfio_pin_pages(&q->vdev, iova & PAGE_MASK, 1, IOMMU_READ,
				     &page);
		if (ret != 1)
			return ERR_PTR(-EFAULT);
		entry = xa_tag_pointer(page, 0);
	}
	ret = xa_err(xa_store(&q->pins, idx, entry, GFP_KERNEL));
	if (ret) {
		vfio_unpin_pages(&q->vdev, iova & PAGE_MASK, 1);
		return ERR_PTR(ret);
	}
	atomic64_inc(&q->nr_pinned);
	atomic64_inc(&wd_total_pinned);
	return page;
}

static int wd_queue_rw_iova(struct wd_queue *q, u64 iova, void *buf,
			    size_t len, bool write)
{
	while (len) {
		size_t off = iova & ~PAGE_MASK;
		size_t n = min_t(size_t, len, PAGE_SIZE - off);
		struct page *page;
		int ret = 0;
		void *kaddr;

		mutex_lock(&q->pin_lock);
		page = wd_pin_page(q, iova, write);
		if (IS_ERR(page)) {
			ret = -EFAULT;
		} else if (page) {
			kaddr = kmap_local_page(page);
			if (write)
				memcpy(kaddr + off, buf, n);
			else
				memcpy(buf, kaddr + off, n);
			kunmap_local(kaddr);
		} else {
			ret = vfio_dma_rw(&q->vdev, iova, buf, n, write);
			if (ret)
				ret = -EFAULT;
		}
		mutex_unlock(&q->pin_lock);
		if (ret)
			return ret;
		iova += n;
		buf += n;
		len -= n;
	}
	return 0;
}

static bool wd_range_ok(u64 addr, size_t len)
{
	return len <= WD_MAX_LEN && addr + len >= addr;
}

int wd_queue_begin_access(struct wd_queue *q)
{
	if (!wd_queue_is_sva(q))
		return 0;
	if (!(current->flags & PF_KTHREAD) || current->mm)
		return -EINVAL;
	if (!mmget_not_zero(q->mm))
		return -EFAULT;
	kthread_use_mm(q->mm);
	return 0;
}
EXPORT_SYMBOL_GPL(wd_queue_begin_access);

void wd_queue_end_access(struct wd_queue *q)
{
	if (!wd_queue_is_sva(q) || current->mm != q->mm)
		return;
	kthread_unuse_mm(q->mm);
	mmput(q->mm);
}
EXPORT_SYMBOL_GPL(wd_queue_end_access);

int wd_queue_read(struct wd_queue *q, u64 addr, void *buf, size_t len)
{
	if (!wd_range_ok(addr, len))
		return -EFAULT;
	if (!len)
		return 0;
	if (wd_queue_is_sva(q)) {
		if (current->mm != q->mm)
			return -EFAULT;
		return copy_from_user(buf, u64_to_user_ptr(addr), len) ?
			-EFAULT : 0;
	}
	return wd_queue_rw_iova(q, addr, buf, len, false);
}
EXPORT_SYMBOL_GPL(wd_queue_read);

int wd_queue_write(struct wd_queue *q, u64 addr, const void *buf, size_t len)
{
	if (!wd_range_ok(addr, len))
		return -EFAULT;
	if (!len)
		return 0;
	if (wd_queue_is_sva(q)) {
		if (current->mm != q->mm)
			return -EFAULT;
		return copy_to_user(u64_to_user_ptr(addr), buf, len) ?
			-EFAULT : 0;
	}
	return wd_queue_rw_iova(q, addr, (void *)buf, len, true);
}
EXPORT_SYMBOL_GPL(wd_queue_write);

/* ---------------------------------------------------------------------- */
/* Queue state */

static void wd_queue_init_ring(struct wd_queue *q)
{
	struct wd_ring_hdr *hdr = q->hdr;

	memset(q->db, 0, PAGE_SIZE);
	memset(q->cqr, 0, q->cqr_size);
	memset(q->sq, 0, q->sq_size);
	hdr->magic = WD_RING_MAGIC;
	hdr->version = WD_ABI_VERSION;
	hdr->entries = q->entries;
	hdr->desc_size = sizeof(struct wd_desc);
	hdr->cqe_size = sizeof(struct wd_cqe);
	hdr->cq_off = (void *)q->cq - q->cqr;
	hdr->capa_flags = q->mtype->capa->flags;
	hdr->max_streams = 0;
	q->sq_head = 0;
	q->cq_tail = 0;
	q->status = 0;
}

static int wd_queue_start_locked(struct wd_queue *q)
{
	const struct wd_accel_ops *ops = q->accel->ops;
	int ret = 0;

	lockdep_assert_held(&q->accel->lock);
	if (ops->queue_open)
		ret = ops->queue_open(q);
	if (!ret)
		q->engine_on = true;
	return ret;
}

static void wd_queue_stop_locked(struct wd_queue *q)
{
	const struct wd_accel_ops *ops = q->accel->ops;

	lockdep_assert_held(&q->accel->lock);
	if (!q->engine_on)
		return;
	if (ops->queue_close)
		ops->queue_close(q);
	q->engine_on = false;
}

/*
 * Stop @q for good: WD_Q_DEAD (plus @why) in the status, the eventfd
 * signalled.  The mappings stay: the regions live until close_device, so a
 * user reads DEAD on its next look instead of faulting.
 */
static void wd_queue_kill_locked(struct wd_queue *q, u32 why)
{
	lockdep_assert_held(&q->accel->lock);
	wd_queue_stop_locked(q);
	WRITE_ONCE(q->dead, true);
	if (!q->open)
		return;
	q->status = (q->status & ~WD_Q_ENGINE_IDLE) | WD_Q_DEAD | why;
	WRITE_ONCE(q->hdr->status, q->status);
	/* DEAD is visible before the eventfd wakes the user. */
	smp_mb();
	wd_queue_signal(q, true);
}

static void wd_queue_free_regions(struct wd_queue *q)
{
	vfree(q->sq);
	vfree(q->cqr);
	vfree(q->db);
	q->sq = NULL;
	q->cqr = NULL;
	q->db = NULL;
}

static int wd_vfio_open(struct vfio_device *vdev)
{
	struct wd_queue *q = vdev_to_q(vdev);
	struct wd_accel *accel = q->accel;
	int ret;

	if (!current->mm)
		return -EINVAL;
	if (!try_module_get(accel->info.owner))
		return -ENODEV;

	q->entries = accel->info.ring_entries;
	q->sq_size = PAGE_ALIGN(q->entries * sizeof(struct wd_desc));
	q->cqr_size = PAGE_SIZE +
		      PAGE_ALIGN(q->entries * sizeof(struct wd_cqe));
	q->db = vmalloc_user(PAGE_SIZE);
	q->cqr = vmalloc_user(q->cqr_size);
	q->sq = vmalloc_user(q->sq_size);
	if (!q->db || !q->cqr || !q->sq) {
		ret = -ENOMEM;
		goto err_free;
	}
	q->hdr = q->cqr;
	q->cq = q->cqr + PAGE_SIZE;
	wd_queue_init_ring(q);
	q->irq_masked = false;
	q->trigger = NULL;

	mutex_lock(&accel->lock);
	if (accel->dead) {
		ret = -ENODEV;
		goto err_unlock;
	}
	q->mm = current->mm;
	mmgrab(q->mm);
	q->dead = false;
	q->open = true;
	ret = wd_queue_start_locked(q);
	if (ret) {
		q->open = false;
		mmdrop(q->mm);
		q->mm = NULL;
		goto err_unlock;
	}
	mutex_unlock(&accel->lock);
	return 0;

err_unlock:
	mutex_unlock(&accel->lock);
err_free:
	wd_queue_free_regions(q);
	module_put(accel->info.owner);
	return ret;
}

static void wd_vfio_close(struct vfio_device *vdev)
{
	struct wd_queue *q = vdev_to_q(vdev);
	struct wd_accel *accel = q->accel;
	struct eventfd_ctx *trigger;
	unsigned long flags;

	mutex_lock(&accel->lock);
	wd_queue_stop_locked(q);
	q->open = false;
	mutex_unlock(&accel->lock);

	mutex_lock(&q->pin_lock);
	wd_unpin_range(q, 0, ULONG_MAX);
	mutex_unlock(&q->pin_lock);

	spin_lock_irqsave(&q->irq_lock, flags);
	trigger = q->trigger;
	q->trigger = NULL;
	spin_unlock_irqrestore(&q->irq_lock, flags);
	if (trigger)
		eventfd_ctx_put(trigger);

	wd_queue_free_regions(q);
	mmdrop(q->mm);
	q->mm = NULL;
	module_put(accel->info.owner);
}

static void wd_vfio_release(struct vfio_device *vdev)
{
	struct wd_queue *q = vdev_to_q(vdev);

	mutex_destroy(&q->pin_lock);
	xa_destroy(&q->pins);
	wd_vfio_free_device(vdev);
}

static void wd_vfio_dma_unmap(struct vfio_device *vdev, u64 iova, u64 length)
{
	struct wd_queue *q = vdev_to_q(vdev);

	if (!length || iova + length - 1 < iova)
		return;
	mutex_lock(&q->pin_lock);
	wd_unpin_range(q, iova >> PAGE_SHIFT, (iova + length - 1) >> PAGE_SHIFT);
	mutex_unlock(&q->pin_lock);
}

/* Removal waits for the user: the queue dies, and asks to be released. */
static void wd_vfio_request(struct vfio_device *vdev, unsigned int count)
{
	struct wd_queue *q = vdev_to_q(vdev);

	if (count == 0)
		dev_info(vdev->dev, "device removal requested, waiting for user to release the queue\n");
	mutex_lock(&q->accel->lock);
	wd_queue_kill_locked(q, WD_Q_RELEASE);
	mutex_unlock(&q->accel->lock);
}

/* Common checks of every fd operation. */
static int wd_queue_check_caller(struct wd_queue *q)
{
	if (READ_ONCE(q->dead))
		return -ENODEV;
	if (current->mm != q->mm)
		return -EPERM;
	return 0;
}

/* ---------------------------------------------------------------------- */
/* ioctl */

static int wd_ioctl_get_info(struct wd_queue *q, void __user *arg)
{
	struct vfio_device_info info;
	unsigned long minsz = offsetofend(struct vfio_device_info, num_irqs);

	if (copy_from_user(&info, arg, minsz))
		return -EFAULT;
	if (info.argsz < minsz)
		return -EINVAL;
	info.flags = VFIO_DEVICE_FLAGS_PLATFORM | VFIO_DEVICE_FLAGS_RESET;
	info.num_regions = WD_NUM_REGIONS;
	info.num_irqs = WD_NUM_IRQS;
	return copy_to_user(arg, &info, minsz) ? -EFAULT : 0;
}

static size_t wd_region_size(struct wd_queue *q, unsigned int index)
{
	switch (index) {
	case WD_REGION_DOORBELL:
		return PAGE_SIZE;
	case WD_REGION_CQ:
		return q->cqr_size;
	default:
		return q->sq_size;
	}
}

/* The device-written region is read-only to user space. */
static bool wd_region_writable(unsigned int index)
{
	return index != WD_REGION_CQ;
}

static int wd_ioctl_region_info(struct wd_queue *q, void __user *arg)
{
	struct vfio_region_info info;
	unsigned long minsz = offsetofend(struct vfio_region_info, offset);

	if (copy_from_user(&info, arg, minsz))
		return -EFAULT;
	if (info.argsz < minsz)
		return -EINVAL;
	if (info.index >= WD_NUM_REGIONS)
		return -EINVAL;
	info.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_MMAP;
	if (wd_region_writable(info.index))
		info.flags |= VFIO_REGION_INFO_FLAG_WRITE;
	info.cap_offset = 0;
	info.size = wd_region_size(q, info.index);
	info.offset = WD_REGION_OFFSET(info.index);
	return copy_to_user(arg, &info, minsz) ? -EFAULT : 0;
}

static int wd_ioctl_irq_info(struct wd_queue *q, void __user *arg)
{
	struct vfio_irq_info info;
	unsigned long minsz = offsetofend(struct vfio_irq_info, count);

	if (copy_from_user(&info, arg, minsz))
		return -EFAULT;
	if (info.argsz < minsz)
		return -EINVAL;
	if (info.index >= WD_NUM_IRQS)
		return -EINVAL;
	info.flags = VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE;
	info.count = 1;
	return copy_to_user(arg, &info, minsz) ? -EFAULT : 0;
}

static int wd_set_trigger(struct wd_queue *q, int fd)
{
	struct eventfd_ctx *new = NULL, *old;
	unsigned long flags;

	if (fd >= 0) {
		new = eventfd_ctx_fdget(fd);
		if (IS_ERR(new))
			return PTR_ERR(new);
	} else if (fd != -1) {
		return -EINVAL;
	}
	spin_lock_irqsave(&q->irq_lock, flags);
	old = q->trigger;
	q->trigger = new;
	spin_unlock_irqrestore(&q->irq_lock, flags);
	if (old)
		eventfd_ctx_put(old);
	return 0;
}

static void wd_set_masked(struct wd_queue *q, bool masked)
{
	unsigned long flags;

	spin_lock_irqsave(&q->irq_lock, flags);
	q->irq_masked = masked;
	spin_unlock_irqrestore(&q->irq_lock, flags);
	/* A request that arrived while masked is served at unmask. */
	if (!masked && READ_ONCE(q->hdr->cq_tail) != READ_ONCE(q->db->cq_head))
		wd_queue_notify(q);
}

static int wd_ioctl_set_irqs(struct wd_queue *q, void __user *arg)
{
	unsigned long minsz = offsetofend(struct vfio_irq_set, count);
	struct vfio_irq_set hdr;
	size_t data_size = 0;
	u8 *data = NULL;
	int ret = 0;
	u32 action;
	u32 type;

	if (copy_from_user(&hdr, arg, minsz))
		return -EFAULT;
	ret = vfio_set_irqs_validate_and_prepare(&hdr, WD_NUM_IRQS,
						 WD_NUM_IRQS, &data_size);
	if (ret)
		return ret;
	if (data_size) {
		data = memdup_user(arg + minsz, data_size);
		if (IS_ERR(data))
			return PTR_ERR(data);
	}
	action = hdr.flags & VFIO_IRQ_SET_ACTION_TYPE_MASK;
	type = hdr.flags & VFIO_IRQ_SET_DATA_TYPE_MASK;

	switch (action) {
	case VFIO_IRQ_SET_ACTION_TRIGGER:
		if (type == VFIO_IRQ_SET_DATA_EVENTFD) {
			ret = hdr.count ? wd_set_trigger(q, *(s32 *)data) :
					  wd_set_trigger(q, -1);
		} else if (type == VFIO_IRQ_SET_DATA_NONE) {
			if (!hdr.count)
				ret = wd_set_trigger(q, -1);
			else
				wd_queue_signal(q, true);
		} else if (hdr.count && *data) {
			wd_queue_signal(q, true);
		}
		break;
	case VFIO_IRQ_SET_ACTION_MASK:
	case VFIO_IRQ_SET_ACTION_UNMASK:
		if (type == VFIO_IRQ_SET_DATA_EVENTFD) {
			ret = -EINVAL;
			break;
		}
		if (!hdr.count)
			break;
		if (type == VFIO_IRQ_SET_DATA_BOOL && !*data)
			break;
		wd_set_masked(q, action == VFIO_IRQ_SET_ACTION_MASK);
		break;
	default:
		ret = -EINVAL;
	}
	kfree(data);
	return ret;
}

static int wd_ioctl_reset(struct wd_queue *q)
{
	struct wd_accel *accel = q->accel;
	int ret;

	mutex_lock(&accel->lock);
	if (q->dead) {
		ret = -ENODEV;
		goto out;
	}
	wd_queue_stop_locked(q);
	wd_queue_init_ring(q);
	ret = wd_queue_start_locked(q);
out:
	mutex_unlock(&accel->lock);
	return ret;
}

static long wd_vfio_ioctl(struct vfio_device *vdev, unsigned int cmd,
			  unsigned long arg)
{
	struct wd_queue *q = vdev_to_q(vdev);
	void __user *uarg = (void __user *)arg;
	int ret = wd_queue_check_caller(q);

	if (ret)
		return ret;
	switch (cmd) {
	case VFIO_DEVICE_GET_INFO:
		return wd_ioctl_get_info(q, uarg);
	case VFIO_DEVICE_GET_REGION_INFO:
		return wd_ioctl_region_info(q, uarg);
	case VFIO_DEVICE_GET_IRQ_INFO:
		return wd_ioctl_irq_info(q, uarg);
	case VFIO_DEVICE_SET_IRQS:
		return wd_ioctl_set_irqs(q, uarg);
	case VFIO_DEVICE_RESET:
		return wd_ioctl_reset(q);
	}
	return -ENOTTY;
}

/* ---------------------------------------------------------------------- */
/* read / write / mmap */

static void *wd_region_base(struct wd_queue *q, unsigned int index)
{
	switch (index) {
	case WD_REGION_DOORBELL:
		return q->db;
	case WD_REGION_CQ:
		return q->cqr;
	default:
		return q->sq;
	}
}

static ssize_t wd_vfio_rw(struct wd_queue *q, char __user *ubuf, size_t count,
			  loff_t *ppos, bool write)
{
	u64 pos = *ppos;
	unsigned int index = pos >> WD_REGION_SHIFT;
	u64 off = pos & WD_REGION_MASK;
	size_t size;
	void *base;
	int ret = wd_queue_check_caller(q);

	if (ret)
		return ret;
	if (index >= WD_NUM_REGIONS)
		return -EINVAL;
	size = wd_region_size(q, index);
	if (off >= size || count > size - off)
		return -EINVAL;
	base = wd_region_base(q, index);
	if (write && !wd_region_writable(index))
		return -EINVAL;
	if (write) {
		/* Registers are 32-bit: aligned, whole-word accesses only. */
		if (index == WD_REGION_DOORBELL && ((off | count) & 3))
			return -EINVAL;
		if (copy_from_user(base + off, ubuf, count))
			return -EFAULT;
		if (index == WD_REGION_DOORBELL && off == 0 && q->accel->ops->kick)
			q->accel->ops->kick(q);
	} else if (copy_to_user(ubuf, base + off, count)) {
		return -EFAULT;
	}
	*ppos += count;
	return count;
}

static ssize_t wd_vfio_read(struct vfio_device *vdev, char __user *buf,
			    size_t count, loff_t *ppos)
{
	return wd_vfio_rw(vdev_to_q(vdev), buf, count, ppos, false);
}

static ssize_t wd_vfio_write(struct vfio_device *vdev, const char __user *buf,
			     size_t count, loff_t *ppos)
{
	return wd_vfio_rw(vdev_to_q(vdev), (char __user *)buf, count, ppos,
			  true);
}

static int wd_vm_may_split(struct vm_area_struct *vma, unsigned long addr)
{
	return -EINVAL;
}

/*
 * Populate on demand.  The regions outlive every mapping of them (a vma
 * holds the device file, close_device frees them), dead queue or not.
 */
static vm_fault_t wd_vm_fault(struct vm_fault *vmf)
{
	struct vm_area_struct *vma = vmf->vma;
	struct wd_queue *q = vma->vm_private_data;
	unsigned int index = vmf->pgoff >> (WD_REGION_SHIFT - PAGE_SHIFT);
	u64 off = (u64)vmf->pgoff << PAGE_SHIFT & WD_REGION_MASK;

	if (index >= WD_NUM_REGIONS || off >= wd_region_size(q, index))
		return VM_FAULT_SIGBUS;
	return vmf_insert_pfn(vma, vmf->address,
			      vmalloc_to_pfn(wd_region_base(q, index) + off));
}

static const struct vm_operations_struct wd_vm_ops = {
	.may_split = wd_vm_may_split,
	.fault = wd_vm_fault,
};

static int wd_vfio_mmap(struct vfio_device *vdev, struct vm_area_struct *vma)
{
	struct wd_queue *q = vdev_to_q(vdev);
	u64 pos = (u64)vma->vm_pgoff << PAGE_SHIFT;
	unsigned int index = pos >> WD_REGION_SHIFT;
	u64 off = pos & WD_REGION_MASK;
	unsigned long len = vma->vm_end - vma->vm_start;
	int ret = wd_queue_check_caller(q);

	if (ret)
		return ret;
	if (vma->vm_pgoff > (U64_MAX >> PAGE_SHIFT) ||
	    index >= WD_NUM_REGIONS)
		return -EINVAL;
	if (off >= wd_region_size(q, index) ||
	    len > wd_region_size(q, index) - off)
		return -EINVAL;
	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	if (!wd_region_writable(index)) {
		if (vma->vm_flags & VM_WRITE)
			return -EACCES;
		wd_vm_flags_clear(vma, VM_MAYWRITE);
	}

	wd_vm_flags_set(vma, VM_PFNMAP | VM_DONTCOPY | VM_DONTEXPAND |
			VM_DONTDUMP);
	vma->vm_ops = &wd_vm_ops;
	vma->vm_private_data = q;
	return 0;
}

static const struct vfio_device_ops wd_vfio_ops = {
	.name = "wrapdrive",
	.release = wd_vfio_release,
	.open_device = wd_vfio_open,
	.close_device = wd_vfio_close,
	.read = wd_vfio_read,
	.write = wd_vfio_write,
	.ioctl = wd_vfio_ioctl,
	.mmap = wd_vfio_mmap,
	.request = wd_vfio_request,
	.dma_unmap = wd_vfio_dma_unmap,
	WD_VFIO_IOMMUFD_OPS
};

/* ---------------------------------------------------------------------- */
/* debugfs */

static int wd_dbg_atomic64_get(void *data, u64 *val)
{
	*val = atomic64_read(data);
	return 0;
}
DEFINE_DEBUGFS_ATTRIBUTE(wd_dbg_atomic64_fops, wd_dbg_atomic64_get, NULL,
			 "%llu\n");

static void wd_dbg_counter(const char *name, struct dentry *dir,
			   atomic64_t *val)
{
	debugfs_create_file_unsafe(name, 0444, dir, val, &wd_dbg_atomic64_fops);
}

static ssize_t wd_selfbench_read(struct file *file, char __user *ubuf,
				 size_t count, loff_t *ppos)
{
	struct wd_accel *accel = file->private_data;
	char buf[sizeof(accel->bench_result)];
	ssize_t ret;

	mutex_lock(&accel->bench_lock);
	strscpy(buf, accel->bench_result, sizeof(buf));
	mutex_unlock(&accel->bench_lock);
	ret = simple_read_from_buffer(ubuf, count, ppos, buf, strlen(buf));
	return ret;
}

static ssize_t wd_selfbench_write(struct file *file, const char __user *ubuf,
				  size_t count, loff_t *ppos)
{
	struct wd_accel *accel = file->private_data;
	char buf[64], algo[16];
	u32 size, cnt;
	u64 nsec = 0;
	int ret;

	if (!accel->ops->selfbench)
		return -EOPNOTSUPP;
	if (*ppos || count >= sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, count))
		return -EFAULT;
	buf[count] = '\0';
	if (sscanf(buf, "%15s %u %u", algo, &size, &cnt) != 3)
		return -EINVAL;
	if (size > WD_MAX_LEN || !cnt || cnt > 1000000)
		return -EINVAL;

	mutex_lock(&accel->bench_lock);
	ret = accel->ops->selfbench(accel, algo, size, cnt, &nsec);
	if (!ret)
		snprintf(accel->bench_result, sizeof(accel->bench_result),
			 "%s %u %u %llu\n", algo, size, cnt, nsec);
	mutex_unlock(&accel->bench_lock);
	return ret ? ret : count;
}

static const struct file_operations wd_selfbench_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.read = wd_selfbench_read,
	.write = wd_selfbench_write,
	.llseek = default_llseek,
};

static void wd_queue_debugfs_init(struct wd_queue *q)
{
	q->dbg = debugfs_create_dir(dev_name(mdev_dev(q->mdev)), q->accel->dbg);
	wd_dbg_counter("submitted", q->dbg, &q->submitted);
	wd_dbg_counter("completed", q->dbg, &q->completed);
	wd_dbg_counter("errors", q->dbg, &q->errors);
	wd_dbg_counter("pinned_pages", q->dbg, &q->nr_pinned);
}

/* ---------------------------------------------------------------------- */
/* mdev driver */

static int wd_mdev_probe(struct mdev_device *mdev)
{
	struct wd_mtype *mt = to_wd_mtype(mdev->type);
	struct wd_accel *accel = mt->accel;
	struct wd_queue *q;
	int ret = 0;

	mutex_lock(&accel->lock);
	if (accel->dead)
		ret = -ENODEV;
	else if (accel->nr_queues >= accel->info.max_queues ||
		 (mt->capa->max_queues && mt->nr_queues >= mt->capa->max_queues))
		ret = -EUSERS;
	if (!ret) {
		accel->nr_queues++;
		mt->nr_queues++;
	}
	mutex_unlock(&accel->lock);
	if (ret)
		return ret;

	q = vfio_alloc_device(wd_queue, vdev, &mdev->dev, &wd_vfio_ops);
	if (IS_ERR(q)) {
		ret = PTR_ERR(q);
		goto err_count;
	}
	q->mdev = mdev;
	q->accel = accel;
	q->mtype = mt;
	spin_lock_init(&q->irq_lock);
	mutex_init(&q->pin_lock);
	xa_init(&q->pins);
	INIT_LIST_HEAD(&q->node);

	ret = vfio_register_emulated_iommu_dev(&q->vdev);
	if (ret)
		goto err_put;
	dev_set_drvdata(&mdev->dev, q);
	wd_queue_debugfs_init(q);
	mutex_lock(&accel->lock);
	list_add_tail(&q->node, &accel->queues);
	mutex_unlock(&accel->lock);
	return 0;

err_put:
	vfio_put_device(&q->vdev);
err_count:
	mutex_lock(&accel->lock);
	accel->nr_queues--;
	mt->nr_queues--;
	mutex_unlock(&accel->lock);
	return ret;
}

static void wd_mdev_remove(struct mdev_device *mdev)
{
	struct wd_queue *q = dev_get_drvdata(&mdev->dev);
	struct wd_accel *accel = q->accel;

	vfio_unregister_group_dev(&q->vdev);
	debugfs_remove_recursive(q->dbg);
	mutex_lock(&accel->lock);
	list_del(&q->node);
	accel->nr_queues--;
	q->mtype->nr_queues--;
	mutex_unlock(&accel->lock);
	vfio_put_device(&q->vdev);
}

static unsigned int wd_mdev_get_available(struct mdev_type *mtype)
{
	struct wd_mtype *mt = to_wd_mtype(mtype);
	struct wd_accel *accel = mt->accel;
	unsigned int avail;

	mutex_lock(&accel->lock);
	avail = accel->info.max_queues - accel->nr_queues;
	if (mt->capa->max_queues)
		avail = min(avail, mt->capa->max_queues - mt->nr_queues);
	if (accel->dead)
		avail = 0;
	mutex_unlock(&accel->lock);
	return avail;
}

static ssize_t wd_mdev_show_description(struct mdev_type *mtype, char *buf)
{
	struct wd_mtype *mt = to_wd_mtype(mtype);

	return sysfs_emit(buf, "WrapDrive queue: %s, flags 0x%08x, %u entries\n",
			  mt->capa->algo_type, mt->capa->flags,
			  mt->accel->info.ring_entries);
}

static struct mdev_driver wd_mdev_driver = {
	.device_api = VFIO_DEVICE_API_PLATFORM_STRING,
	.driver = {
		.name = "wrapdrive_mdev",
		.owner = THIS_MODULE,
		.mod_name = KBUILD_MODNAME,
	},
	.probe = wd_mdev_probe,
	.remove = wd_mdev_remove,
	.get_available = wd_mdev_get_available,
	.show_description = wd_mdev_show_description,
};

/* ---------------------------------------------------------------------- */
/* sysfs: type capabilities, parent numa_zone and priority */

static ssize_t algo_type_show(struct mdev_type *mtype,
			      struct wd_mdev_type_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%s\n", to_wd_mtype(mtype)->capa->algo_type);
}
static WD_MDEV_TYPE_ATTR_RO(algo_type);

static ssize_t flags_show(struct mdev_type *mtype,
			  struct wd_mdev_type_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "0x%08x\n", to_wd_mtype(mtype)->capa->flags);
}
static WD_MDEV_TYPE_ATTR_RO(flags);

static struct attribute *wd_capa_attrs[] = {
	&wd_mdev_type_attr_algo_type.attr,
	&wd_mdev_type_attr_flags.attr,
	NULL,
};

static const struct attribute_group wd_capa_group = {
	.name = "capabilities",
	.attrs = wd_capa_attrs,
};

/* The accelerator of a parent device; NULL if it is going away. */
static struct wd_accel *wd_accel_of(struct device *dev)
{
	struct wd_accel *accel;

	lockdep_assert_held(&wd_accels_lock);
	list_for_each_entry(accel, &wd_accels, node)
		if (accel->dev == dev)
			return accel;
	return NULL;
}

static ssize_t numa_zone_show(struct device *dev,
			      struct device_attribute *attr, char *buf)
{
	struct wd_accel *accel;
	ssize_t ret = -ENODEV;

	mutex_lock(&wd_accels_lock);
	accel = wd_accel_of(dev);
	if (accel)
		ret = sysfs_emit(buf, "%d\n", accel->info.numa_zone);
	mutex_unlock(&wd_accels_lock);
	return ret;
}
static DEVICE_ATTR_RO(numa_zone);

static ssize_t priority_show(struct device *dev,
			     struct device_attribute *attr, char *buf)
{
	struct wd_accel *accel;
	ssize_t ret = -ENODEV;

	mutex_lock(&wd_accels_lock);
	accel = wd_accel_of(dev);
	if (accel)
		ret = sysfs_emit(buf, "%d\n", READ_ONCE(accel->priority));
	mutex_unlock(&wd_accels_lock);
	return ret;
}

static ssize_t priority_store(struct device *dev,
			      struct device_attribute *attr, const char *buf,
			      size_t count)
{
	struct wd_accel *accel;
	ssize_t ret;
	int val;

	ret = kstrtoint(buf, 10, &val);
	if (ret)
		return ret;
	mutex_lock(&wd_accels_lock);
	accel = wd_accel_of(dev);
	if (accel)
		WRITE_ONCE(accel->priority, val);
	mutex_unlock(&wd_accels_lock);
	return accel ? count : -ENODEV;
}
static DEVICE_ATTR_RW(priority);

static struct attribute *wd_parent_attrs[] = {
	&dev_attr_numa_zone.attr,
	&dev_attr_priority.attr,
	NULL,
};

static const struct attribute_group wd_parent_group = {
	.attrs = wd_parent_attrs,
};

/* ---------------------------------------------------------------------- */
/* Registration */

static int wd_check_info(struct device *parent,
			 const struct wd_accel_info *info)
{
	unsigned int i, j;

	if (!parent || !info || !info->name || !info->capas ||
	    !info->nr_capas || info->nr_capas > WD_MAX_CAPAS)
		return -EINVAL;
	if (!info->max_queues || info->max_queues > WD_MAX_QUEUES)
		return -EINVAL;
	if (info->ring_entries < 2 || info->ring_entries > 65536 ||
	    !is_power_of_2(info->ring_entries))
		return -EINVAL;
	for (i = 0; i < info->nr_capas; i++) {
		const struct wd_capa *c = &info->capas[i];

		if (!c->sysfs_name || !c->algo_type || !*c->sysfs_name)
			return -EINVAL;
		for (j = 0; j < i; j++)
			if (!strcmp(c->sysfs_name, info->capas[j].sysfs_name))
				return -EEXIST;
	}
	return 0;
}

static void wd_accel_free(struct wd_accel *accel)
{
	unsigned int i;

	for (i = 0; i < accel->info.nr_capas; i++)
		kfree(accel->mtypes[i].type.pretty_name);
	kfree(accel->types);
	kfree(accel->mtypes);
	kfree(accel->capas);
	mutex_destroy(&accel->lock);
	mutex_destroy(&accel->bench_lock);
	kfree(accel);
}

static void wd_accel_remove_capa_groups(struct wd_accel *accel)
{
	unsigned int i;

	for (i = 0; i < accel->info.nr_capas; i++) {
		if (!accel->mtypes[i].group_added)
			continue;
		sysfs_remove_group(&accel->types[i]->kobj, &wd_capa_group);
		accel->mtypes[i].group_added = false;
	}
}

struct wd_accel *wd_register_accel(struct device *parent,
				   const struct wd_accel_info *info,
				   const struct wd_accel_ops *ops, void *priv)
{
	struct wd_accel *accel;
	unsigned int i;
	int ret;

	if (!ops)
		return ERR_PTR(-EINVAL);
	ret = wd_check_info(parent, info);
	if (ret)
		return ERR_PTR(ret);

	accel = kzalloc(sizeof(*accel), GFP_KERNEL);
	if (!accel)
		return ERR_PTR(-ENOMEM);
	accel->dev = parent;
	accel->info = *info;
	accel->ops = ops;
	accel->priv = priv;
	accel->priority = info->priority;
	mutex_init(&accel->lock);
	mutex_init(&accel->bench_lock);
	INIT_LIST_HEAD(&accel->queues);
	atomic64_set(&accel->busy_ns, 0);

	accel->capas = kmemdup(info->capas, info->nr_capas * sizeof(*info->capas),
			       GFP_KERNEL);
	accel->mtypes = kcalloc(info->nr_capas, sizeof(*accel->mtypes),
				GFP_KERNEL);
	accel->types = kcalloc(info->nr_capas, sizeof(*accel->types),
			       GFP_KERNEL);
	if (!accel->capas || !accel->mtypes || !accel->types) {
		ret = -ENOMEM;
		goto err_free;
	}
	accel->info.capas = accel->capas;
	for (i = 0; i < info->nr_capas; i++) {
		struct wd_mtype *mt = &accel->mtypes[i];

		mt->accel = accel;
		mt->capa = &accel->capas[i];
		mt->type.sysfs_name = mt->capa->sysfs_name;
		mt->type.pretty_name = kasprintf(GFP_KERNEL, "%s %s", info->name,
						 mt->capa->sysfs_name);
		if (!mt->type.pretty_name) {
			ret = -ENOMEM;
			goto err_free;
		}
		accel->types[i] = &mt->type;
	}

	mutex_lock(&wd_accels_lock);
	if (wd_accel_of(parent)) {
		mutex_unlock(&wd_accels_lock);
		ret = -EEXIST;
		goto err_free;
	}
	list_add_tail(&accel->node, &wd_accels);
	mutex_unlock(&wd_accels_lock);

	accel->dbg = debugfs_create_dir(dev_name(parent), wd_debugfs_root);
	wd_dbg_counter("busy_ns", accel->dbg, &accel->busy_ns);
	debugfs_create_file("selfbench", 0600, accel->dbg, accel,
			    &wd_selfbench_fops);

	ret = device_add_group(parent, &wd_parent_group);
	if (ret)
		goto err_list;
	ret = mdev_register_parent(&accel->parent, parent, &wd_mdev_driver,
				   accel->types, info->nr_capas);
	if (ret)
		goto err_group;
	for (i = 0; i < info->nr_capas; i++) {
		ret = sysfs_create_group(&accel->types[i]->kobj, &wd_capa_group);
		if (ret)
			goto err_parent;
		accel->mtypes[i].group_added = true;
	}
	dev_info(parent, "WrapDrive: %u capabilities, %u queues of %u entries\n",
		 info->nr_capas, info->max_queues, info->ring_entries);
	return accel;

err_parent:
	wd_accel_remove_capa_groups(accel);
	mdev_unregister_parent(&accel->parent);
err_group:
	device_remove_group(parent, &wd_parent_group);
err_list:
	debugfs_remove_recursive(accel->dbg);
	mutex_lock(&wd_accels_lock);
	list_del(&accel->node);
	mutex_unlock(&wd_accels_lock);
err_free:
	wd_accel_free(accel);
	return ERR_PTR(ret);
}
EXPORT_SYMBOL_GPL(wd_register_accel);

void wd_unregister_accel(struct wd_accel *accel)
{
	struct wd_queue *q;

	if (IS_ERR_OR_NULL(accel))
		return;

	mutex_lock(&accel->lock);
	accel->dead = true;
	list_for_each_entry(q, &accel->queues, node)
		wd_queue_kill_locked(q, 0);
	mutex_unlock(&accel->lock);

	wd_accel_remove_capa_groups(accel);
	/* Waits for user space to close every queue. */
	mdev_unregister_parent(&accel->parent);
	device_remove_group(accel->dev, &wd_parent_group);
	debugfs_remove_recursive(accel->dbg);
	mutex_lock(&wd_accels_lock);
	list_del(&accel->node);
	mutex_unlock(&wd_accels_lock);
	wd_accel_free(accel);
}
EXPORT_SYMBOL_GPL(wd_unregister_accel);

static int __init wd_init(void)
{
	int ret;

	wd_debugfs_root = debugfs_create_dir("wrapdrive", NULL);
	wd_dbg_counter("pinned_pages", wd_debugfs_root, &wd_total_pinned);
	ret = mdev_register_driver(&wd_mdev_driver);
	if (ret)
		debugfs_remove_recursive(wd_debugfs_root);
	return ret;
}

static void __exit wd_exit(void)
{
	mdev_unregister_driver(&wd_mdev_driver);
	debugfs_remove_recursive(wd_debugfs_root);
}

module_init(wd_init);
module_exit(wd_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("WrapDrive: accelerator queues for user space over vfio-mdev");
MODULE_SOFTDEP("pre: vfio mdev vfio_iommu_type1");
