// SPDX-License-Identifier: GPL-2.0
/*
 * WrapDrive core: a queue as a VFIO device.  Open and close, the ioctls
 * (each through a small helper with the usual argsz check), pread/pwrite
 * and mmap of the three regions, the removal request, type1's dma_unmap
 * callback, and the owner's address space: a queue belongs to the mm that
 * opened it and dies when that mm exits, whoever still holds the fd.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/eventfd.h>
#include <linux/mm.h>
#include <linux/mmu_notifier.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#include "wd_internal.h"
#include "wd_compat.h"

/* ---------------------------------------------------------------------- */
/* The owner's address space */

/*
 * struct wd_mm_watch - the mmu notifier of an owner's mm, one per mm
 * (mmu_notifier_get()), shared by all the queues that mm opened.  The mmu
 * notifier core frees it (free_notifier, after SRCU) once the last queue
 * put it.
 * Locking: @lock protects @queues (wd_queue.mm_node).
 */
struct wd_mm_watch {
	struct mmu_notifier mn;
	spinlock_t lock;		/* queues */
	struct list_head queues;
};

static struct mmu_notifier *wd_mm_alloc(struct mm_struct *mm)
{
	struct wd_mm_watch *w = kzalloc(sizeof(*w), GFP_KERNEL);

	if (!w)
		return ERR_PTR(-ENOMEM);
	spin_lock_init(&w->lock);
	INIT_LIST_HEAD(&w->queues);
	return &w->mn;
}

static void wd_mm_free(struct mmu_notifier *mn)
{
	kfree(container_of(mn, struct wd_mm_watch, mn));
}

/*
 * The owner's mm is being torn down (exit_mmap, before anything is
 * unmapped).  This can run under locks of whoever dropped the last mm
 * reference, vfio type1's iommu->lock among them: only queue the work.
 */
static void wd_mm_release(struct mmu_notifier *mn, struct mm_struct *mm)
{
	struct wd_mm_watch *w = container_of(mn, struct wd_mm_watch, mn);
	struct wd_queue *q;

	spin_lock(&w->lock);
	list_for_each_entry(q, &w->queues, mm_node)
		queue_work(wd_wq, &q->mm_exit_work);
	spin_unlock(&w->lock);
}

static const struct mmu_notifier_ops wd_mm_ops = {
	.release = wd_mm_release,
	.alloc_notifier = wd_mm_alloc,
	.free_notifier = wd_mm_free,
};

/* The owner is gone: the queue dies and lets go of every page it holds. */
static void wd_mm_exited(struct work_struct *work)
{
	struct wd_queue *q = container_of(work, struct wd_queue, mm_exit_work);

	mutex_lock(&q->lock);
	wd_queue_kill_locked(q, 0);
	mutex_unlock(&q->lock);
	dev_dbg(mdev_dev(q->mdev), "owner's address space exited: queue dead\n");
}

static int wd_mm_watch(struct wd_queue *q)
{
	struct mmu_notifier *mn = mmu_notifier_get(&wd_mm_ops, q->mm);
	struct wd_mm_watch *w;

	if (IS_ERR(mn))
		return PTR_ERR(mn);
	w = container_of(mn, struct wd_mm_watch, mn);
	spin_lock(&w->lock);
	list_add(&q->mm_node, &w->queues);
	spin_unlock(&w->lock);
	q->mm_watch = w;
	return 0;
}

/* Before close: no exit work queued or running afterwards. */
static void wd_mm_unwatch(struct wd_queue *q)
{
	struct wd_mm_watch *w = q->mm_watch;

	spin_lock(&w->lock);
	list_del_init(&q->mm_node);
	spin_unlock(&w->lock);
	cancel_work_sync(&q->mm_exit_work);
	mmu_notifier_put(&w->mn);
	q->mm_watch = NULL;
}

/* ---------------------------------------------------------------------- */
/* Regions and mappings */

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

/* The device-written region is read-only to user space. */
static bool wd_region_writable(unsigned int index)
{
	return index != WD_REGION_CQ;
}

static int wd_vm_may_split(struct vm_area_struct *vma, unsigned long addr)
{
	return -EINVAL;
}

/*
 * Populate on demand.  The regions outlive every mapping of them (a vma
 * holds the device file, close frees them), dead queue or not.  The
 * doorbell shows @db_pfn: WrapDrive's page, the driver's, or after the
 * driver let its page go, the scratch page.
 */
static vm_fault_t wd_vm_fault(struct vm_fault *vmf)
{
	struct vm_area_struct *vma = vmf->vma;
	struct wd_queue *q = vma->vm_private_data;
	u64 pos = (u64)vmf->pgoff << PAGE_SHIFT;
	unsigned int index = pos >> WD_REGION_SHIFT;
	u64 off = pos & WD_REGION_MASK;
	pgprot_t prot;
	vm_fault_t ret;

	if (index >= WD_NUM_REGIONS || off >= wd_region_size(q, index))
		return VM_FAULT_SIGBUS;
	if (index != WD_REGION_DOORBELL)
		return vmf_insert_pfn(vma, vmf->address,
				      vmalloc_to_pfn(wd_region_base(q, index) +
						     off));
	mutex_lock(&q->map_lock);
	prot = q->db_uncached ? pgprot_noncached(vma->vm_page_prot) :
				vma->vm_page_prot;
	ret = vmf_insert_pfn_prot(vma, vmf->address, q->db_pfn, prot);
	mutex_unlock(&q->map_lock);
	return ret;
}

static const struct vm_operations_struct wd_vm_ops = {
	.may_split = wd_vm_may_split,
	.fault = wd_vm_fault,
};

/* Drop the doorbell PTEs of every mapping of @q in @mm (mmap_lock held). */
static void wd_zap_doorbell(struct wd_queue *q, struct mm_struct *mm)
{
	VMA_ITERATOR(vmi, mm, 0);
	struct vm_area_struct *vma;

	/*
	 * Not mmap_assert_locked(): under CONFIG_DEBUG_VM it calls dump_mm(),
	 * which 6.1 does not export: the module would not link.
	 */
	lockdep_assert_held(&mm->mmap_lock);
	lockdep_assert_held(&q->map_lock);
	for_each_vma(vmi, vma) {
		if (vma->vm_ops == &wd_vm_ops && vma->vm_private_data == q &&
		    vma->vm_pgoff ==
		    WD_REGION_OFFSET(WD_REGION_DOORBELL) >> PAGE_SHIFT)
			zap_vma_ptes(vma, vma->vm_start, PAGE_SIZE);
	}
}

/*
 * Point user mappings of the doorbell at @pfn.  Mappings live only in the
 * owner's mm (mmap from another mm is refused, VM_DONTCOPY keeps them out
 * of children), so that is the one mm to walk; if it is gone, so are they.
 * Caller: wd_queue.c, queue lock held (the only writer of @db_pfn).
 */
void wd_queue_set_db_pfn(struct wd_queue *q, unsigned long pfn, bool uncached)
{
	struct mm_struct *mm = q->mm;
	bool zap;

	lockdep_assert_held(&q->lock);
	if (q->db_pfn == pfn && q->db_uncached == uncached)
		return;
	zap = q->db_pfn && mm && mmget_not_zero(mm);
	if (zap)
		mmap_read_lock(mm);
	mutex_lock(&q->map_lock);
	q->db_pfn = pfn;
	q->db_uncached = uncached;
	if (zap)
		wd_zap_doorbell(q, mm);
	mutex_unlock(&q->map_lock);
	if (zap) {
		mmap_read_unlock(mm);
		mmput_async(mm);
	}
}

/* A dead queue keeps its mappings but gets no new one. */
void wd_queue_forbid_mmap(struct wd_queue *q)
{
	mutex_lock(&q->map_lock);
	q->mappable = false;
	mutex_unlock(&q->map_lock);
}

/* Common checks of every fd operation. */
static int wd_queue_check_caller(struct wd_queue *q)
{
	enum wd_queue_state state = READ_ONCE(q->state);

	if (state == WD_QS_DEAD || state == WD_QS_CLOSED)
		return -ENODEV;
	if (current->mm != q->mm)
		return -EPERM;
	return 0;
}

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

	mutex_lock(&q->map_lock);
	if (q->mappable) {
		wd_vm_flags_set(vma, VM_PFNMAP | VM_DONTCOPY | VM_DONTEXPAND |
				VM_DONTDUMP);
		vma->vm_ops = &wd_vm_ops;
		vma->vm_private_data = q;
	} else {
		ret = -ENODEV;
	}
	mutex_unlock(&q->map_lock);
	return ret;
}

static ssize_t wd_vfio_rw(struct wd_queue *q, char __user *ubuf, size_t count,
			  loff_t *ppos, bool write)
{
	u64 pos = *ppos;
	unsigned int index = pos >> WD_REGION_SHIFT;
	u64 off = pos & WD_REGION_MASK;
	bool doorbell = index == WD_REGION_DOORBELL;
	const struct wd_accel_ops *ops = q->accel->ops;
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
	if (write && !wd_region_writable(index))
		return -EINVAL;
	/* Registers are 32-bit: aligned, whole-word writes only. */
	if (write && doorbell && ((off | count) & 3))
		return -EINVAL;

	/* The doorbell page may be the driver's: it changes under the lock. */
	if (doorbell) {
		mutex_lock(&q->lock);
		if (q->state != WD_QS_STARTED) {
			ret = -ENODEV;
			goto out;
		}
	}
	base = wd_region_base(q, index);
	if (write) {
		if (copy_from_user(base + off, ubuf, count)) {
			ret = -EFAULT;
			goto out;
		}
		if (doorbell && off == 0 && ops->kick)
			ops->kick(q);
	} else if (copy_to_user(ubuf, base + off, count)) {
		ret = -EFAULT;
		goto out;
	}
	*ppos += count;
out:
	if (doorbell)
		mutex_unlock(&q->lock);
	return ret ? ret : count;
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
	if (masked)
		return;
	/*
	 * A request that arrived while masked is served at unmask.  The
	 * doorbell may be the driver's page: look at it only while served.
	 */
	mutex_lock(&q->lock);
	if (q->serving &&
	    READ_ONCE(q->hdr->cq_tail) != READ_ONCE(q->db->cq_head))
		wd_queue_notify(q);
	mutex_unlock(&q->lock);
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
	int ret;

	mutex_lock(&q->lock);
	ret = wd_queue_reset_locked(q);
	mutex_unlock(&q->lock);
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
/* Device life: init, open, close, release; removal request; unmap */

static void wd_queue_free_regions(struct wd_queue *q)
{
	vfree(q->sq);
	vfree(q->cqr);
	vfree(q->own_db);
	q->sq = NULL;
	q->cqr = NULL;
	q->own_db = NULL;
	q->db = NULL;
	if (q->scratch)
		__free_page(q->scratch);
	q->scratch = NULL;
}

static int wd_queue_alloc_regions(struct wd_queue *q)
{
	q->entries = q->accel->info.ring_entries;
	q->sq_size = PAGE_ALIGN(q->entries * sizeof(struct wd_desc));
	q->cqr_size = PAGE_SIZE +
		      PAGE_ALIGN(q->entries * sizeof(struct wd_cqe));
	q->own_db = vmalloc_user(PAGE_SIZE);
	q->cqr = vmalloc_user(q->cqr_size);
	q->sq = vmalloc_user(q->sq_size);
	q->scratch = alloc_page(GFP_KERNEL | __GFP_ZERO);
	if (!q->own_db || !q->cqr || !q->sq || !q->scratch) {
		wd_queue_free_regions(q);
		return -ENOMEM;
	}
	q->hdr = q->cqr;
	q->cq = q->cqr + PAGE_SIZE;
	q->db = q->own_db;
	return 0;
}

static int wd_vfio_init(struct vfio_device *vdev)
{
	struct wd_queue *q = vdev_to_q(vdev);

	mutex_init(&q->lock);
	mutex_init(&q->map_lock);
	spin_lock_init(&q->irq_lock);
	INIT_LIST_HEAD(&q->node);
	INIT_LIST_HEAD(&q->mm_node);
	INIT_WORK(&q->mm_exit_work, wd_mm_exited);
	wd_mem_init(q);
	q->state = WD_QS_CLOSED;
	return 0;
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
	ret = wd_queue_alloc_regions(q);
	if (ret)
		goto err_module;
	q->mm = current->mm;
	mmgrab(q->mm);
	/*
	 * Pins are charged to RLIMIT_MEMLOCK (type1 with only emulated
	 * devices): cache them only for an owner the limit does not bind.
	 */
	q->cache_pins = has_capability_noaudit(current, CAP_IPC_LOCK);
	q->irq_masked = false;
	q->trigger = NULL;
	q->db_pfn = 0;
	q->mappable = true;
	ret = wd_mm_watch(q);
	if (ret)
		goto err_mm;

	mutex_lock(&q->lock);
	/* Pairs with wd_accel_remove(): DEAD is set before its kill loop. */
	if (READ_ONCE(accel->state) != WD_ACCEL_LIVE)
		ret = -ENODEV;
	else
		ret = wd_queue_open_locked(q);
	mutex_unlock(&q->lock);
	if (ret)
		goto err_watch;
	return 0;

err_watch:
	wd_mm_unwatch(q);
err_mm:
	mmdrop(q->mm);
	q->mm = NULL;
	wd_queue_free_regions(q);
err_module:
	module_put(accel->info.owner);
	return ret;
}

static void wd_vfio_close(struct vfio_device *vdev)
{
	struct wd_queue *q = vdev_to_q(vdev);
	struct eventfd_ctx *trigger;
	unsigned long flags;

	wd_mm_unwatch(q);
	mutex_lock(&q->lock);
	wd_queue_close_locked(q);
	mutex_unlock(&q->lock);
	wd_mem_release(q);

	spin_lock_irqsave(&q->irq_lock, flags);
	trigger = q->trigger;
	q->trigger = NULL;
	spin_unlock_irqrestore(&q->irq_lock, flags);
	if (trigger)
		eventfd_ctx_put(trigger);

	wd_queue_free_regions(q);
	mmdrop(q->mm);
	q->mm = NULL;
	module_put(q->accel->info.owner);
}

static void wd_vfio_release(struct vfio_device *vdev)
{
	struct wd_queue *q = vdev_to_q(vdev);

	mutex_destroy(&q->pin_lock);
	mutex_destroy(&q->map_lock);
	mutex_destroy(&q->lock);
	xa_destroy(&q->pins);
	wd_accel_put(q->accel);
	wd_vfio_free_device(vdev);
}

static void wd_vfio_dma_unmap(struct vfio_device *vdev, u64 iova, u64 length)
{
	wd_mem_dma_unmap(vdev_to_q(vdev), iova, length);
}

/* Removal waits for the user: the queue dies, and asks to be released. */
static void wd_vfio_request(struct vfio_device *vdev, unsigned int count)
{
	struct wd_queue *q = vdev_to_q(vdev);

	if (count == 0)
		dev_info(vdev->dev, "device removal requested, waiting for user to release the queue\n");
	mutex_lock(&q->lock);
	wd_queue_kill_locked(q, WD_Q_RELEASE);
	mutex_unlock(&q->lock);
}

const struct vfio_device_ops wd_vfio_ops = {
	.name = "wrapdrive",
	.init = wd_vfio_init,
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
