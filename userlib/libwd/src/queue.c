// SPDX-License-Identifier: GPL-2.0
/*
 * libwd: opening and releasing a queue.
 *
 * wd_request_queue: take the queue named by q->uuid, or a free provisioned
 * queue, or select and create an mdev (select.c); open it the VFIO way
 * (container, TYPE1v2, group, device fd), map the three regions (doorbell
 * read-write, CQ read-only, SQ read-write), check the header, and route
 * the queue-state irq to an eventfd.  Every step unwinds, and an mdev this
 * call created is removed when a later step fails.
 *
 * udev: a new mdev's VFIO group node (and its `remove` file) is created
 * root-only and given to the wrapdrive group by udev a moment later (the
 * rules `wrapdrive setup` installs).  So for an mdev it just created, the
 * library retries an open or a remove that fails with EACCES, for at most
 * UDEV_WAIT_MS and only while udev runs; for any other queue EACCES is an
 * answer at once.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <linux/vfio.h>

#include "wd_priv.h"

#define DRAIN_MS	1000	/* release waits this long for requests in flight */
#define UDEV_WAIT_MS	5000	/* how long a new mdev's nodes may wait for udev */
#define UDEV_CONTROL	"/run/udev/control"	/* exists while udevd runs */

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Whether an EACCES on a node of a just-created mdev is worth another try:
 * udev runs and the deadline has not passed.  Sleeps a little first.
 */
static int udev_may_fix(long long deadline)
{
	struct timespec nap = { 0, 10 * 1000 * 1000 };

	if (access(UDEV_CONTROL, F_OK) || now_ms() >= deadline)
		return 0;
	nanosleep(&nap, NULL);
	return 1;
}

/* open(path), retrying EACCES while udev may still change the node. */
static int open_node(const char *path, int flags, int fresh)
{
	long long deadline = now_ms() + UDEV_WAIT_MS;
	int fd;

	for (;;) {
		fd = open(path, flags);
		if (fd >= 0 || errno != EACCES || !fresh || !udev_may_fix(deadline))
			return fd;
	}
}

/* Remove an mdev this process created, waiting for udev like open_node. */
static void remove_created(const char *root, const char *uuid)
{
	long long deadline = now_ms() + UDEV_WAIT_MS;

	while (wd_sel_remove(root, uuid) == -EACCES && udev_may_fix(deadline))
		;
}

static struct wd_queue_priv *priv_new(void)
{
	struct wd_queue_priv *p = calloc(1, sizeof(*p));
	pthread_condattr_t ca;

	if (!p)
		return NULL;
	pthread_mutex_init(&p->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&p->wake, &ca);
	pthread_condattr_destroy(&ca);
	p->container_fd = -1;
	p->group_fd = -1;
	p->kick_fd = -1;
	p->event_fd = -1;
	p->last = -1;
	return p;
}

static void priv_free(struct wd_queue_priv *p)
{
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->wake);
	free(p);
}

static int region(struct wd_queue *q, __u32 index, struct vfio_region_info *ri)
{
	memset(ri, 0, sizeof(*ri));
	ri->argsz = sizeof(*ri);
	ri->index = index;
	if (ioctl(q->device_fd, VFIO_DEVICE_GET_REGION_INFO, ri))
		return wd_err(errno, "%s: VFIO_DEVICE_GET_REGION_INFO %u", q->name, index);
	if (!ri->size)
		return wd_fail(-EPROTO, "%s: region %u is empty", q->name, index);
	return 0;
}

static void *map_region(struct wd_queue *q, const struct vfio_region_info *ri, size_t len,
			int prot)
{
	void *m = mmap(NULL, len, prot, MAP_SHARED, q->device_fd, (off_t)ri->offset);

	if (m == MAP_FAILED) {
		wd_err(errno, "%s: mmap of region %u", q->name, ri->index);
		return NULL;
	}
	return m;
}

static int set_irq(struct wd_queue *q, int efd)
{
	char buf[sizeof(struct vfio_irq_set) + sizeof(int)];
	struct vfio_irq_set *s = (struct vfio_irq_set *)buf;

	memset(buf, 0, sizeof(buf));
	s->argsz = efd >= 0 ? sizeof(buf) : sizeof(*s);
	s->flags = (efd >= 0 ? VFIO_IRQ_SET_DATA_EVENTFD : VFIO_IRQ_SET_DATA_NONE) |
		   VFIO_IRQ_SET_ACTION_TRIGGER;
	s->index = WD_IRQ_QUEUE_STATE;
	s->count = efd >= 0 ? 1 : 0;
	if (efd >= 0)
		memcpy(s->data, &efd, sizeof(efd));
	if (ioctl(q->device_fd, VFIO_DEVICE_SET_IRQS, s))
		return wd_err(errno, "%s: VFIO_DEVICE_SET_IRQS", q->name);
	return 0;
}

/*
 * group_fd: the VFIO group, already open (a provisioned queue found free),
 * or -1 to open it here; fresh: the mdev was created by this call.
 */
static int open_vfio(struct wd_queue *q, int group_fd, int fresh)
{
	struct wd_queue_priv *p = q->priv;
	struct vfio_group_status gs = { .argsz = sizeof(gs) };
	struct vfio_device_info di = { .argsz = sizeof(di) };
	struct vfio_region_info db, cq, sq;
	char path[64];
	int group, ret;

	p->group_fd = group_fd;
	group = wd_sel_group(p->root, q->name);
	if (group < 0)
		return group;
	p->container_fd = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
	if (p->container_fd < 0)
		return wd_err(errno, "open /dev/vfio/vfio");
	ret = ioctl(p->container_fd, VFIO_GET_API_VERSION);
	if (ret != VFIO_API_VERSION)
		return wd_fail(-EPROTO, "unknown VFIO API version %d", ret);
	if (ioctl(p->container_fd, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) <= 0)
		return wd_fail(-ENOTSUP, "VFIO type1v2 IOMMU not supported (modprobe vfio_iommu_type1)");
	snprintf(path, sizeof(path), "/dev/vfio/%d", group);
	if (p->group_fd < 0)
		p->group_fd = open_node(path, O_RDWR | O_CLOEXEC, fresh);
	if (p->group_fd < 0 && errno == EBUSY)
		return wd_err(errno, "open %s: queue %s is in use by another process", path,
			      q->name);
	if (p->group_fd < 0)
		return wd_err(errno, "open %s (queue %s)", path, q->name);
	if (ioctl(p->group_fd, VFIO_GROUP_GET_STATUS, &gs))
		return wd_err(errno, "VFIO_GROUP_GET_STATUS %s", path);
	if (!(gs.flags & VFIO_GROUP_FLAGS_VIABLE))
		return wd_fail(-EPROTO, "VFIO group %d is not viable", group);
	if (ioctl(p->group_fd, VFIO_GROUP_SET_CONTAINER, &p->container_fd))
		return wd_err(errno, "VFIO_GROUP_SET_CONTAINER");
	if (ioctl(p->container_fd, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU))
		return wd_err(errno, "VFIO_SET_IOMMU");
	q->device_fd = ioctl(p->group_fd, VFIO_GROUP_GET_DEVICE_FD, q->name);
	if (q->device_fd < 0)
		return wd_err(errno, "VFIO_GROUP_GET_DEVICE_FD %s", q->name);
	if (ioctl(q->device_fd, VFIO_DEVICE_GET_INFO, &di))
		return wd_err(errno, "%s: VFIO_DEVICE_GET_INFO", q->name);
	if (di.num_regions < WD_NUM_REGIONS || di.num_irqs < WD_NUM_IRQS)
		return wd_fail(-EPROTO, "%s: %u regions / %u irqs, not a WrapDrive v%d queue", q->name,
			      di.num_regions, di.num_irqs, WD_ABI_VERSION);
	ret = region(q, WD_REGION_DOORBELL, &db);
	if (!ret)
		ret = region(q, WD_REGION_CQ, &cq);
	if (!ret)
		ret = region(q, WD_REGION_SQ, &sq);
	if (ret)
		return ret;
	p->kick_fd = q->device_fd;
	p->kick_off = (off_t)db.offset;
	p->db_len = db.size < WD_PAGE ? db.size : WD_PAGE;
	if (p->db_len < sizeof(struct wd_doorbell))
		return wd_fail(-EPROTO, "%s: doorbell region of %zu bytes", q->name, p->db_len);
	p->db_map = map_region(q, &db, p->db_len, PROT_READ | PROT_WRITE);
	if (!p->db_map)
		return -errno;
	p->cq_len = cq.size;
	if (p->cq_len < sizeof(struct wd_ring_hdr))
		return wd_fail(-EPROTO, "%s: CQ region of %zu bytes", q->name, p->cq_len);
	p->cq_map = map_region(q, &cq, p->cq_len, PROT_READ);
	if (!p->cq_map)
		return -errno;
	p->sq_len = sq.size;
	p->sq_map = map_region(q, &sq, p->sq_len, PROT_READ | PROT_WRITE);
	if (!p->sq_map)
		return -errno;
	p->db = p->db_map;
	p->hdr = p->cq_map;
	p->sq = p->sq_map;
	ret = wd_ring_check_hdr(q, p->cq_len, p->sq_len);
	if (ret)
		return ret;
	ret = wd_ring_init(q);
	if (ret)
		return ret;
	q->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (q->event_fd < 0)
		return wd_err(errno, "eventfd");
	p->event_fd = q->event_fd;
	return set_irq(q, q->event_fd);
}

/* Undo whatever open_vfio did; remove the mdev if asked. */
static void close_queue(struct wd_queue *q, int remove)
{
	struct wd_queue_priv *p = q->priv;
	int dead = p->dead || (p->hdr && (p->hdr->status & (WD_Q_DEAD | WD_Q_RELEASE)));

	if (q->event_fd >= 0 && q->device_fd >= 0 && !dead)
		set_irq(q, -1);
	wd_mem_fini(q, !dead);
	wd_ring_fini(q);
	if (p->sq_map)
		munmap(p->sq_map, p->sq_len);
	if (p->cq_map)
		munmap((void *)p->cq_map, p->cq_len);
	if (p->db_map)
		munmap(p->db_map, p->db_len);
	if (q->event_fd >= 0)
		close(q->event_fd);
	if (q->device_fd >= 0)
		close(q->device_fd);
	if (p->group_fd >= 0)
		close(p->group_fd);
	if (p->container_fd >= 0)
		close(p->container_fd);
	if (remove && q->name[0])
		remove_created(p->root, q->name);
	q->event_fd = -1;
	q->device_fd = -1;
	q->priv = NULL;
	priv_free(p);
}

/* Find or make the mdev: q->uuid, a free provisioned queue, or a new one. */
static int pick_mdev(struct wd_queue *q, struct wd_capa *capa, struct wd_sel_cand *c,
		     int *group_fd)
{
	struct wd_queue_priv *p = q->priv;
	int node = wd_sel_node(p->root), ret;

	*group_fd = -1;
	if (q->uuid) {
		ret = wd_sel_lookup(p->root, capa, q->uuid, c);
		if (!ret) {
			snprintf(q->name, sizeof(q->name), "%s", q->uuid);
			q->provisioned = 1;	/* not ours to remove */
		}
		return ret;
	}
	ret = wd_sel_provisioned(p->root, capa, node, NULL, c, q->name);
	if (ret >= 0) {
		*group_fd = ret;
		q->provisioned = 1;
		return 0;
	}
	q->provisioned = 0;
	return wd_sel_create(p->root, capa, node, NULL, c, q->name);
}

int wd_request_queue(struct wd_queue *q, struct wd_capa *capa)
{
	struct wd_sel_cand c;
	struct wd_queue_priv *p;
	int ret, err, group_fd;

	if (!q || !capa || !capa->alg)
		return wd_fail(-EINVAL, "wd_request_queue: NULL queue or capability");
	if (q->priv)
		return wd_fail(-EBUSY, "wd_request_queue: queue already open");
	p = priv_new();
	if (!p)
		return wd_err(ENOMEM, "wd_request_queue");
	snprintf(p->root, sizeof(p->root), "%s", q->sysfs_root ? q->sysfs_root : "/sys");
	q->device_fd = -1;
	q->event_fd = -1;
	q->provisioned = 0;
	q->priv = p;
	ret = pick_mdev(q, capa, &c, &group_fd);
	if (ret) {
		q->priv = NULL;
		priv_free(p);
		q->name[0] = 0;
		return ret;
	}
	snprintf(q->parent, sizeof(q->parent), "%s", c.parent);
	snprintf(q->mdev_type, sizeof(q->mdev_type), "%s", c.mdev_type);
	snprintf(q->alg, sizeof(q->alg), "%s", c.alg);
	q->type_flags = c.flags;
	q->numa_zone = c.numa_zone;
	q->priority = c.priority;
	ret = open_vfio(q, group_fd, !q->provisioned);
	if (ret) {
		err = errno;
		/* keeps the message of the failure; removes only what it made */
		close_queue(q, !q->provisioned);
		errno = err;
		return ret;
	}
	return 0;
}

void wd_release_queue(struct wd_queue *q)
{
	struct wd_queue_priv *p = q ? q->priv : NULL;

	if (!p)
		return;
	if (!p->sim && !wd_is_dead(q) && !p->broken && p->sq_tail != p->cq_head)
		wd_wait_drain(q, DRAIN_MS);
	if (p->sim) {
		wd_detach_memory(q);
		return;
	}
	close_queue(q, !q->provisioned);
}

int wd_attach_memory(struct wd_queue *q, void *doorbell, const void *cq_region,
		     size_t cq_size, void *sq_region, size_t sq_size, int kick_fd, int event_fd)
{
	struct wd_queue_priv *p;
	int ret;

	if (!q || q->priv || !doorbell || !cq_region || !sq_region)
		return wd_fail(-EINVAL, "wd_attach_memory: bad arguments");
	p = priv_new();
	if (!p)
		return wd_err(ENOMEM, "wd_attach_memory");
	p->sim = 1;
	p->db = doorbell;
	p->hdr = cq_region;
	p->sq = sq_region;
	p->kick_fd = kick_fd;
	p->kick_off = 0;
	q->priv = p;
	q->device_fd = -1;
	q->event_fd = event_fd;
	p->event_fd = event_fd;
	snprintf(q->name, sizeof(q->name), "simulated");
	ret = wd_ring_check_hdr(q, cq_size, sq_size);
	if (!ret)
		ret = wd_ring_init(q);
	if (ret) {
		wd_ring_fini(q);
		q->priv = NULL;
		priv_free(p);
	}
	return ret;
}

void wd_detach_memory(struct wd_queue *q)
{
	struct wd_queue_priv *p = q ? q->priv : NULL;

	if (!p || !p->sim)
		return;
	wd_mem_fini(q, 0);
	wd_ring_fini(q);
	q->priv = NULL;
	priv_free(p);
}
