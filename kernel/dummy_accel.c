// SPDX-License-Identifier: GPL-2.0
/*
 * wd_dummy: a software accelerator on top of WrapDrive, the sample a vendor
 * driver copies.  Each device is a platform device with one engine thread
 * that polls its open queues NAPI-style and really does the work: memcpy,
 * crc32c, sha256 and zlib deflate/inflate.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <crypto/sha2.h>
#include <linux/crc32.h>
#include <linux/kthread.h>
#include <linux/ktime.h>
#include <linux/log2.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/platform_device.h>
#include <linux/random.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/sort.h>
#include <linux/vmalloc.h>
#include <linux/wait.h>
#include <linux/zlib.h>

#include "wrapdrive.h"

#define WD_DUMMY_NAME		"wd_dummy"
#define WD_DUMMY_MAX_DEVS	16
#define WD_DUMMY_MAX_QUEUES	4096
#define WD_DUMMY_CHUNK		(64 * 1024)
#define WD_DUMMY_BUDGET		64	/* descriptors per queue per round */
#define WD_DUMMY_SLEEP_MS	5	/* safety net against a lost kick */

static unsigned int nr_devices = 2;
module_param(nr_devices, uint, 0444);
MODULE_PARM_DESC(nr_devices, "number of dummy devices (1..16, default 2)");

static int numa_zones[WD_DUMMY_MAX_DEVS] = { 0, 1 };
static unsigned int nr_numa_zones;
module_param_array(numa_zones, int, &nr_numa_zones, 0444);
MODULE_PARM_DESC(numa_zones, "NUMA zone of each device (default 0,1)");

static int priorities[WD_DUMMY_MAX_DEVS] = { 10, 20 };
static unsigned int nr_priorities;
module_param_array(priorities, int, &nr_priorities, 0444);
MODULE_PARM_DESC(priorities, "priority of each device (default 10,20)");

static unsigned int max_queues = WD_DUMMY_MAX_QUEUES;
module_param(max_queues, uint, 0444);
MODULE_PARM_DESC(max_queues, "queues per device, all types together (1..4096, default 4096)");

static unsigned int ring_entries = 1024;
module_param(ring_entries, uint, 0444);
MODULE_PARM_DESC(ring_entries, "ring entries per queue, a power of two (2..65536, default 1024)");

static unsigned int poll_idle_us = 200;
module_param(poll_idle_us, uint, 0644);
MODULE_PARM_DESC(poll_idle_us, "engine polls at least this long after the last request (default 200)");

static unsigned int poll_max_us = 10000;
module_param(poll_max_us, uint, 0644);
MODULE_PARM_DESC(poll_max_us, "upper bound of the adaptive polling window (default 10000)");

static const struct wd_capa wd_dummy_capas[] = {
	{ .sysfs_name = "memcpy", .algo_type = "memcpy" },
	{ .sysfs_name = "crc32c", .algo_type = "crc32c" },
	{ .sysfs_name = "sha256", .algo_type = "sha256" },
	{ .sysfs_name = "zlib", .algo_type = "zlib" },
	{ .sysfs_name = "crc32c-weak", .algo_type = "crc32c",
	  .flags = WD_WEAK_ORDER },
	{ .sysfs_name = "sha256-sva", .algo_type = "sha256",
	  .flags = WD_CAPA_SHARE_ALL },
	{ .sysfs_name = "memcpy-sva", .algo_type = "memcpy",
	  .flags = WD_CAPA_SHARE_ALL },
};

enum wd_dummy_algo {
	WD_ALGO_MEMCPY,
	WD_ALGO_CRC32C,
	WD_ALGO_SHA256,
	WD_ALGO_ZLIB,
};

/*
 * Scratch memory of one executor (the engine thread, or a selfbench run):
 * bounce buffers and zlib workspaces.  Owned by exactly one thread at a
 * time, so it needs no lock.
 */
struct wd_dummy_scratch {
	u8 *in;
	u8 *out;
	void *deflate_ws;
	void *inflate_ws;
};

/*
 * struct wd_dummy_dev - one device and its engine.
 * Locking: @lock protects @queues; the engine holds it for a whole polling
 * round, so once queue_close has taken it the queue is no longer in use.
 * WrapDrive calls queue_open/queue_close with its accel lock held (taken
 * before @lock).  @kicked and @wq wake the engine; @scratch and @batch
 * belong to the engine thread.
 */
struct wd_dummy_dev {
	struct platform_device *pdev;
	struct wd_accel *accel;
	struct task_struct *engine;
	struct mutex lock;		/* queues; held for a round */
	struct list_head queues;
	wait_queue_head_t wq;
	atomic_t kicked;
	struct wd_dummy_scratch scratch;
	struct wd_desc batch[WD_DUMMY_BUDGET];
};

/* An open queue as the engine sees it; on wd_dummy_dev.queues. */
struct wd_dummy_queue {
	struct list_head node;
	struct wd_queue *q;
	enum wd_dummy_algo algo;
	bool weak;
};

static struct platform_device *wd_dummy_pdevs[WD_DUMMY_MAX_DEVS];

/* ---------------------------------------------------------------------- */
/* Algorithms, on queue buffers or on kernel buffers (selfbench) */

/* Where a request's data lives: a queue's buffers or kernel memory. */
struct wd_dummy_io {
	struct wd_queue *q;
	u64 src;
	u64 dst;
	const u8 *ksrc;
	u8 *kdst;
	u32 src_len;
	u32 dst_len;
	u32 out_len;
	u32 result;	/* crc32c: the CRC; zlib: src bytes used */
	u16 cflags;	/* WD_CF_* */
	u32 seed;	/* crc32c: starting value */
	int level;	/* deflate: zlib level */
};

static int io_read(struct wd_dummy_io *io, u32 off, void *buf, u32 n)
{
	if (!io->q) {
		memcpy(buf, io->ksrc + off, n);
		return 0;
	}
	return wd_queue_read(io->q, io->src + off, buf, n);
}

/* Append to the output; WD_STS_NOSPC when dst is too small. */
static int io_write(struct wd_dummy_io *io, const void *buf, u32 n)
{
	if (n > io->dst_len - io->out_len)
		return WD_STS_NOSPC;
	if (!io->q)
		memcpy(io->kdst + io->out_len, buf, n);
	else if (wd_queue_write(io->q, io->dst + io->out_len, buf, n))
		return WD_STS_BAD_ADDR;
	io->out_len += n;
	return WD_STS_OK;
}

static int wd_dummy_memcpy(struct wd_dummy_scratch *s, struct wd_dummy_io *io)
{
	u32 off, n;
	int sts;

	for (off = 0; off < io->src_len; off += n) {
		n = min_t(u32, io->src_len - off, WD_DUMMY_CHUNK);
		if (io_read(io, off, s->in, n))
			return WD_STS_BAD_ADDR;
		sts = io_write(io, s->in, n);
		if (sts)
			return sts;
		cond_resched();
	}
	return WD_STS_OK;
}

/* CRC-32C continuing from io->seed, a previous result (0 to start). */
static int wd_dummy_crc32c(struct wd_dummy_scratch *s, struct wd_dummy_io *io)
{
	u32 crc = ~io->seed;
	u32 off, n;

	for (off = 0; off < io->src_len; off += n) {
		n = min_t(u32, io->src_len - off, WD_DUMMY_CHUNK);
		if (io_read(io, off, s->in, n))
			return WD_STS_BAD_ADDR;
		crc = __crc32c_le(crc, s->in, n);
		cond_resched();
	}
	io->result = ~crc;
	return WD_STS_OK;
}

static int wd_dummy_sha256(struct wd_dummy_scratch *s, struct wd_dummy_io *io)
{
	struct sha256_state sctx;
	u8 digest[SHA256_DIGEST_SIZE];
	u32 off, n;

	sha256_init(&sctx);
	for (off = 0; off < io->src_len; off += n) {
		n = min_t(u32, io->src_len - off, WD_DUMMY_CHUNK);
		if (io_read(io, off, s->in, n))
			return WD_STS_BAD_ADDR;
		sha256_update(&sctx, s->in, n);
		cond_resched();
	}
	sha256_final(&sctx, digest);
	return io_write(io, digest, sizeof(digest));
}

static int wd_dummy_deflate(struct wd_dummy_scratch *s, struct wd_dummy_io *io)
{
	struct z_stream_s strm = { .workspace = s->deflate_ws };
	u32 off = 0, n;
	int flush, ret, sts = WD_STS_OK;

	if (zlib_deflateInit2(&strm, io->level, Z_DEFLATED, MAX_WBITS,
			      DEF_MEM_LEVEL, Z_DEFAULT_STRATEGY) != Z_OK)
		return WD_STS_BAD_DATA;
	do {
		n = min_t(u32, io->src_len - off, WD_DUMMY_CHUNK);
		if (io_read(io, off, s->in, n)) {
			sts = WD_STS_BAD_ADDR;
			break;
		}
		off += n;
		flush = off == io->src_len ? Z_FINISH : Z_NO_FLUSH;
		strm.next_in = s->in;
		strm.avail_in = n;
		do {
			strm.next_out = s->out;
			strm.avail_out = WD_DUMMY_CHUNK;
			ret = zlib_deflate(&strm, flush);
			if (ret != Z_OK && ret != Z_STREAM_END &&
			    ret != Z_BUF_ERROR) {
				sts = WD_STS_BAD_DATA;
				break;
			}
			sts = io_write(io, s->out,
				       WD_DUMMY_CHUNK - strm.avail_out);
			if (sts)
				break;
			cond_resched();
		} while (strm.avail_out == 0 ||
			 (flush == Z_FINISH && ret != Z_STREAM_END));
	} while (!sts && flush != Z_FINISH);
	zlib_deflateEnd(&strm);
	if (!sts)
		io->result = io->src_len;
	return sts;
}

static int wd_dummy_inflate(struct wd_dummy_scratch *s, struct wd_dummy_io *io)
{
	struct z_stream_s strm = { .workspace = s->inflate_ws };
	int ret = Z_OK, sts = WD_STS_OK;
	u32 off = 0, n;

	if (zlib_inflateInit2(&strm, MAX_WBITS) != Z_OK)
		return WD_STS_BAD_DATA;
	while (off < io->src_len && ret != Z_STREAM_END) {
		n = min_t(u32, io->src_len - off, WD_DUMMY_CHUNK);
		if (io_read(io, off, s->in, n)) {
			sts = WD_STS_BAD_ADDR;
			break;
		}
		off += n;
		strm.next_in = s->in;
		strm.avail_in = n;
		do {
			strm.next_out = s->out;
			strm.avail_out = WD_DUMMY_CHUNK;
			ret = zlib_inflate(&strm, Z_NO_FLUSH);
			if (ret != Z_OK && ret != Z_STREAM_END &&
			    ret != Z_BUF_ERROR) {
				sts = WD_STS_BAD_DATA;
				break;
			}
			sts = io_write(io, s->out,
				       WD_DUMMY_CHUNK - strm.avail_out);
			if (sts)
				break;
			cond_resched();
		} while (ret != Z_STREAM_END &&
			 (strm.avail_in || strm.avail_out == 0));
		if (sts)
			break;
	}
	if (!sts && ret != Z_STREAM_END)
		sts = WD_STS_BAD_DATA;	/* truncated or empty stream */
	if (!sts) {
		/* What follows the stream (trailing data) is the caller's. */
		io->result = off - strm.avail_in;
		io->cflags |= WD_CF_STREAM_END;
	}
	zlib_inflateEnd(&strm);
	return sts;
}

static bool wd_dummy_op_ok(enum wd_dummy_algo algo, u16 opcode)
{
	switch (opcode) {
	case WD_OP_NOP:
		return true;
	case WD_OP_MEMCPY:
		return algo == WD_ALGO_MEMCPY;
	case WD_OP_CRC32C:
		return algo == WD_ALGO_CRC32C;
	case WD_OP_SHA256:
		return algo == WD_ALGO_SHA256;
	case WD_OP_DEFLATE:
	case WD_OP_INFLATE:
		return algo == WD_ALGO_ZLIB;
	}
	return false;
}

static int wd_dummy_run(struct wd_dummy_scratch *s, u16 opcode,
			struct wd_dummy_io *io)
{
	switch (opcode) {
	case WD_OP_MEMCPY:
		return wd_dummy_memcpy(s, io);
	case WD_OP_CRC32C:
		return wd_dummy_crc32c(s, io);
	case WD_OP_SHA256:
		return wd_dummy_sha256(s, io);
	case WD_OP_DEFLATE:
		return wd_dummy_deflate(s, io);
	case WD_OP_INFLATE:
		return wd_dummy_inflate(s, io);
	}
	return WD_STS_OK;	/* WD_OP_NOP */
}

/* A buffer of @len bytes at @addr that wraps around the address space. */
static bool wd_dummy_wraps(u64 addr, u32 len)
{
	return len && addr + (len - 1) < addr;
}

/* zlib's level for desc.level: WD_LEVEL_DEFAULT, 1..9, WD_LEVEL_STORE. */
static int wd_dummy_zlib_level(u8 level)
{
	if (level == WD_LEVEL_DEFAULT)
		return Z_DEFAULT_COMPRESSION;
	return level == WD_LEVEL_STORE ? 0 : level;
}

/*
 * The checks made before any memory is touched, in the order of
 * uapi/wrapdrive.h: the first flaw found is the status.
 */
static int wd_dummy_check(enum wd_dummy_algo algo, const struct wd_desc *desc)
{
	if (!wd_dummy_op_ok(algo, desc->opcode))
		return WD_STS_BAD_OPCODE;
	if (desc->flags || desc->__rsvd[0] || desc->__rsvd[1])
		return WD_STS_BAD_FLAGS;
	if (desc->opcode == WD_OP_DEFLATE &&
	    (desc->level > WD_LEVEL_STORE || desc->flush > WD_FLUSH_FULL))
		return WD_STS_BAD_FLAGS;
	if (desc->src_len > WD_MAX_LEN || desc->dst_len > WD_MAX_LEN ||
	    wd_dummy_wraps(desc->src, desc->src_len) ||
	    wd_dummy_wraps(desc->dst, desc->dst_len))
		return WD_STS_BAD_LEN;
	if ((desc->opcode == WD_OP_MEMCPY && desc->dst_len < desc->src_len) ||
	    (desc->opcode == WD_OP_SHA256 &&
	     desc->dst_len < WD_SHA256_DIGEST_LEN))
		return WD_STS_NOSPC;
	return WD_STS_OK;
}

/* Execute one descriptor (already copied out of the ring). */
static void wd_dummy_exec(struct wd_dummy_dev *d, struct wd_dummy_queue *dq,
			  const struct wd_desc *desc, struct wd_cqe *cqe)
{
	struct wd_dummy_io io = {
		.q = dq->q,
		.src = desc->src,
		.dst = desc->dst,
		.src_len = desc->src_len,
		.dst_len = desc->dst_len,
		.seed = desc->seed,
		.level = wd_dummy_zlib_level(desc->level),
	};
	int sts;

	sts = wd_dummy_check(dq->algo, desc);
	if (!sts)
		sts = wd_dummy_run(&d->scratch, desc->opcode, &io);
	if (sts)
		pr_debug_ratelimited("queue request tag %u opcode %u: status %d\n",
				     desc->tag, desc->opcode, sts);
	*cqe = (struct wd_cqe) {
		.tag = desc->tag,
		.status = sts,
		.flags = sts ? 0 : io.cflags,
		.out_len = sts ? 0 : io.out_len,
		.result = sts ? 0 : io.result,
	};
}

/* ---------------------------------------------------------------------- */
/* Engine */

static int wd_dummy_cmp_len(const void *a, const void *b)
{
	const struct wd_desc *x = a, *y = b;

	if (x->src_len != y->src_len)
		return x->src_len < y->src_len ? -1 : 1;
	return 0;
}

/* One polling round over every open queue; returns descriptors handled. */
static u32 wd_dummy_round(struct wd_dummy_dev *d)
{
	struct wd_dummy_queue *dq;
	struct wd_cqe cqe;
	u32 total = 0, n, i;
	bool access;

	mutex_lock(&d->lock);
	list_for_each_entry(dq, &d->queues, node) {
		n = wd_queue_fetch(dq->q, d->batch, WD_DUMMY_BUDGET);
		if (!n)
			continue;
		total += n;
		/* A weakly ordered queue really reorders: small ones first. */
		if (dq->weak)
			sort(d->batch, n, sizeof(d->batch[0]), wd_dummy_cmp_len,
			     NULL);
		access = !wd_queue_begin_access(dq->q);
		for (i = 0; i < n; i++) {
			if (access) {
				wd_dummy_exec(d, dq, &d->batch[i], &cqe);
			} else {
				cqe = (struct wd_cqe) {
					.tag = d->batch[i].tag,
					.status = WD_STS_BAD_ADDR,
				};
			}
			wd_queue_post(dq->q, &cqe);
			/*
			 * A sleeper wants the first completion, not the last of
			 * the round: a round of large requests can take seconds.
			 */
			wd_queue_notify(dq->q);
		}
		if (access)
			wd_queue_end_access(dq->q);
		cond_resched();
	}
	mutex_unlock(&d->lock);
	return total;
}

static bool wd_dummy_any_pending(struct wd_dummy_dev *d)
{
	struct wd_dummy_queue *dq;
	bool ret = false;

	lockdep_assert_held(&d->lock);
	list_for_each_entry(dq, &d->queues, node)
		if (wd_queue_pending(dq->q))
			ret = true;
	return ret;
}

static void wd_dummy_set_idle(struct wd_dummy_dev *d, bool idle)
{
	struct wd_dummy_queue *dq;

	lockdep_assert_held(&d->lock);
	list_for_each_entry(dq, &d->queues, node)
		wd_queue_set_idle(dq->q, idle);
}

/* Set IDLE everywhere, then re-check the doorbells: true if we may sleep. */
static bool wd_dummy_go_idle(struct wd_dummy_dev *d)
{
	bool busy;

	mutex_lock(&d->lock);
	wd_dummy_set_idle(d, true);
	/* IDLE visible before the doorbells are read; pairs with user's mb. */
	smp_mb();
	busy = wd_dummy_any_pending(d);
	if (busy)
		wd_dummy_set_idle(d, false);
	mutex_unlock(&d->lock);
	return !busy;
}

static void wd_dummy_wake_up(struct wd_dummy_dev *d)
{
	mutex_lock(&d->lock);
	wd_dummy_set_idle(d, false);
	mutex_unlock(&d->lock);
}

/*
 * The polling window adapts like NAPI's interrupt moderation: a kick that
 * comes soon after the engine went idle means requests arrive a little
 * slower than the window, and each of them now pays a wake-up; so the
 * window doubles (up to poll_max_us).  A long quiet spell brings it back
 * towards poll_idle_us, so an idle device does not burn CPU.
 */
static u64 wd_dummy_adapt_window(u64 window, u64 idle_ns)
{
	u64 lo = (u64)READ_ONCE(poll_idle_us) * NSEC_PER_USEC;
	u64 hi = max_t(u64, lo, (u64)READ_ONCE(poll_max_us) * NSEC_PER_USEC);

	if (idle_ns < 4 * window)
		window *= 2;
	else if (idle_ns > 64 * window)
		window /= 2;
	return clamp(window, lo, hi);
}

static int wd_dummy_engine(void *data)
{
	struct wd_dummy_dev *d = data;
	u64 last_work = ktime_get_ns();
	u64 window = (u64)READ_ONCE(poll_idle_us) * NSEC_PER_USEC;
	u64 idle_since = 0;
	bool idle = false;
	u64 t0;
	u32 n;

	while (!kthread_should_stop()) {
		t0 = ktime_get_ns();
		n = wd_dummy_round(d);
		if (n) {
			last_work = ktime_get_ns();
			wd_accel_add_busy_ns(d->accel, last_work - t0);
			if (idle) {
				wd_dummy_wake_up(d);
				idle = false;
			}
			cond_resched();
			continue;
		}
		if (!idle) {
			if (ktime_get_ns() - last_work < window) {
				cond_resched();
				continue;
			}
			if (!wd_dummy_go_idle(d))
				continue;
			idle = true;
			idle_since = ktime_get_ns();
		}
		wait_event_idle_timeout(d->wq, atomic_read(&d->kicked) ||
					kthread_should_stop(),
					msecs_to_jiffies(WD_DUMMY_SLEEP_MS));
		if (atomic_xchg(&d->kicked, 0)) {
			wd_dummy_wake_up(d);
			idle = false;
			last_work = ktime_get_ns();
			window = wd_dummy_adapt_window(window,
						       last_work - idle_since);
		}
	}
	return 0;
}

static void wd_dummy_kick(struct wd_queue *q)
{
	struct wd_dummy_dev *d = wd_accel_priv(wd_queue_accel(q));

	atomic_set(&d->kicked, 1);
	wake_up(&d->wq);
}

static int wd_dummy_queue_open(struct wd_queue *q)
{
	struct wd_dummy_dev *d = wd_accel_priv(wd_queue_accel(q));
	const struct wd_capa *capa = wd_queue_capa(q);
	struct wd_dummy_queue *dq;

	dq = kzalloc(sizeof(*dq), GFP_KERNEL);
	if (!dq)
		return -ENOMEM;
	dq->q = q;
	dq->weak = capa->flags & WD_WEAK_ORDER;
	if (!strcmp(capa->algo_type, "memcpy"))
		dq->algo = WD_ALGO_MEMCPY;
	else if (!strcmp(capa->algo_type, "crc32c"))
		dq->algo = WD_ALGO_CRC32C;
	else if (!strcmp(capa->algo_type, "sha256"))
		dq->algo = WD_ALGO_SHA256;
	else
		dq->algo = WD_ALGO_ZLIB;
	wd_queue_set_priv(q, dq);
	mutex_lock(&d->lock);
	list_add_tail(&dq->node, &d->queues);
	mutex_unlock(&d->lock);
	wd_dummy_kick(q);
	return 0;
}

static void wd_dummy_queue_close(struct wd_queue *q)
{
	struct wd_dummy_dev *d = wd_accel_priv(wd_queue_accel(q));
	struct wd_dummy_queue *dq = wd_queue_priv(q);

	mutex_lock(&d->lock);
	list_del(&dq->node);
	mutex_unlock(&d->lock);
	wd_queue_set_priv(q, NULL);
	kfree(dq);
}

/* ---------------------------------------------------------------------- */
/* Self-benchmark: the engine's algorithm code on kernel buffers */

static void wd_dummy_scratch_free(struct wd_dummy_scratch *s)
{
	kvfree(s->in);
	kvfree(s->out);
	vfree(s->deflate_ws);
	vfree(s->inflate_ws);
}

static int wd_dummy_scratch_alloc(struct wd_dummy_scratch *s)
{
	s->in = kvmalloc(WD_DUMMY_CHUNK, GFP_KERNEL);
	s->out = kvmalloc(WD_DUMMY_CHUNK, GFP_KERNEL);
	s->deflate_ws =
		vmalloc(zlib_deflate_workspacesize(MAX_WBITS, DEF_MEM_LEVEL));
	s->inflate_ws = vmalloc(zlib_inflate_workspacesize());
	if (!s->in || !s->out || !s->deflate_ws || !s->inflate_ws) {
		wd_dummy_scratch_free(s);
		return -ENOMEM;
	}
	return 0;
}

static int wd_dummy_selfbench(struct wd_accel *accel, const char *algo,
			      u32 size, u32 count, u64 *nsec)
{
	struct wd_dummy_scratch s = {};
	struct wd_dummy_io io = {};
	u32 i, dst_len;
	u16 opcode;
	u8 *src, *dst;
	u64 t0;
	int ret = 0, sts;

	if (!strcmp(algo, "memcpy"))
		opcode = WD_OP_MEMCPY;
	else if (!strcmp(algo, "crc32c"))
		opcode = WD_OP_CRC32C;
	else if (!strcmp(algo, "sha256"))
		opcode = WD_OP_SHA256;
	else if (!strcmp(algo, "zlib"))
		opcode = WD_OP_DEFLATE;
	else
		return -EINVAL;

	dst_len = max_t(u32, size + size / 8 + 1024, WD_SHA256_DIGEST_LEN);
	src = vmalloc(max_t(u32, size, 1));
	dst = vmalloc(dst_len);
	if (!src || !dst || wd_dummy_scratch_alloc(&s)) {
		ret = -ENOMEM;
		goto out;
	}
	/* Half-compressible data: random bytes and runs. */
	get_random_bytes(src, size / 2);
	memset(src + size / 2, 'w', size - size / 2);

	io.ksrc = src;
	io.kdst = dst;
	io.src_len = size;
	io.dst_len = dst_len;
	io.level = Z_DEFAULT_COMPRESSION;
	t0 = ktime_get_ns();
	for (i = 0; i < count; i++) {
		io.out_len = 0;
		sts = wd_dummy_run(&s, opcode, &io);
		if (sts) {
			ret = -EIO;
			goto out;
		}
		cond_resched();
		if (fatal_signal_pending(current)) {
			ret = -EINTR;
			goto out;
		}
	}
	*nsec = ktime_get_ns() - t0;
out:
	wd_dummy_scratch_free(&s);
	vfree(src);
	vfree(dst);
	return ret;
}

static const struct wd_accel_ops wd_dummy_ops = {
	.queue_open = wd_dummy_queue_open,
	.queue_close = wd_dummy_queue_close,
	.kick = wd_dummy_kick,
	.selfbench = wd_dummy_selfbench,
};

/* ---------------------------------------------------------------------- */
/* Platform driver */

static int wd_dummy_probe(struct platform_device *pdev)
{
	unsigned int idx = pdev->id;
	struct wd_accel_info info = {
		.name = WD_DUMMY_NAME,
		.owner = THIS_MODULE,
		.max_queues = max_queues,
		.ring_entries = ring_entries,
		.capas = wd_dummy_capas,
		.nr_capas = ARRAY_SIZE(wd_dummy_capas),
	};
	struct wd_dummy_dev *d;
	int ret;

	if (idx >= WD_DUMMY_MAX_DEVS)
		return -EINVAL;
	info.numa_zone = idx < max(nr_numa_zones, 2U) ? numa_zones[idx] : 0;
	info.priority = idx < max(nr_priorities, 2U) ? priorities[idx] :
		10 * (idx + 1);
	if (info.numa_zone >= 0 && info.numa_zone < MAX_NUMNODES &&
	    node_online(info.numa_zone))
		set_dev_node(&pdev->dev, info.numa_zone);

	d = devm_kzalloc(&pdev->dev, sizeof(*d), GFP_KERNEL);
	if (!d)
		return -ENOMEM;
	d->pdev = pdev;
	mutex_init(&d->lock);
	INIT_LIST_HEAD(&d->queues);
	init_waitqueue_head(&d->wq);
	atomic_set(&d->kicked, 0);
	ret = wd_dummy_scratch_alloc(&d->scratch);
	if (ret)
		return ret;

	/* The engine needs d->accel: create it stopped, start it after. */
	d->engine = kthread_create(wd_dummy_engine, d, "wd_dummy/%u", idx);
	if (IS_ERR(d->engine)) {
		ret = PTR_ERR(d->engine);
		goto err_scratch;
	}
	d->accel = wd_register_accel(&pdev->dev, &info, &wd_dummy_ops, d);
	if (IS_ERR(d->accel)) {
		ret = PTR_ERR(d->accel);
		kthread_stop(d->engine);
		goto err_scratch;
	}
	wake_up_process(d->engine);
	platform_set_drvdata(pdev, d);
	return 0;

err_scratch:
	wd_dummy_scratch_free(&d->scratch);
	return ret;
}

static void wd_dummy_remove(struct platform_device *pdev)
{
	struct wd_dummy_dev *d = platform_get_drvdata(pdev);

	/* Kills open queues (queue_close), waits for their users. */
	wd_unregister_accel(d->accel);
	kthread_stop(d->engine);
	wd_dummy_scratch_free(&d->scratch);
	mutex_destroy(&d->lock);
}

static struct platform_driver wd_dummy_driver = {
	.driver = {
		.name = WD_DUMMY_NAME,
	},
	.probe = wd_dummy_probe,
	.remove_new = wd_dummy_remove,
};

static void wd_dummy_del_devices(void)
{
	int i;

	for (i = WD_DUMMY_MAX_DEVS - 1; i >= 0; i--) {
		platform_device_unregister(wd_dummy_pdevs[i]);
		wd_dummy_pdevs[i] = NULL;
	}
}

static int __init wd_dummy_init(void)
{
	unsigned int i;
	int ret;

	if (!nr_devices || nr_devices > WD_DUMMY_MAX_DEVS) {
		pr_err("nr_devices must be 1..%d\n", WD_DUMMY_MAX_DEVS);
		return -EINVAL;
	}
	if (!max_queues || max_queues > WD_DUMMY_MAX_QUEUES) {
		pr_err("max_queues must be 1..%d\n", WD_DUMMY_MAX_QUEUES);
		return -EINVAL;
	}
	if (ring_entries < 2 || ring_entries > 65536 ||
	    !is_power_of_2(ring_entries)) {
		pr_err("ring_entries must be a power of two in 2..65536\n");
		return -EINVAL;
	}
	ret = platform_driver_register(&wd_dummy_driver);
	if (ret)
		return ret;
	for (i = 0; i < nr_devices; i++) {
		wd_dummy_pdevs[i] = platform_device_register_simple(WD_DUMMY_NAME,
								    i, NULL, 0);
		if (IS_ERR(wd_dummy_pdevs[i])) {
			ret = PTR_ERR(wd_dummy_pdevs[i]);
			wd_dummy_pdevs[i] = NULL;
			wd_dummy_del_devices();
			platform_driver_unregister(&wd_dummy_driver);
			return ret;
		}
	}
	return 0;
}

static void __exit wd_dummy_exit(void)
{
	wd_dummy_del_devices();
	platform_driver_unregister(&wd_dummy_driver);
}

module_init(wd_dummy_init);
module_exit(wd_dummy_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("WrapDrive sample driver: a software accelerator");
MODULE_SOFTDEP("pre: wrapdrive");
