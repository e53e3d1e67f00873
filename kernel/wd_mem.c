// SPDX-License-Identifier: GPL-2.0
/*
 * WrapDrive core: the user memory a queue's requests name.
 *
 * IOVAs (VFIO_IOMMU_MAP_DMA by user space) are reached through pins from
 * vfio_pin_pages().  With only emulated devices in the container, type1
 * charges each pin to the mapper's RLIMIT_MEMLOCK, so:
 *   - an owner with CAP_IPC_LOCK gets a per-queue pin cache, bounded per
 *     queue and over all queues;
 *   - anyone else pins for the length of one copy (at most WD_PIN_BATCH
 *     pages), so nothing stays charged once a request is done; when even
 *     that is over budget (-ENOMEM) the copy goes through vfio_dma_rw(),
 *     which pins nothing.  Never on any other error: a pin fails with
 *     -EFAULT for a device mapping (VM_PFNMAP, a queue's own regions among
 *     them), which vfio_dma_rw() would happily copy to.
 *
 * Unmap.  type1 calls wd_mem_dma_unmap() with its device_list_lock held and
 * its iommu->lock dropped and then, with iommu->lock retaken, expects no pin
 * left in the range: it retries the callback and BUG()s after 10 tries.
 * type1 itself takes iommu->lock then device_list_lock, so nothing here
 * calls into type1 (pin or unpin) with the pin lock held: that would close
 * the cycle pin_lock -> iommu->lock -> device_list_lock -> pin_lock.
 * Instead a pin is announced under the pin lock (it counts as in flight,
 * in the current unmap epoch) and taken outside it; the callback fences
 * the range, starts a new epoch, empties the cache of the range and waits
 * until the pins of the old epoch are gone or, for the cache, recorded
 * where it can see them.  No new pin is taken in a fenced range: a copy
 * there goes through vfio_dma_rw() (which succeeds while the range is
 * mapped and fails once it is gone), a DMA map waits the fence out.
 * A fence only has to outlast the few instructions between the callback
 * and type1's removal of the range; it expires after WD_FENCE_TTL.  When
 * one expires too early type1 retries, and each back-to-back retry for
 * the same range doubles the fence's life (up to WD_FENCE_TTL_MAX), so a
 * slow machine reaches a long enough fence well before type1's limit.
 *
 * Process VAs (WD_CAPA_SHARE_ALL) are reached with short-term FOLL_PIN
 * pins of the owner's mm, which refuse VM_PFNMAP and VM_IO mappings.
 *
 * DMA maps (wd_queue_dma_map()) pin like the copies and map the pages with
 * the DMA API on the parent device; an unmap of their range waits until the
 * driver has released them.
 *
 * The owner's mm.  type1 takes and drops a reference on the mapper's
 * mm_users around every page it pins or unpins and every copy, with a
 * plain mmput().  If the owner exits meanwhile, that mmput() can be the
 * last: exit_mmap() then runs in the calling task, and the final fput() of
 * the queue's mapped regions is put off to that task's return to user
 * space.  A task that goes on to wait for the queue to be released (a
 * removal: vfio_unregister_group_dev() -> wd_vfio_request() -> kill ->
 * wd_queue_stop()) would wait for itself.  So stopping a queue holds a
 * reference of its own over its calls into type1 (wd_mem_hold_owner()),
 * dropped with mmput_async(): any teardown runs in a worker.  The engine
 * needs none: a kernel thread's fput() is never put off that way.  (type1
 * uses the mm that mapped the range: the owner, who opened the queue.)
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/dma-mapping.h>
#include <linux/highmem.h>
#include <linux/iommu.h>
#include <linux/mm.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>

#include "wd_internal.h"
#include "wd_compat.h"

#define WD_PIN_BATCH		32	/* pages pinned for one copy */
#define WD_PIN_CACHE_MAX	4096	/* pages cached per queue */
#define WD_UNCACHE_BATCH	64	/* pages uncached per pin lock hold */
#define WD_FENCE_TTL		max_t(unsigned long, 2, HZ / 50)
#define WD_FENCE_TTL_MAX	(HZ / 2)	/* after type1's retries */
#define WD_RETRY_WINDOW		(2 * HZ)	/* a callback this soon retries */
#define WD_FENCE_WAITS		4	/* fences a DMA map waits out, at most */
#define WD_UNMAP_WARN_SECS	10

atomic64_t wd_total_pinned = ATOMIC64_INIT(0);

/* Pages cached over all queues: at most an eighth of RAM. */
static unsigned long wd_cache_limit;
static atomic_long_t wd_cached_pages = ATOMIC_LONG_INIT(0);

void wd_mem_set_limits(void)
{
	wd_cache_limit = totalram_pages() / 8;
}

void wd_mem_init(struct wd_queue *q)
{
	mutex_init(&q->pin_lock);
	xa_init(&q->pins);
	INIT_LIST_HEAD(&q->dma_maps);
	init_waitqueue_head(&q->dma_wq);
	atomic64_set(&q->nr_pinned, 0);
}

static void wd_pinned_add(struct wd_queue *q, long n)
{
	atomic64_add(n, &q->nr_pinned);
	atomic64_add(n, &wd_total_pinned);
}

static void wd_copy_pages(struct page **pages, size_t off, void *buf,
			  size_t len, bool write)
{
	while (len) {
		size_t n = min_t(size_t, len, PAGE_SIZE - off);
		void *kaddr = kmap_local_page(*pages);

		if (write)
			memcpy(kaddr + off, buf, n);
		else
			memcpy(buf, kaddr + off, n);
		kunmap_local(kaddr);
		buf += n;
		len -= n;
		off = 0;
		pages++;
	}
}

/* ---------------------------------------------------------------------- */
/* Fences */

static void wd_fences_prune(struct wd_queue *q)
{
	unsigned int i, j = 0;

	for (i = 0; i < q->nr_fences; i++)
		if (time_before(jiffies, q->fences[i].expires))
			q->fences[j++] = q->fences[i];
	q->nr_fences = j;
}

/* Jiffies until no fence covers any of [first, last]: 0 when none does. */
static unsigned long wd_fenced(struct wd_queue *q, u64 first, u64 last)
{
	unsigned long left = 0;
	unsigned int i;

	lockdep_assert_held(&q->pin_lock);
	if (!q->nr_fences)
		return 0;
	wd_fences_prune(q);
	for (i = 0; i < q->nr_fences; i++)
		if (first <= q->fences[i].last && q->fences[i].first <= last)
			left = max(left, q->fences[i].expires - jiffies);
	return left;
}

/*
 * Fence [first, last].  The table is kept sorted; when it is full the two
 * nearest fences merge: fencing more than asked only sends copies the slow
 * way for a few milliseconds.
 */
static void wd_fence_add(struct wd_queue *q, u64 first, u64 last,
			 unsigned long ttl)
{
	unsigned long expires = jiffies + ttl;
	struct wd_fence *f = q->fences;
	unsigned int i, best = 0;
	u64 gap, best_gap = U64_MAX;

	lockdep_assert_held(&q->pin_lock);
	wd_fences_prune(q);
	if (q->nr_fences == WD_MAX_FENCES) {
		for (i = 0; i + 1 < q->nr_fences; i++) {
			gap = f[i + 1].first - min(f[i].last, f[i + 1].first);
			if (gap < best_gap) {
				best_gap = gap;
				best = i;
			}
		}
		f[best].last = max(f[best].last, f[best + 1].last);
		if (time_after(f[best + 1].expires, f[best].expires))
			f[best].expires = f[best + 1].expires;
		memmove(&f[best + 1], &f[best + 2],
			(q->nr_fences - best - 2) * sizeof(*f));
		q->nr_fences--;
	}
	for (i = q->nr_fences; i > 0 && f[i - 1].first > first; i--)
		f[i] = f[i - 1];
	f[i] = (struct wd_fence){ .first = first, .last = last,
				  .expires = expires };
	q->nr_fences++;
}

/* ---------------------------------------------------------------------- */
/* IOVA pins */

/*
 * Announce a pin of [first, last] (pin lock held): -EAGAIN while a fence
 * covers the range, else 0 with the pin counted in flight in epoch *@epoch
 * until wd_pin_end().  The pin itself is taken with the pin lock dropped.
 */
static int wd_pin_begin(struct wd_queue *q, u64 first, u64 last,
			unsigned long *epoch)
{
	lockdep_assert_held(&q->pin_lock);
	if (wd_fenced(q, first, last))
		return -EAGAIN;
	*epoch = q->unmap_epoch;
	q->pins_in_flight[*epoch & 1]++;
	return 0;
}

/* The pin of @epoch is released or recorded (pin lock held). */
static void wd_pin_end(struct wd_queue *q, unsigned long epoch)
{
	lockdep_assert_held(&q->pin_lock);
	if (!--q->pins_in_flight[epoch & 1])
		wake_up_all(&q->dma_wq);
}

/* Did an unmap callback start since @epoch began?  (pin lock held) */
static bool wd_pin_stale(struct wd_queue *q, unsigned long epoch)
{
	lockdep_assert_held(&q->pin_lock);
	return epoch != q->unmap_epoch;
}

/* Pin @npages at page-aligned @iova for @prot; 0 or a negative errno. */
static int wd_pin(struct wd_queue *q, u64 iova, int npages, int prot,
		  struct page **pages)
{
	int i, ret;

	ret = vfio_pin_pages(&q->vdev, iova, npages, prot, pages);
	if (ret != npages) {
		if (ret > 0)
			vfio_unpin_pages(&q->vdev, iova, ret);
		return ret < 0 ? ret : -EFAULT;
	}
	/*
	 * type1 hands out a page already pinned in the container whatever the
	 * protection asked now: never write to the zero page.
	 */
	if (prot & IOMMU_WRITE) {
		for (i = 0; i < npages; i++) {
			if (is_zero_pfn(page_to_pfn(pages[i]))) {
				vfio_unpin_pages(&q->vdev, iova, npages);
				return -EFAULT;
			}
		}
	}
	wd_pinned_add(q, npages);
	return 0;
}

/* Unpin @npages at page-aligned @iova, in chunks type1 accepts. */
static void wd_unpin(struct wd_queue *q, u64 iova, unsigned long npages)
{
	unsigned long done, n;

	for (done = 0; done < npages; done += n) {
		n = min_t(unsigned long, npages - done,
			  VFIO_PIN_PAGES_MAX_ENTRIES);
		vfio_unpin_pages(&q->vdev, iova + (done << PAGE_SHIFT), n);
	}
	wd_pinned_add(q, -(long)npages);
}

/*
 * Copy through pages pinned for this copy only (at most WD_PIN_BATCH);
 * -EAGAIN when the range is fenced.
 */
static int wd_rw_transient(struct wd_queue *q, u64 iova, void *buf, size_t n,
			   bool write)
{
	struct page *pages[WD_PIN_BATCH];
	u64 first = iova & PAGE_MASK;
	int npages = DIV_ROUND_UP(offset_in_page(iova) + n, PAGE_SIZE);
	unsigned long epoch;
	int ret;

	mutex_lock(&q->pin_lock);
	ret = wd_pin_begin(q, iova, iova + n - 1, &epoch);
	mutex_unlock(&q->pin_lock);
	if (ret)
		return ret;
	ret = wd_pin(q, first, npages,
		     write ? IOMMU_READ | IOMMU_WRITE : IOMMU_READ, pages);
	if (!ret) {
		wd_copy_pages(pages, offset_in_page(iova), buf, n, write);
		wd_unpin(q, first, npages);
	}
	mutex_lock(&q->pin_lock);
	wd_pin_end(q, epoch);
	mutex_unlock(&q->pin_lock);
	return ret;
}

/*
 * Pin the page at @idx for the cache: read-write if type1 allows, else
 * read-only (tag 0) when only reading.  Pin lock dropped.
 */
static int wd_pin_for_cache(struct wd_queue *q, unsigned long idx, bool write,
			    struct page **page, int *tag)
{
	u64 iova = (u64)idx << PAGE_SHIFT;
	int ret;

	*tag = 1;
	ret = wd_pin(q, iova, 1, IOMMU_READ | IOMMU_WRITE, page);
	if ((ret == -EFAULT || ret == -EPERM) && !write) {
		*tag = 0;
		ret = wd_pin(q, iova, 1, IOMMU_READ, page);
	}
	return ret;
}

/*
 * Copy @n bytes within the page at @iova through the pin cache, pinning
 * the page into it if there is room; -EAGAIN when the range is fenced.
 * A page pinned while an unmap callback ran is used once and unpinned:
 * the callback could not see it in the cache.
 */
static int wd_rw_cached(struct wd_queue *q, u64 iova, void *buf, size_t n,
			bool write)
{
	unsigned long idx = iova >> PAGE_SHIFT, epoch;
	size_t off = offset_in_page(iova);
	struct page *page;
	bool kept = false;
	void *entry;
	int ret, tag;

	mutex_lock(&q->pin_lock);
	if (wd_fenced(q, iova, iova + n - 1)) {
		mutex_unlock(&q->pin_lock);
		return -EAGAIN;
	}
	entry = xa_load(&q->pins, idx);
	if (entry) {
		/* The cache's pin: the callback needs the pin lock to drop it. */
		ret = write && !xa_pointer_tag(entry) ? -EFAULT : 0;
		if (!ret) {
			page = xa_untag_pointer(entry);
			wd_copy_pages(&page, off, buf, n, write);
		}
		mutex_unlock(&q->pin_lock);
		return ret;
	}
	if (q->nr_cached >= WD_PIN_CACHE_MAX ||
	    atomic_long_read(&wd_cached_pages) >= wd_cache_limit) {
		mutex_unlock(&q->pin_lock);
		return wd_rw_transient(q, iova, buf, n, write);
	}
	ret = wd_pin_begin(q, iova, iova + n - 1, &epoch);
	mutex_unlock(&q->pin_lock);
	if (ret)
		return ret;

	ret = wd_pin_for_cache(q, idx, write, &page, &tag);
	if (!ret)
		wd_copy_pages(&page, off, buf, n, write);

	mutex_lock(&q->pin_lock);
	if (!ret && !wd_pin_stale(q, epoch) &&
	    q->nr_cached < WD_PIN_CACHE_MAX &&
	    !xa_insert(&q->pins, idx, xa_tag_pointer(page, tag), GFP_KERNEL)) {
		q->nr_cached++;
		atomic_long_inc(&wd_cached_pages);
		kept = true;
	}
	if (!ret && !kept) {
		/* Still in flight: the callback waits for this unpin. */
		mutex_unlock(&q->pin_lock);
		wd_unpin(q, iova & PAGE_MASK, 1);
		mutex_lock(&q->pin_lock);
	}
	wd_pin_end(q, epoch);
	mutex_unlock(&q->pin_lock);
	return ret;
}

/*
 * Drop the cache's pins in pages [first, last]: up to WD_UNCACHE_BATCH at a
 * time taken out of the cache under the pin lock, then unpinned outside it,
 * a run of consecutive pages in one call.
 */
static void wd_uncache_range(struct wd_queue *q, unsigned long first,
			     unsigned long last)
{
	unsigned long batch[WD_UNCACHE_BATCH], idx;
	unsigned int n, i, run;
	void *entry;

	do {
		n = 0;
		mutex_lock(&q->pin_lock);
		xa_for_each_range(&q->pins, idx, entry, first, last) {
			xa_erase(&q->pins, idx);
			batch[n++] = idx;
			if (n == WD_UNCACHE_BATCH)
				break;
		}
		q->nr_cached -= n;
		atomic_long_sub(n, &wd_cached_pages);
		mutex_unlock(&q->pin_lock);
		for (i = 0; i < n; i += run) {
			for (run = 1; i + run < n &&
			     batch[i + run] == batch[i] + run; run++)
				;
			wd_unpin(q, (u64)batch[i] << PAGE_SHIFT, run);
		}
		if (!n || batch[n - 1] == last)
			return;
		first = batch[n - 1] + 1;
		cond_resched();
	} while (n == WD_UNCACHE_BATCH);
}

static int wd_iova_rw(struct wd_queue *q, u64 iova, void *buf, size_t len,
		      bool write)
{
	/* The cache goes a page at a time, a transient pin a batch. */
	size_t step = q->cache_pins ? PAGE_SIZE : WD_PIN_BATCH * PAGE_SIZE;

	while (len) {
		size_t n = min_t(size_t, len, step - offset_in_page(iova));
		int ret;

		if (q->cache_pins)
			ret = wd_rw_cached(q, iova, buf, n, write);
		else
			ret = wd_rw_transient(q, iova, buf, n, write);
		/*
		 * Being unmapped, or over RLIMIT_MEMLOCK: copy without a pin.
		 * Not for -EFAULT, see the top of this file.
		 */
		if (ret == -EAGAIN || ret == -ENOMEM)
			ret = vfio_dma_rw(&q->vdev, iova, buf, n, write);
		if (ret)
			return -EFAULT;
		iova += n;
		buf += n;
		len -= n;
	}
	return 0;
}

/* ---------------------------------------------------------------------- */
/* Process VAs of the owner (WD_CAPA_SHARE_ALL) */

/* Short-term FOLL_PIN pins of @npages at @start; mmap_lock is taken here. */
static long wd_pin_user(struct mm_struct *mm, unsigned long start,
			unsigned long npages, bool write, struct page **pages)
{
	int locked = 1;
	long got;

	if (mmap_read_lock_killable(mm))
		return -EINTR;
	got = wd_pin_user_pages_remote(mm, start, npages,
				       write ? FOLL_WRITE : 0, pages, &locked);
	if (locked)
		mmap_read_unlock(mm);
	return got;
}

static int wd_sva_rw(struct wd_queue *q, u64 addr, void *buf, size_t len,
		     bool write)
{
	struct mm_struct *mm = q->mm;
	struct page *pages[WD_PIN_BATCH];
	int ret = 0;

	if (!mm || !mmget_not_zero(mm))
		return -EFAULT;
	while (len) {
		size_t off = offset_in_page(addr);
		unsigned long npages = min_t(unsigned long, WD_PIN_BATCH,
					     DIV_ROUND_UP(off + len, PAGE_SIZE));
		long got = wd_pin_user(mm, addr & PAGE_MASK, npages, write,
				       pages);
		size_t n;

		if (got <= 0) {
			ret = -EFAULT;
			break;
		}
		n = min_t(size_t, len, got * PAGE_SIZE - off);
		wd_copy_pages(pages, off, buf, n, write);
		unpin_user_pages_dirty_lock(pages, got, write);
		addr += n;
		buf += n;
		len -= n;
	}
	mmput_async(mm);
	return ret;
}

/* ---------------------------------------------------------------------- */
/* Copies for the engine */

static bool wd_range_ok(u64 addr, size_t len)
{
	return len <= WD_MAX_LEN && addr + len >= addr;
}

int wd_queue_begin_access(struct wd_queue *q)
{
	if (!wd_queue_is_sva(q))
		return 0;
	return mmget_not_zero(q->mm) ? 0 : -EFAULT;
}
EXPORT_SYMBOL_GPL(wd_queue_begin_access);

void wd_queue_end_access(struct wd_queue *q)
{
	if (wd_queue_is_sva(q))
		mmput_async(q->mm);
}
EXPORT_SYMBOL_GPL(wd_queue_end_access);

int wd_queue_read(struct wd_queue *q, u64 addr, void *buf, size_t len)
{
	if (!wd_range_ok(addr, len))
		return -EFAULT;
	if (!len)
		return 0;
	if (wd_queue_is_sva(q))
		return wd_sva_rw(q, addr, buf, len, false);
	return wd_iova_rw(q, addr, buf, len, false);
}
EXPORT_SYMBOL_GPL(wd_queue_read);

int wd_queue_write(struct wd_queue *q, u64 addr, const void *buf, size_t len)
{
	if (!wd_range_ok(addr, len))
		return -EFAULT;
	if (!len)
		return 0;
	if (wd_queue_is_sva(q))
		return wd_sva_rw(q, addr, (void *)buf, len, true);
	return wd_iova_rw(q, addr, (void *)buf, len, true);
}
EXPORT_SYMBOL_GPL(wd_queue_write);

/* ---------------------------------------------------------------------- */
/* The DMA API */

static int wd_dma_pin_iova(struct wd_queue *q, struct wd_dma_map *map)
{
	int prot = map->dir == DMA_TO_DEVICE ? IOMMU_READ :
					       IOMMU_READ | IOMMU_WRITE;
	unsigned int done, n;
	int ret;

	for (done = 0; done < map->npages; done += n) {
		n = min_t(unsigned int, map->npages - done,
			  VFIO_PIN_PAGES_MAX_ENTRIES);
		ret = wd_pin(q, map->first_page + ((u64)done << PAGE_SHIFT), n,
			     prot, map->pages + done);
		if (ret) {
			if (done)
				wd_unpin(q, map->first_page, done);
			return ret;
		}
	}
	return 0;
}

static int wd_dma_pin_sva(struct wd_queue *q, struct wd_dma_map *map)
{
	bool write = map->dir != DMA_TO_DEVICE;
	struct mm_struct *mm = q->mm;
	unsigned int done = 0;
	long got;
	int ret = 0;

	if (!mm || !mmget_not_zero(mm))
		return -EFAULT;
	while (done < map->npages) {
		got = wd_pin_user(mm, map->first_page +
				  ((u64)done << PAGE_SHIFT),
				  map->npages - done, write, map->pages + done);
		if (got <= 0) {
			unpin_user_pages(map->pages, done);
			ret = got == -ENOMEM ? -ENOMEM : -EFAULT;
			break;
		}
		done += got;
	}
	mmput_async(mm);
	if (!ret)
		wd_pinned_add(q, map->npages);
	return ret;
}

static void wd_dma_unpin(struct wd_queue *q, struct wd_dma_map *map)
{
	if (map->iova) {
		wd_unpin(q, map->first_page, map->npages);
	} else {
		unpin_user_pages_dirty_lock(map->pages, map->npages,
					    map->dir != DMA_TO_DEVICE);
		wd_pinned_add(q, -(long)map->npages);
	}
}

/* Pin @map and map it for the device; pin lock dropped. */
static int wd_dma_map_pages(struct wd_queue *q, struct wd_dma_map *map)
{
	struct device *dev = q->accel->dev;
	int ret;

	ret = map->iova ? wd_dma_pin_iova(q, map) : wd_dma_pin_sva(q, map);
	if (ret)
		return ret;
	/* Segments no longer than the device takes (64 KiB by default). */
	ret = sg_alloc_table_from_pages_segment(&map->sgt, map->pages,
						map->npages,
						offset_in_page(map->addr),
						map->len,
						dma_get_max_seg_size(dev),
						GFP_KERNEL);
	if (ret)
		goto err_unpin;
	ret = dma_map_sgtable(dev, &map->sgt, map->dir, 0);
	if (ret)
		goto err_sg;
	return 0;

err_sg:
	sg_free_table(&map->sgt);
err_unpin:
	wd_dma_unpin(q, map);
	return ret;
}

static void wd_dma_unmap_pages(struct wd_queue *q, struct wd_dma_map *map)
{
	dma_unmap_sgtable(q->accel->dev, &map->sgt, map->dir, 0);
	sg_free_table(&map->sgt);
	wd_dma_unpin(q, map);
}

/*
 * Announce the pin of an IOVA map (pin lock held).  A DMA map cannot copy
 * its way around a fence: it waits it out (a few milliseconds), at most
 * WD_FENCE_WAITS times, then pins whatever is mapped there by then.
 */
static int wd_dma_pin_begin(struct wd_queue *q, struct wd_dma_map *map,
			    unsigned long *epoch)
{
	u64 last = map->addr + map->len - 1;
	unsigned int tries;

	lockdep_assert_held(&q->pin_lock);
	for (tries = 0; wd_pin_begin(q, map->addr, last, epoch); tries++) {
		unsigned long wait = wd_fenced(q, map->addr, last);

		if (tries == WD_FENCE_WAITS)
			return -EFAULT;
		mutex_unlock(&q->pin_lock);
		schedule_timeout_uninterruptible(wait);
		mutex_lock(&q->pin_lock);
	}
	return 0;
}

struct wd_dma_map *wd_queue_dma_map(struct wd_queue *q, u64 addr, u32 len,
				    enum dma_data_direction dir)
{
	struct wd_dma_map *map;
	unsigned long epoch = 0;
	unsigned int tries;
	int ret;

	if (!len || len > WD_MAX_LEN || addr + len - 1 < addr ||
	    (dir != DMA_TO_DEVICE && dir != DMA_FROM_DEVICE &&
	     dir != DMA_BIDIRECTIONAL))
		return ERR_PTR(-EINVAL);
	map = kzalloc(sizeof(*map), GFP_KERNEL);
	if (!map)
		return ERR_PTR(-ENOMEM);
	INIT_LIST_HEAD(&map->node);
	map->addr = addr;
	map->len = len;
	map->dir = dir;
	map->iova = !wd_queue_is_sva(q);
	map->first_page = addr & PAGE_MASK;
	map->npages = DIV_ROUND_UP(offset_in_page(addr) + len, PAGE_SIZE);
	map->pages = kvmalloc_array(map->npages, sizeof(*map->pages),
				    GFP_KERNEL);
	if (!map->pages) {
		ret = -ENOMEM;
		goto err_free;
	}

	/*
	 * An IOVA map is in flight from its announcement until it is listed,
	 * where the unmap callback sees it.  If a callback ran meanwhile, it
	 * may have missed the map: undo it and start again.
	 */
	for (tries = 0;; tries++) {
		bool stale;

		mutex_lock(&q->pin_lock);
		ret = map->iova ? wd_dma_pin_begin(q, map, &epoch) : 0;
		mutex_unlock(&q->pin_lock);
		if (ret)
			goto err_pages;
		ret = wd_dma_map_pages(q, map);
		mutex_lock(&q->pin_lock);
		stale = map->iova && wd_pin_stale(q, epoch);
		if (!ret && !stale)
			list_add_tail(&map->node, &q->dma_maps);
		if (!ret && stale) {
			mutex_unlock(&q->pin_lock);
			wd_dma_unmap_pages(q, map);
			mutex_lock(&q->pin_lock);
			if (tries == WD_FENCE_WAITS)
				ret = -EFAULT;
		}
		if (map->iova)
			wd_pin_end(q, epoch);
		mutex_unlock(&q->pin_lock);
		if (ret)
			goto err_pages;
		if (!stale)
			return map;
	}

err_pages:
	kvfree(map->pages);
err_free:
	kfree(map);
	return ERR_PTR(ret);
}
EXPORT_SYMBOL_GPL(wd_queue_dma_map);

/*
 * Unmap and unpin @map, which the caller marked releasing under the pin
 * lock.  It stays listed until its pins are gone, so an unmap callback
 * waits for it.
 */
static void wd_dma_map_release(struct wd_queue *q, struct wd_dma_map *map)
{
	wd_dma_unmap_pages(q, map);
	mutex_lock(&q->pin_lock);
	list_del_init(&map->node);
	q->dma_released++;
	mutex_unlock(&q->pin_lock);
	wake_up_all(&q->dma_wq);
}

void wd_queue_dma_unmap(struct wd_queue *q, struct wd_dma_map *map)
{
	bool mine;

	if (IS_ERR_OR_NULL(map))
		return;
	mutex_lock(&q->pin_lock);
	/* Not listed when the queue stopped first and released it (a driver bug). */
	mine = !list_empty(&map->node) && !map->releasing;
	map->releasing = true;
	mutex_unlock(&q->pin_lock);
	if (mine)
		wd_dma_map_release(q, map);
	else
		wait_event(q->dma_wq, list_empty_careful(&map->node));
	kvfree(map->pages);
	kfree(map);
}
EXPORT_SYMBOL_GPL(wd_queue_dma_unmap);

bool wd_dma_map_revoked(const struct wd_dma_map *map)
{
	return READ_ONCE(map->revoked);
}
EXPORT_SYMBOL_GPL(wd_dma_map_revoked);

/* Mark the DMA maps overlapping [first, last] revoked; any listed? */
static bool wd_dma_maps_revoke(struct wd_queue *q, u64 first, u64 last)
{
	struct wd_dma_map *map;
	bool found = false;

	lockdep_assert_held(&q->pin_lock);
	list_for_each_entry(map, &q->dma_maps, node) {
		if (map->iova && first <= map->addr + map->len - 1 &&
		    map->addr <= last) {
			WRITE_ONCE(map->revoked, true);
			found = true;
		}
	}
	return found;
}

/*
 * A fence's life: WD_FENCE_TTL, doubled (up to WD_FENCE_TTL_MAX) for each
 * callback on the same range soon after the last, which is type1 retrying
 * because a pin slipped in after an earlier fence expired.
 */
static unsigned long wd_fence_ttl(struct wd_queue *q, u64 first, u64 last)
{
	lockdep_assert_held(&q->pin_lock);
	if (q->unmap_ttl && first == q->unmap_first &&
	    last == q->unmap_last &&
	    time_before(jiffies, q->unmap_at + WD_RETRY_WINDOW))
		q->unmap_ttl = min_t(unsigned long, 2 * q->unmap_ttl,
				     WD_FENCE_TTL_MAX);
	else
		q->unmap_ttl = WD_FENCE_TTL;
	q->unmap_first = first;
	q->unmap_last = last;
	q->unmap_at = jiffies;
	return q->unmap_ttl;
}

static bool wd_pins_landed(struct wd_queue *q, unsigned long epoch)
{
	return !READ_ONCE(q->pins_in_flight[epoch & 1]);
}

static bool wd_maps_released(struct wd_queue *q, unsigned long seq)
{
	return READ_ONCE(q->dma_released) != seq;
}

/* Sleep until @done, warning every WD_UNMAP_WARN_SECS that @what holds it up. */
static void wd_unmap_wait(struct wd_queue *q,
			  bool (*done)(struct wd_queue *q, unsigned long arg),
			  unsigned long arg, const char *what, u64 first,
			  u64 last)
{
	while (!wait_event_timeout(q->dma_wq, done(q, arg),
				   WD_UNMAP_WARN_SECS * HZ))
		dev_warn(mdev_dev(q->mdev),
			 "unmap of [%#llx, %#llx] waits for %s\n",
			 first, last, what);
}

/*
 * type1's dma_unmap callback, for the whole of one VFIO mapping, with
 * type1's device_list_lock held and its iommu->lock dropped: fence the
 * range and start a new epoch, unpin what the cache holds of it, wait for
 * the pins of the old epoch and for the driver to release its DMA maps in
 * the range.
 */
void wd_mem_dma_unmap(struct wd_queue *q, u64 iova, u64 length)
{
	unsigned long epoch, seq;
	u64 last;
	bool busy;

	if (!length || check_add_overflow(iova, length - 1, &last))
		return;
	mutex_lock(&q->pin_lock);
	wd_fence_add(q, iova, last, wd_fence_ttl(q, iova, last));
	epoch = q->unmap_epoch++;
	mutex_unlock(&q->pin_lock);

	wd_uncache_range(q, iova >> PAGE_SHIFT, last >> PAGE_SHIFT);
	wd_unmap_wait(q, wd_pins_landed, epoch, "pins in flight", iova, last);

	mutex_lock(&q->pin_lock);
	for (;;) {
		busy = wd_dma_maps_revoke(q, iova, last);
		seq = q->dma_released;
		mutex_unlock(&q->pin_lock);
		if (!busy)
			break;
		wd_unmap_wait(q, wd_maps_released, seq,
			      "the driver to release its DMA maps", iova, last);
		mutex_lock(&q->pin_lock);
	}
}

/* See "The owner's mm" above; true when wd_mem_drop_owner() must drop it. */
bool wd_mem_hold_owner(struct wd_queue *q)
{
	return q->mm && mmget_not_zero(q->mm);
}

void wd_mem_drop_owner(struct wd_queue *q, bool held)
{
	if (held)
		mmput_async(q->mm);
}

/* The queue stopped: everything it holds of user memory goes. */
void wd_mem_release(struct wd_queue *q)
{
	struct wd_dma_map *map;
	unsigned long epoch;
	bool found;

	do {
		found = false;
		mutex_lock(&q->pin_lock);
		list_for_each_entry(map, &q->dma_maps, node) {
			if (!map->releasing) {
				dev_WARN_ONCE(mdev_dev(q->mdev), 1,
					      "driver kept a DMA map past queue_close\n");
				map->releasing = true;
				found = true;
				break;
			}
		}
		mutex_unlock(&q->pin_lock);
		if (found)
			wd_dma_map_release(q, map);
	} while (found);
	wait_event(q->dma_wq, list_empty_careful(&q->dma_maps));

	/* A pin still in flight is not cached: it sees the new epoch. */
	mutex_lock(&q->pin_lock);
	epoch = q->unmap_epoch++;
	mutex_unlock(&q->pin_lock);
	wd_uncache_range(q, 0, ULONG_MAX);
	wait_event(q->dma_wq, wd_pins_landed(q, epoch));
	mutex_lock(&q->pin_lock);
	q->nr_fences = 0;
	mutex_unlock(&q->pin_lock);
}
