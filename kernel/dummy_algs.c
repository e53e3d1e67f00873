// SPDX-License-Identifier: GPL-2.0
/*
 * wd_dummy algorithms: memcpy, crc32c, sha256 and zlib, one-shot and
 * chained (uapi/wrapdrive.h, "Chaining").  Each request is checked, run in
 * WD_DUMMY_CHUNK steps through a bounce buffer, and answered with one
 * completion.  Every step may sleep and checks for a fatal signal: the
 * engine is sent SIGKILL when the queue it serves is closed, so a request
 * waiting on user memory (or a huge one) ends early with WD_STS_ABORTED.
 *
 * Where chained state lives:
 *   crc32c  in the descriptor (desc.seed), nothing kept;
 *   sha256  in user memory (struct wd_sha256_ctx at desc.ctx), nothing kept;
 *   zlib    in the driver: a stream slot of the queue holds a z_stream and
 *           its workspace (about 270 KiB to deflate, 45 KiB to inflate),
 *           which hold kernel pointers and cannot be trusted to user
 *           memory.  Slots are per queue (hdr.max_streams of them); their
 *           memory is charged to the device, up to stream_mem_kb.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <crypto/sha2.h>
#include <linux/crc32.h>
#include <linux/dma-mapping.h>
#include <linux/highmem.h>
#include <linux/mem_encrypt.h>
#include <linux/mm.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/sort.h>
#include <linux/vmalloc.h>
#include <linux/zlib.h>

#include "dummy_accel.h"

#define WD_DF_CHAIN	(WD_DF_MORE | WD_DF_CONT)

/*
 * struct wd_dummy_zstream - one zlib stream: a z_stream and its workspace.
 * @mem: bytes charged to the device (0 for an engine's one-shot state)
 * Owned like the queue (or the scratch) that holds it: no lock.
 */
struct wd_dummy_zstream {
	struct z_stream_s zs;
	u16 opcode;
	size_t mem;
};

/* Where a request's data lives: a queue's buffers or kernel memory. */
struct wd_dummy_io {
	struct wd_queue *q;	/* NULL: ksrc/kdst (selfbench) */
	u64 src;
	u64 dst;
	const u8 *ksrc;
	u8 *kdst;
	u32 src_len;
	u32 dst_len;
	u32 out_len;
	u32 result;	/* crc32c: the CRC; zlib: src bytes used */
	u16 cflags;	/* WD_CF_* */
};

/*
 * dma_api mode: the engine plays a DMA device.  A piece of the request's
 * memory is mapped with wd_queue_dma_map() for the platform device and
 * reached through its DMA addresses only, each turned back into the page it
 * names (no IOMMU in front of this device: dma-direct, perhaps a swiotlb
 * bounce buffer, which the unmap copies back).  Pieces are at most
 * WD_DUMMY_CHUNK bytes, so a request pins little at a time.
 */
static void wd_dummy_dev_access(dma_addr_t addr, void *buf, u32 len,
				bool to_mem)
{
	phys_addr_t phys = __sme_clr(addr);

	while (len) {
		u32 off = offset_in_page(phys);
		u32 n = min_t(u32, len, PAGE_SIZE - off);
		void *kaddr = kmap_local_page(pfn_to_page(PHYS_PFN(phys)));

		if (to_mem)
			memcpy(kaddr + off, buf, n);
		else
			memcpy(buf, kaddr + off, n);
		kunmap_local(kaddr);
		phys += n;
		buf += n;
		len -= n;
	}
}

static int wd_dummy_dma_copy(struct wd_queue *q, u64 addr, void *buf, u32 n,
			     bool to_mem)
{
	struct wd_dma_map *map;
	struct scatterlist *sg;
	u32 done = 0;
	int i;

	if (!n)
		return 0;
	map = wd_queue_dma_map(q, addr, n,
			       to_mem ? DMA_FROM_DEVICE : DMA_TO_DEVICE);
	if (IS_ERR(map))
		return PTR_ERR(map);
	for_each_sgtable_dma_sg(&map->sgt, sg, i) {
		wd_dummy_dev_access(sg_dma_address(sg), buf + done,
				    sg_dma_len(sg), to_mem);
		done += sg_dma_len(sg);
	}
	wd_queue_dma_unmap(q, map);
	return 0;
}

/* @n bytes of a queue's memory at @addr to or from @buf: a WD_STS_*. */
static int wd_dummy_user_copy(struct wd_queue *q, u64 addr, void *buf, u32 n,
			      bool to_mem)
{
	int ret;

	if (wd_dummy_dma_api)
		ret = wd_dummy_dma_copy(q, addr, buf, n, to_mem);
	else if (to_mem)
		ret = wd_queue_write(q, addr, buf, n);
	else
		ret = wd_queue_read(q, addr, buf, n);
	if (!ret)
		return WD_STS_OK;
	/* Told to stop (the queue closes): the memory is not at fault. */
	if (fatal_signal_pending(current))
		return WD_STS_ABORTED;
	return ret == -ENOMEM ? WD_STS_NOMEM : WD_STS_BAD_ADDR;
}

/* Bytes @off.. of the input: a WD_STS_*. */
static int io_read(struct wd_dummy_io *io, u32 off, void *buf, u32 n)
{
	if (!io->q) {
		memcpy(buf, io->ksrc + off, n);
		return WD_STS_OK;
	}
	return wd_dummy_user_copy(io->q, io->src + off, buf, n, false);
}

/* Append to the output; WD_STS_NOSPC when dst is too small. */
static int io_write(struct wd_dummy_io *io, const void *buf, u32 n)
{
	int sts = WD_STS_OK;

	if (n > io->dst_len - io->out_len)
		return WD_STS_NOSPC;
	if (!io->q)
		memcpy(io->kdst + io->out_len, buf, n);
	else
		sts = wd_dummy_user_copy(io->q, io->dst + io->out_len,
					 (void *)buf, n, true);
	if (!sts)
		io->out_len += n;
	return sts;
}

/* Between two steps: let others run, and stop if we are told to. */
static int wd_dummy_step(void)
{
	cond_resched();
	return fatal_signal_pending(current) ? WD_STS_ABORTED : WD_STS_OK;
}

/* ---------------------------------------------------------------------- */
/* memcpy, crc32c */

static int wd_dummy_memcpy(struct wd_dummy_scratch *s, struct wd_dummy_io *io)
{
	u32 off, n;
	int sts;

	for (off = 0; off < io->src_len; off += n) {
		n = min_t(u32, io->src_len - off, WD_DUMMY_CHUNK);
		sts = io_read(io, off, s->in, n);
		if (!sts)
			sts = io_write(io, s->in, n);
		if (!sts)
			sts = wd_dummy_step();
		if (sts)
			return sts;
	}
	return WD_STS_OK;
}

/* CRC-32C continuing from @seed, a previous result (0 to start). */
static int wd_dummy_crc32c(struct wd_dummy_scratch *s, struct wd_dummy_io *io,
			   u32 seed)
{
	u32 crc = ~seed;
	u32 off, n;
	int sts;

	for (off = 0; off < io->src_len; off += n) {
		n = min_t(u32, io->src_len - off, WD_DUMMY_CHUNK);
		sts = io_read(io, off, s->in, n);
		if (sts)
			return sts;
		crc = __crc32c_le(crc, s->in, n);
		sts = wd_dummy_step();
		if (sts)
			return sts;
	}
	io->result = ~crc;
	return WD_STS_OK;
}

/* ---------------------------------------------------------------------- */
/* sha256: one-shot, or chained through a struct wd_sha256_ctx */

static void wd_dummy_sha256_import(struct sha256_state *st,
				   const struct wd_sha256_ctx *ctx)
{
	BUILD_BUG_ON(sizeof(st->state) != sizeof(ctx->h));
	BUILD_BUG_ON(sizeof(st->buf) != sizeof(ctx->pending));
	memcpy(st->state, ctx->h, sizeof(st->state));
	st->count = ctx->total;
	memcpy(st->buf, ctx->pending, sizeof(st->buf));
}

static void wd_dummy_sha256_export(struct wd_sha256_ctx *ctx,
				   const struct sha256_state *st)
{
	u32 pending = st->count % WD_SHA256_BLOCK_LEN;

	memset(ctx, 0, sizeof(*ctx));
	ctx->magic = WD_SHA256_CTX_MAGIC;
	ctx->total = st->count;
	memcpy(ctx->h, st->state, sizeof(ctx->h));
	memcpy(ctx->pending, st->buf, pending);
}

static int wd_dummy_sha256(struct wd_dummy_scratch *s, struct wd_dummy_io *io,
			   const struct wd_desc *desc)
{
	struct wd_sha256_ctx ctx;
	struct sha256_state st;
	u8 digest[SHA256_DIGEST_SIZE];
	u32 off, n;
	int sts;

	if (desc->flags & WD_DF_CONT) {
		/* The state is the caller's data: only the magic is checked. */
		sts = wd_dummy_user_copy(io->q, desc->ctx, &ctx, sizeof(ctx),
					 false);
		if (sts)
			return sts;
		if (ctx.magic != WD_SHA256_CTX_MAGIC)
			return WD_STS_BAD_CHAIN;
		wd_dummy_sha256_import(&st, &ctx);
	} else {
		sha256_init(&st);
	}
	for (off = 0; off < io->src_len; off += n) {
		n = min_t(u32, io->src_len - off, WD_DUMMY_CHUNK);
		sts = io_read(io, off, s->in, n);
		if (sts)
			return sts;
		sha256_update(&st, s->in, n);
		sts = wd_dummy_step();
		if (sts)
			return sts;
	}
	if (desc->flags & WD_DF_MORE) {
		wd_dummy_sha256_export(&ctx, &st);
		return wd_dummy_user_copy(io->q, desc->ctx, &ctx, sizeof(ctx),
					  true);
	}
	sha256_final(&st, digest);
	sts = io_write(io, digest, sizeof(digest));
	if (sts || !(desc->flags & WD_DF_CONT))
		return sts;
	/* The chain is over: a stale context cannot be continued. */
	ctx.magic = 0;
	return wd_dummy_user_copy(io->q, desc->ctx, &ctx.magic,
				  sizeof(ctx.magic), true);
}

/* ---------------------------------------------------------------------- */
/* zlib streams */

static bool wd_dummy_is_deflate(u16 opcode)
{
	return opcode == WD_OP_DEFLATE;
}

static size_t wd_dummy_zs_mem(u16 opcode)
{
	if (wd_dummy_is_deflate(opcode))
		return zlib_deflate_workspacesize(MAX_WBITS, DEF_MEM_LEVEL);
	return zlib_inflate_workspacesize();
}

static struct wd_dummy_zstream *wd_dummy_zs_alloc(u16 opcode, int node)
{
	struct wd_dummy_zstream *zs;

	zs = kzalloc_node(sizeof(*zs), GFP_KERNEL, node);
	if (!zs)
		return NULL;
	zs->opcode = opcode;
	zs->zs.workspace = vmalloc_node(wd_dummy_zs_mem(opcode), node);
	if (!zs->zs.workspace) {
		kfree(zs);
		return NULL;
	}
	return zs;
}

static void wd_dummy_zs_free(struct wd_dummy_zstream *zs)
{
	if (!zs)
		return;
	vfree(zs->zs.workspace);
	kfree(zs);
}

/* Start a stream: @level is a zlib level (deflate only). */
static int wd_dummy_zs_start(struct wd_dummy_zstream *zs, int level)
{
	int ret;

	if (wd_dummy_is_deflate(zs->opcode))
		ret = zlib_deflateInit2(&zs->zs, level, Z_DEFLATED, MAX_WBITS,
					DEF_MEM_LEVEL, Z_DEFAULT_STRATEGY);
	else
		ret = zlib_inflateInit2(&zs->zs, MAX_WBITS);
	return ret == Z_OK ? WD_STS_OK : WD_STS_NOMEM;
}

/* A chained stream for slot @slot of @dq, charged to the device. */
static struct wd_dummy_zstream *wd_dummy_stream_new(struct wd_dummy_queue *dq,
						    u16 opcode)
{
	struct wd_dummy_dev *d = dq->d;
	size_t mem = wd_dummy_zs_mem(opcode);
	long limit = (long)READ_ONCE(wd_dummy_stream_mem_kb) * 1024;
	struct wd_dummy_zstream *zs;

	if (atomic_long_add_return(mem, &d->stream_bytes) > limit)
		goto nomem;
	zs = wd_dummy_zs_alloc(opcode, d->node);
	if (!zs)
		goto nomem;
	zs->mem = mem;
	atomic_inc(&d->nr_streams);
	return zs;

nomem:
	atomic_long_sub(mem, &d->stream_bytes);
	return NULL;
}

static void wd_dummy_stream_drop(struct wd_dummy_queue *dq, u16 slot)
{
	struct wd_dummy_zstream *zs = dq->streams[slot];

	if (!zs)
		return;
	dq->streams[slot] = NULL;
	atomic_long_sub(zs->mem, &dq->d->stream_bytes);
	atomic_dec(&dq->d->nr_streams);
	wd_dummy_zs_free(zs);
}

/**
 * wd_dummy_streams_free() - drop every zlib stream of a queue
 * @dq: a queue no engine holds (queue_close)
 */
void wd_dummy_streams_free(struct wd_dummy_queue *dq)
{
	u32 i;

	for (i = 0; i < dq->max_streams; i++)
		wd_dummy_stream_drop(dq, i);
}

/*
 * Feed src through @zs into dst until src is used up and, for deflate,
 * @flush is complete; or the stream ends; or dst is full.  Sets
 * io->result (src bytes used), io->out_len, and:
 *   *end   the zlib stream ended (deflate finished, inflate met its end);
 *   *full  dst filled up before that: more input or output is due.
 * Returns a status.
 */
static int wd_dummy_zrun(struct wd_dummy_scratch *s, struct z_stream_s *zs,
			 bool deflate, int flush, struct wd_dummy_io *io,
			 bool *end, bool *full)
{
	u32 fed = 0;		/* src bytes handed to zlib */
	u32 room, made, used;
	int ret, zflush = flush;
	int sts;

	zs->avail_in = 0;
	*end = false;
	*full = false;
	for (;;) {
		if (!zs->avail_in && fed < io->src_len) {
			u32 n = min_t(u32, io->src_len - fed, WD_DUMMY_CHUNK);

			sts = io_read(io, fed, s->in, n);
			if (sts)
				return sts;
			zs->next_in = s->in;
			zs->avail_in = n;
			fed += n;
		}
		used = fed - zs->avail_in;
		room = min_t(u32, WD_DUMMY_CHUNK, io->dst_len - io->out_len);
		zs->next_out = s->out;
		zs->avail_out = room;
		if (deflate) {
			/* Flush once all of src has been handed over. */
			zflush = fed < io->src_len ? Z_NO_FLUSH : flush;
			ret = zlib_deflate(zs, zflush);
		} else {
			ret = zlib_inflate(zs, Z_SYNC_FLUSH);
		}
		made = room - zs->avail_out;
		sts = io_write(io, s->out, made);
		if (sts)
			return sts;
		io->result = fed - zs->avail_in;
		if (ret == Z_STREAM_END) {
			*end = true;
			return WD_STS_OK;
		}
		if (ret != Z_OK && ret != Z_BUF_ERROR)
			return WD_STS_BAD_DATA;
		if (!zs->avail_out) {
			if (io->out_len < io->dst_len)
				goto next;	/* bounce buffer full */
			/*
			 * dst is full.  Without a flush, once all of src is
			 * in, what zlib still holds comes out later anyway.
			 */
			if (deflate && zflush == Z_NO_FLUSH &&
			    io->result == io->src_len)
				return WD_STS_OK;
			*full = true;
			return WD_STS_OK;
		}
		/* Room left: zlib wants input. */
		if (!zs->avail_in && fed == io->src_len)
			return WD_STS_OK;
		if (!made && io->result == used)
			return WD_STS_BAD_DATA;	/* no progress: cannot happen */
next:
		sts = wd_dummy_step();
		if (sts)
			return sts;
	}
}

static int wd_dummy_zlib_level(u8 level)
{
	if (level == WD_LEVEL_DEFAULT)
		return Z_DEFAULT_COMPRESSION;
	return level == WD_LEVEL_STORE ? 0 : level;
}

static const int wd_dummy_zflush[] = {
	[WD_FLUSH_NONE] = Z_NO_FLUSH,
	[WD_FLUSH_SYNC] = Z_SYNC_FLUSH,
	[WD_FLUSH_FULL] = Z_FULL_FLUSH,
};

/* The output bounce buffer of an executor, allocated on first use. */
static bool wd_dummy_scratch_out(struct wd_dummy_scratch *s, int node)
{
	if (!s->out)
		s->out = kvmalloc_node(WD_DUMMY_CHUNK, GFP_KERNEL, node);
	return s->out;
}

/* The one-shot state of an executor, allocated on first use. */
static struct wd_dummy_zstream *wd_dummy_oneshot_zs(struct wd_dummy_scratch *s,
						    u16 opcode, int node)
{
	int i = !wd_dummy_is_deflate(opcode);

	if (!wd_dummy_scratch_out(s, node))
		return NULL;
	if (!s->zs[i])
		s->zs[i] = wd_dummy_zs_alloc(opcode, node);
	return s->zs[i];
}

static int wd_dummy_zlib_oneshot(struct wd_dummy_scratch *s,
				 struct wd_dummy_io *io, u16 opcode, int level,
				 int node)
{
	bool deflate = wd_dummy_is_deflate(opcode);
	struct wd_dummy_zstream *zs;
	bool end, full;
	int sts;

	zs = wd_dummy_oneshot_zs(s, opcode, node);
	if (!zs)
		return WD_STS_NOMEM;
	sts = wd_dummy_zs_start(zs, level);
	if (sts)
		return sts;
	sts = wd_dummy_zrun(s, &zs->zs, deflate, Z_FINISH, io, &end, &full);
	if (!sts && full)
		sts = WD_STS_NOSPC;
	else if (!sts && !end)
		sts = WD_STS_BAD_DATA;	/* src ends before the stream */
	if (!sts && !deflate)
		io->cflags |= WD_CF_STREAM_END;
	return sts;
}

/* A chained piece: stream slot desc->stream, checked by wd_dummy_check(). */
static int wd_dummy_zlib_chained(struct wd_dummy_scratch *s,
				 struct wd_dummy_queue *dq,
				 struct wd_dummy_io *io,
				 const struct wd_desc *desc)
{
	bool deflate = wd_dummy_is_deflate(desc->opcode);
	bool more = desc->flags & WD_DF_MORE;
	struct wd_dummy_zstream *zs;
	int flush = Z_FINISH;
	bool end, full;
	int sts;

	if (!(desc->flags & WD_DF_CONT)) {
		/* A first piece starts over, dropping what the slot held. */
		wd_dummy_stream_drop(dq, desc->stream);
		zs = wd_dummy_stream_new(dq, desc->opcode);
		if (!zs)
			return WD_STS_NOMEM;
		dq->streams[desc->stream] = zs;
		sts = wd_dummy_zs_start(zs, wd_dummy_zlib_level(desc->level));
		if (sts)
			goto drop;
	}
	zs = dq->streams[desc->stream];
	if (!wd_dummy_scratch_out(s, dq->d->node)) {
		sts = WD_STS_NOMEM;
		goto drop;
	}
	if (deflate && more)
		flush = wd_dummy_zflush[desc->flush];
	sts = wd_dummy_zrun(s, &zs->zs, deflate, flush, io, &end, &full);
	if (sts)
		goto drop;	/* the stream is in an unknown state */
	if (full) {
		io->cflags |= WD_CF_DST_FULL;
		return WD_STS_OK;
	}
	if (!deflate && end) {
		io->cflags |= WD_CF_STREAM_END;
		goto drop;	/* over: what follows in src is the caller's */
	}
	if (!more) {
		if (!deflate)
			sts = WD_STS_BAD_DATA;	/* src ends before the stream */
		goto drop;
	}
	return WD_STS_OK;

drop:
	wd_dummy_stream_drop(dq, desc->stream);
	return sts;
}

/* ---------------------------------------------------------------------- */
/* Checking and running one descriptor */

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

/* The desc.flags bits an opcode accepts. */
static u16 wd_dummy_op_flags(u16 opcode)
{
	switch (opcode) {
	case WD_OP_SHA256:
	case WD_OP_DEFLATE:
	case WD_OP_INFLATE:
		return WD_DF_CHAIN;
	}
	return 0;
}

/* A buffer of @len bytes at @addr that wraps around the address space. */
static bool wd_dummy_wraps(u64 addr, u64 len)
{
	return len && addr + (len - 1) < addr;
}

/*
 * The checks made before any memory is touched, in the order of
 * uapi/wrapdrive.h: the first flaw found is the status.
 */
static int wd_dummy_check(const struct wd_dummy_queue *dq,
			  const struct wd_desc *desc)
{
	bool chained = desc->flags & WD_DF_CHAIN;
	bool sha_ctx = chained && desc->opcode == WD_OP_SHA256;
	bool zlib_chain = chained && (desc->opcode == WD_OP_DEFLATE ||
				      desc->opcode == WD_OP_INFLATE);
	const struct wd_dummy_zstream *zs;

	if (!wd_dummy_op_ok(dq->algo, desc->opcode))
		return WD_STS_BAD_OPCODE;
	if ((desc->flags & ~wd_dummy_op_flags(desc->opcode)) ||
	    desc->__rsvd[0] || desc->__rsvd[1])
		return WD_STS_BAD_FLAGS;
	if (desc->opcode == WD_OP_DEFLATE &&
	    (desc->level > WD_LEVEL_STORE || desc->flush > WD_FLUSH_FULL))
		return WD_STS_BAD_FLAGS;
	if (desc->src_len > WD_MAX_LEN || desc->dst_len > WD_MAX_LEN ||
	    wd_dummy_wraps(desc->src, desc->src_len) ||
	    wd_dummy_wraps(desc->dst, desc->dst_len) ||
	    (sha_ctx && wd_dummy_wraps(desc->ctx, sizeof(struct wd_sha256_ctx))))
		return WD_STS_BAD_LEN;
	if (zlib_chain) {
		if (desc->stream >= dq->max_streams)
			return WD_STS_BAD_CHAIN;
		zs = dq->streams[desc->stream];
		if ((desc->flags & WD_DF_CONT) &&
		    (!zs || zs->opcode != desc->opcode))
			return WD_STS_BAD_CHAIN;
	}
	if ((desc->opcode == WD_OP_MEMCPY && desc->dst_len < desc->src_len) ||
	    (desc->opcode == WD_OP_SHA256 && !(desc->flags & WD_DF_MORE) &&
	     desc->dst_len < WD_SHA256_DIGEST_LEN))
		return WD_STS_NOSPC;
	return WD_STS_OK;
}

/**
 * wd_dummy_exec() - run one descriptor of a queue
 * @s: the executor's scratch memory
 * @dq: the queue, held by the calling engine thread
 * @desc: the descriptor, copied out of the ring
 * @cqe: its completion
 *
 * Context: the engine thread, inside wd_queue_begin_access(); may sleep.
 */
void wd_dummy_exec(struct wd_dummy_scratch *s, struct wd_dummy_queue *dq,
		   const struct wd_desc *desc, struct wd_cqe *cqe)
{
	struct wd_dummy_io io = {
		.q = dq->q,
		.src = desc->src,
		.dst = desc->dst,
		.src_len = desc->src_len,
		.dst_len = desc->dst_len,
	};
	int sts;

	sts = wd_dummy_check(dq, desc);
	if (sts)
		goto out;
	switch (desc->opcode) {
	case WD_OP_MEMCPY:
		sts = wd_dummy_memcpy(s, &io);
		break;
	case WD_OP_CRC32C:
		sts = wd_dummy_crc32c(s, &io, desc->seed);
		break;
	case WD_OP_SHA256:
		sts = wd_dummy_sha256(s, &io, desc);
		break;
	case WD_OP_DEFLATE:
	case WD_OP_INFLATE:
		if (desc->flags & WD_DF_CHAIN)
			sts = wd_dummy_zlib_chained(s, dq, &io, desc);
		else
			sts = wd_dummy_zlib_oneshot(s, &io, desc->opcode,
						    wd_dummy_zlib_level(desc->level),
						    dq->d->node);
		break;
	}
out:
	if (sts)
		pr_debug_ratelimited("request tag %u opcode %u: status %d\n",
				     desc->tag, desc->opcode, sts);
	*cqe = (struct wd_cqe) {
		.tag = desc->tag,
		.status = sts,
		.flags = sts ? 0 : io.cflags,
		.out_len = sts ? 0 : io.out_len,
		.result = sts ? 0 : io.result,
	};
}

static int wd_dummy_cmp_len(const void *a, const void *b)
{
	const struct wd_desc *x = a, *y = b;

	if (x->src_len != y->src_len)
		return x->src_len < y->src_len ? -1 : 1;
	return 0;
}

/**
 * wd_dummy_weak_order() - the order a WD_WEAK_ORDER queue runs a batch in
 * @batch: descriptors as fetched; reordered in place
 * @n: how many
 * @tmp: room for @n descriptors
 *
 * A weakly ordered queue really reorders, so that users see it: the
 * independent requests run smallest first.  Chained requests (WD_DF_MORE
 * or WD_DF_CONT) keep their order among themselves, after the others.
 */
void wd_dummy_weak_order(struct wd_desc *batch, u32 n, struct wd_desc *tmp)
{
	u32 i, k = 0, m;

	for (i = 0; i < n; i++)
		if (!(batch[i].flags & WD_DF_CHAIN))
			tmp[k++] = batch[i];
	m = k;
	for (i = 0; i < n; i++)
		if (batch[i].flags & WD_DF_CHAIN)
			tmp[m++] = batch[i];
	sort(tmp, k, sizeof(*tmp), wd_dummy_cmp_len, NULL);
	memcpy(batch, tmp, n * sizeof(*batch));
}

/* ---------------------------------------------------------------------- */
/* Scratch memory, and the algorithms on kernel buffers (selfbench) */

/**
 * wd_dummy_scratch_alloc() - allocate an executor's input bounce buffer
 * @s: zeroed scratch
 * @node: NUMA node to allocate on
 *
 * The zlib parts come on first use.  Return: 0 or -ENOMEM.
 */
int wd_dummy_scratch_alloc(struct wd_dummy_scratch *s, int node)
{
	s->in = kvmalloc_node(WD_DUMMY_CHUNK, GFP_KERNEL, node);
	return s->in ? 0 : -ENOMEM;
}

/**
 * wd_dummy_scratch_free() - free what an executor allocated
 * @s: the scratch; may be partly allocated
 */
void wd_dummy_scratch_free(struct wd_dummy_scratch *s)
{
	wd_dummy_zs_free(s->zs[0]);
	wd_dummy_zs_free(s->zs[1]);
	kvfree(s->out);
	kvfree(s->in);
	memset(s, 0, sizeof(*s));
}

/**
 * wd_dummy_run_kernel() - one-shot request on kernel buffers (selfbench)
 * @s: scratch from wd_dummy_scratch_alloc()
 * @opcode: WD_OP_MEMCPY, _CRC32C, _SHA256, _DEFLATE (zlib's default level)
 *	or _INFLATE
 * @src: input
 * @src_len: its length
 * @dst: output
 * @dst_len: its room
 * @out_len: set to the bytes written to @dst (when the status is WD_STS_OK)
 *
 * Return: a WD_STS_* status.
 */
int wd_dummy_run_kernel(struct wd_dummy_scratch *s, u16 opcode,
			const u8 *src, u32 src_len, u8 *dst, u32 dst_len,
			u32 *out_len)
{
	struct wd_dummy_io io = {
		.ksrc = src,
		.kdst = dst,
		.src_len = src_len,
		.dst_len = dst_len,
	};
	struct sha256_state st;
	u8 digest[SHA256_DIGEST_SIZE];
	u32 off, n;
	int sts;

	switch (opcode) {
	case WD_OP_MEMCPY:
		sts = wd_dummy_memcpy(s, &io);
		break;
	case WD_OP_CRC32C:
		sts = wd_dummy_crc32c(s, &io, 0);
		break;
	case WD_OP_SHA256:
		sha256_init(&st);
		for (off = 0; off < src_len; off += n) {
			n = min_t(u32, src_len - off, WD_DUMMY_CHUNK);
			memcpy(s->in, src + off, n);
			sha256_update(&st, s->in, n);
			sts = wd_dummy_step();
			if (sts)
				return sts;
		}
		sha256_final(&st, digest);
		sts = io_write(&io, digest, sizeof(digest));
		break;
	case WD_OP_DEFLATE:
	case WD_OP_INFLATE:
		sts = wd_dummy_zlib_oneshot(s, &io, opcode,
					    Z_DEFAULT_COMPRESSION,
					    NUMA_NO_NODE);
		break;
	default:
		return WD_STS_BAD_OPCODE;
	}
	*out_len = io.out_len;
	return sts;
}
