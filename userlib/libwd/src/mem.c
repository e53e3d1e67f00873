// SPDX-License-Identifier: GPL-2.0
/*
 * libwd: memory shared with a queue's device.
 *
 * wd_mem_share maps a page-rounded range with VFIO_IOMMU_MAP_DMA at an IOVA
 * of our choosing (first fit in [IOVA_BASE, IOVA_LIMIT)); the table of
 * shares, sorted by process address, translates request addresses to
 * IOVAs (binary search behind a last-hit cache).  Sharing the same range
 * again counts a reference.  On a WD_CAPA_SHARE_ALL queue the device works
 * on process addresses: nothing is mapped, translation is the identity.
 * Staging buffers (for the wd_do_* helpers' unshared input) are shared
 * once and kept on a free list.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <linux/vfio.h>

#include "wd_priv.h"

#define IOVA_BASE	(1ULL << 20)
#define IOVA_LIMIT	(1ULL << 39)
#define STAGE_MIN	(64UL << 10)
#define STAGE_KEEP	8	/* free staging buffers kept per queue */

static size_t page_up(size_t n)
{
	return (n + WD_PAGE - 1) & ~(WD_PAGE - 1);
}

static int grow(void **arr, int *cap, int need, size_t elem)
{
	void *n;
	int c;

	if (need <= *cap)
		return 0;
	c = *cap ? *cap * 2 : 16;
	while (c < need)
		c *= 2;
	n = realloc(*arr, (size_t)c * elem);
	if (!n)
		return -ENOMEM;
	*arr = n;
	*cap = c;
	return 0;
}

static int iova_alloc(struct wd_queue_priv *p, size_t len, __u64 *iova)
{
	int i;

	if (!p->niova_free && !p->cap_iova_free) {
		if (grow((void **)&p->iova_free, &p->cap_iova_free, 1, sizeof(struct wd_range)))
			return -ENOMEM;
		p->iova_free[0] = (struct wd_range){ IOVA_BASE, IOVA_LIMIT };
		p->niova_free = 1;
	}
	for (i = 0; i < p->niova_free; i++) {
		struct wd_range *r = &p->iova_free[i];

		if (r->end - r->start >= len) {
			*iova = r->start;
			r->start += len;
			if (r->start == r->end) {
				memmove(r, r + 1, (size_t)(p->niova_free - i - 1) * sizeof(*r));
				p->niova_free--;
			}
			return 0;
		}
	}
	return -ENOSPC;
}

static void iova_free(struct wd_queue_priv *p, __u64 iova, size_t len)
{
	__u64 start = iova, end = iova + len;
	int i = 0;

	while (i < p->niova_free && p->iova_free[i].start < start)
		i++;
	if (i > 0 && p->iova_free[i - 1].end == start) {
		p->iova_free[i - 1].end = end;
		if (i < p->niova_free && p->iova_free[i].start == end) {
			p->iova_free[i - 1].end = p->iova_free[i].end;
			memmove(&p->iova_free[i], &p->iova_free[i + 1],
				(size_t)(p->niova_free - i - 1) * sizeof(struct wd_range));
			p->niova_free--;
		}
		return;
	}
	if (i < p->niova_free && p->iova_free[i].start == end) {
		p->iova_free[i].start = start;
		return;
	}
	if (grow((void **)&p->iova_free, &p->cap_iova_free, p->niova_free + 1,
		 sizeof(struct wd_range)))
		return;	/* leaks IOVA space, never memory */
	memmove(&p->iova_free[i + 1], &p->iova_free[i],
		(size_t)(p->niova_free - i) * sizeof(struct wd_range));
	p->iova_free[i] = (struct wd_range){ start, end };
	p->niova_free++;
}

/* Index of the last share starting at or below va, or -1. */
static int find_locked(const struct wd_queue_priv *p, uintptr_t va)
{
	int lo = 0, hi = p->nshares - 1, best = -1;

	while (lo <= hi) {
		int mid = (lo + hi) / 2;

		if (p->shares[mid].va <= va) {
			best = mid;
			lo = mid + 1;
		} else {
			hi = mid - 1;
		}
	}
	return best;
}

int wd_xlate_locked(struct wd_queue_priv *p, const void *addr, size_t len, __u64 *iova)
{
	uintptr_t va = (uintptr_t)addr;
	const struct wd_share *s;
	int i;

	if (!len) {
		*iova = 0;	/* a length of 0 touches no memory */
		return 0;
	}
	if (va + len < va)
		return wd_fail(-EFAULT, "buffer %p+%#zx wraps around", addr, len);
	if (p->share_all) {
		*iova = va;
		return 0;
	}
	if (p->last >= 0) {
		s = &p->shares[p->last];
		if (s->va <= va && va + len <= s->va + s->len) {
			*iova = s->iova + (va - s->va);
			return 0;
		}
	}
	i = find_locked(p, va);
	if (i >= 0) {
		s = &p->shares[i];
		if (va + len <= s->va + s->len) {
			p->last = i;
			*iova = s->iova + (va - s->va);
			return 0;
		}
	}
	return wd_fail(-EFAULT, "buffer %p+%#zx is not shared with the queue's device: "
		      "call wd_mem_share() first", addr, len);
}

static int map_dma(struct wd_queue_priv *p, uintptr_t va, __u64 iova, size_t len)
{
	struct vfio_iommu_type1_dma_map m = {
		.argsz = sizeof(m),
		.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		.vaddr = va, .iova = iova, .size = len,
	};

	if (p->sim)
		return 0;
	if (ioctl(p->container_fd, VFIO_IOMMU_MAP_DMA, &m))
		return wd_err(errno, "VFIO_IOMMU_MAP_DMA vaddr=%#lx iova=%#llx size=%#zx",
			      (unsigned long)va, (unsigned long long)iova, len);
	return 0;
}

static void unmap_dma(struct wd_queue_priv *p, __u64 iova, size_t len)
{
	struct vfio_iommu_type1_dma_unmap u = {
		.argsz = sizeof(u), .iova = iova, .size = len,
	};

	if (!p->sim && ioctl(p->container_fd, VFIO_IOMMU_UNMAP_DMA, &u))
		wd_err(errno, "VFIO_IOMMU_UNMAP_DMA iova=%#llx", (unsigned long long)iova);
}

static int share_locked(struct wd_queue_priv *p, const void *addr, size_t size)
{
	uintptr_t va = (uintptr_t)addr & ~(WD_PAGE - 1);
	size_t len;
	__u64 iova;
	int i, ret;

	if (!addr || !size || (uintptr_t)addr + size < (uintptr_t)addr)
		return wd_fail(-EINVAL, "wd_mem_share: bad range %p+%#zx", addr, size);
	len = page_up((uintptr_t)addr + size) - va;
	if (p->share_all)
		return 0;
	i = find_locked(p, va);
	if (i >= 0 && p->shares[i].va == va && p->shares[i].len == len) {
		p->shares[i].refs++;
		return 0;
	}
	if ((i >= 0 && p->shares[i].va + p->shares[i].len > va) ||
	    (i + 1 < p->nshares && p->shares[i + 1].va < va + len))
		return wd_fail(-EEXIST, "wd_mem_share: %p+%#zx overlaps a range already shared; "
			      "share whole buffers once", addr, size);
	if (grow((void **)&p->shares, &p->cap_shares, p->nshares + 1, sizeof(*p->shares)))
		return wd_err(ENOMEM, "wd_mem_share");
	if (iova_alloc(p, len, &iova))
		return wd_err(ENOSPC, "wd_mem_share: no IOVA space for %#zx bytes", len);
	ret = map_dma(p, va, iova, len);
	if (ret) {
		iova_free(p, iova, len);
		return ret;
	}
	i++;
	memmove(&p->shares[i + 1], &p->shares[i], (size_t)(p->nshares - i) * sizeof(*p->shares));
	p->shares[i] = (struct wd_share){ va, len, iova, 1 };
	p->nshares++;
	p->last = -1;
	return 0;
}

int wd_mem_share(struct wd_queue *q, const void *addr, size_t size, int flags)
{
	struct wd_queue_priv *p = q ? q->priv : NULL;
	int ret;

	if (!p)
		return wd_fail(-EINVAL, "wd_mem_share: queue not open");
	if (flags)
		return wd_fail(-EINVAL, "wd_mem_share: unknown flags %#x", flags);
	pthread_mutex_lock(&p->lock);
	ret = p->dead ? (wd_fail(-ENODEV, "queue is dead")) : share_locked(p, addr, size);
	pthread_mutex_unlock(&p->lock);
	return ret;
}

static int unshare_locked(struct wd_queue_priv *p, const void *addr, size_t size)
{
	uintptr_t va = (uintptr_t)addr & ~(WD_PAGE - 1);
	size_t len;
	int i;

	if (!addr || !size || (uintptr_t)addr + size < (uintptr_t)addr)
		return wd_fail(-EINVAL, "wd_mem_unshare: bad range %p+%#zx", addr, size);
	if (p->share_all)
		return 0;
	len = page_up((uintptr_t)addr + size) - va;
	i = find_locked(p, va);
	if (i < 0 || p->shares[i].va != va || p->shares[i].len != len)
		return wd_fail(-ENOENT, "%p+%#zx was not shared with this queue", addr, size);
	if (--p->shares[i].refs)
		return 0;
	if (!p->dead)
		unmap_dma(p, p->shares[i].iova, len);
	iova_free(p, p->shares[i].iova, len);
	memmove(&p->shares[i], &p->shares[i + 1], (size_t)(p->nshares - i - 1) * sizeof(*p->shares));
	p->nshares--;
	p->last = -1;
	return 0;
}

int wd_mem_unshare_checked(struct wd_queue *q, const void *addr, size_t size)
{
	struct wd_queue_priv *p = q ? q->priv : NULL;
	int ret;

	if (!p)
		return wd_fail(-EINVAL, "wd_mem_unshare: queue not open");
	pthread_mutex_lock(&p->lock);
	ret = unshare_locked(p, addr, size);
	pthread_mutex_unlock(&p->lock);
	return ret;
}

void wd_mem_unshare(struct wd_queue *q, const void *addr, size_t size)
{
	wd_mem_unshare_checked(q, addr, size);
}

__u64 wd_dev_addr(struct wd_queue *q, const void *addr, size_t len)
{
	struct wd_queue_priv *p = q->priv;
	__u64 iova = 0;

	pthread_mutex_lock(&p->lock);
	if (wd_xlate_locked(p, addr, len ? len : 1, &iova))
		iova = 0;
	pthread_mutex_unlock(&p->lock);
	return iova;
}

int wd_is_shared(struct wd_queue *q, const void *addr, size_t len)
{
	struct wd_queue_priv *p = q->priv;
	uintptr_t va = (uintptr_t)addr;
	int i, ret = 0;

	if (!len || va + len < va)
		return 0;
	pthread_mutex_lock(&p->lock);
	if (p->share_all) {
		ret = 1;
	} else {
		i = find_locked(p, va);
		ret = i >= 0 && va + len <= p->shares[i].va + p->shares[i].len;
	}
	pthread_mutex_unlock(&p->lock);
	return ret;
}

/* Every share undone (unmapped unless the queue is dead), staging freed. */
void wd_mem_fini(struct wd_queue *q, int unmap)
{
	struct wd_queue_priv *p = q->priv;
	struct wd_stage *st, *next;
	int i;

	for (st = p->stages; st; st = next) {
		next = st->next;
		munmap(st->mem, st->size);
		free(st);
	}
	p->stages = NULL;
	for (i = 0; i < p->nshares; i++)
		if (unmap && !p->share_all)
			unmap_dma(p, p->shares[i].iova, p->shares[i].len);
	free(p->shares);
	free(p->iova_free);
	p->shares = NULL;
	p->iova_free = NULL;
	p->nshares = p->cap_shares = p->niova_free = p->cap_iova_free = 0;
}

/* A shared buffer of at least size bytes for one call; give it back with wd_stage_put. */
void *wd_stage_get(struct wd_queue *q, size_t size, struct wd_stage **out)
{
	struct wd_queue_priv *p = q->priv;
	struct wd_stage **pp, *st;
	size_t want = STAGE_MIN;

	pthread_mutex_lock(&p->lock);
	for (pp = &p->stages; *pp; pp = &(*pp)->next) {
		if ((*pp)->size >= size) {
			st = *pp;
			*pp = st->next;
			p->nstages--;
			pthread_mutex_unlock(&p->lock);
			*out = st;
			return st->mem;
		}
	}
	pthread_mutex_unlock(&p->lock);
	while (want < size)
		want <<= 1;
	st = calloc(1, sizeof(*st));
	if (!st) {
		wd_err(ENOMEM, "staging buffer");
		return NULL;
	}
	st->size = want;
	st->mem = mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (st->mem == MAP_FAILED) {
		wd_err(errno, "staging buffer of %zu bytes", want);
		free(st);
		return NULL;
	}
	if (wd_mem_share(q, st->mem, want, 0)) {
		munmap(st->mem, want);
		free(st);
		return NULL;
	}
	*out = st;
	return st->mem;
}

void wd_stage_put(struct wd_queue *q, struct wd_stage *st)
{
	struct wd_queue_priv *p = q->priv;

	pthread_mutex_lock(&p->lock);
	if (p->nstages < STAGE_KEEP) {
		st->next = p->stages;
		p->stages = st;
		p->nstages++;
		st = NULL;
	}
	pthread_mutex_unlock(&p->lock);
	if (st) {
		wd_mem_unshare(q, st->mem, st->size);
		munmap(st->mem, st->size);
		free(st);
	}
}
