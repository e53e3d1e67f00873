// SPDX-License-Identifier: GPL-2.0
/*
 * libwd: one-shot operations and batches on any memory.
 *
 * Memory already shared with the device is used in place; anything else
 * goes through a staging buffer of the queue (one copy in, one copy out),
 * which is what a caller holding plain buffers would have to do anyway.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "wd_priv.h"

#define STACK_REQS	64

struct wd_io {
	const void *in;		/* what the device reads */
	struct wd_stage *in_st;
	void *out;		/* what the device writes */
	struct wd_stage *out_st;
};

static int io_in(struct wd_queue *q, struct wd_io *io, const void *src, size_t len)
{
	io->in_st = NULL;
	io->in = src;
	if (!len || wd_is_shared(q, src, len))
		return 0;
	io->in = wd_stage_get(q, len, &io->in_st);
	if (!io->in)
		return -ENOMEM;
	memcpy((void *)io->in, src, len);
	return 0;
}

static int io_out(struct wd_queue *q, struct wd_io *io, void *dst, size_t len)
{
	io->out_st = NULL;
	io->out = dst;
	if (!len || wd_is_shared(q, dst, len))
		return 0;
	io->out = wd_stage_get(q, len, &io->out_st);
	return io->out ? 0 : -ENOMEM;
}

static void io_done(struct wd_queue *q, struct wd_io *io, void *dst, size_t len)
{
	if (io->out_st && dst && len)
		memcpy(dst, io->out, len);
	if (io->in_st)
		wd_stage_put(q, io->in_st);
	if (io->out_st)
		wd_stage_put(q, io->out_st);
	io->in_st = io->out_st = NULL;
}

/* A released (or never opened) queue: -EBADF, before anything touches it. */
static int check_open(struct wd_queue *q)
{
	if (!q || !q->priv)
		return wd_fail(-EBADF, "the queue is not open (released?)");
	return 0;
}

static int check_len(size_t len)
{
	if (len > WD_MAX_LEN)
		return wd_fail(-E2BIG, "%zu bytes is over the device's per-request limit "
			      "WD_MAX_LEN (%u bytes)", len, WD_MAX_LEN);
	return 0;
}

static __thread int last_status;

int wd_last_status(void)
{
	return last_status;
}

void wd_set_last_status(int status)
{
	last_status = status;
}

static int outcome(struct wd_queue *q, const struct wd_req *r, __u16 *status,
		   const char *what)
{
	int dead = wd_death_of(q, r, what);

	if (dead)
		return dead;
	if (status)
		*status = r->status;
	last_status = r->status;
	if (r->status != WD_STS_OK)
		return wd_fail(-EIO, "%s failed on the device: status %u", what, r->status);
	return 0;
}

int wd_do_crc32c(struct wd_queue *q, const void *src, size_t len, __u32 seed,
		 __u32 *crc, __u16 *status)
{
	struct wd_req r = { .opcode = WD_OP_CRC32C, .seed = seed };
	struct wd_io io = { 0 };
	int ret;

	ret = check_open(q);
	if (!ret)
		ret = check_len(len);
	if (ret || (ret = io_in(q, &io, src, len)))
		return ret;
	r.src = io.in;
	r.src_len = (__u32)len;
	ret = wd_run(q, &r, -1);
	io_done(q, &io, NULL, 0);
	if (ret)
		return ret;
	if (crc)
		*crc = r.result;
	return outcome(q, &r, status, "crc32c");
}

int wd_do_sha256(struct wd_queue *q, const void *src, size_t len,
		 __u8 digest[WD_SHA256_DIGEST_LEN], __u16 *status)
{
	struct wd_req r = { .opcode = WD_OP_SHA256, .dst_len = WD_SHA256_DIGEST_LEN };
	struct wd_io io = { 0 };
	int ret;

	ret = check_open(q);
	if (!ret)
		ret = check_len(len);
	if (ret || (ret = io_in(q, &io, src, len)))
		return ret;
	ret = io_out(q, &io, digest, WD_SHA256_DIGEST_LEN);
	if (ret) {
		io_done(q, &io, NULL, 0);
		return ret;
	}
	r.src = io.in;
	r.src_len = (__u32)len;
	r.dst = io.out;
	ret = wd_run(q, &r, -1);
	io_done(q, &io, !ret && r.status == WD_STS_OK ? digest : NULL, WD_SHA256_DIGEST_LEN);
	return ret ? ret : outcome(q, &r, status, "sha256");
}

int wd_do_xfer(struct wd_queue *q, __u16 opcode, const void *src, size_t len,
	       void *dst, size_t *out_len, __u16 *status)
{
	struct wd_req r = { .opcode = opcode };
	size_t room = out_len ? *out_len : 0;
	struct wd_io io = { 0 };
	int ret;

	ret = check_open(q);
	if (ret)
		return ret;
	if (opcode != WD_OP_MEMCPY && opcode != WD_OP_DEFLATE && opcode != WD_OP_INFLATE)
		return wd_fail(-EINVAL, "wd_do_xfer: opcode %u moves no data", opcode);
	ret = check_len(len);
	if (!ret)
		ret = check_len(room);
	if (ret || (ret = io_in(q, &io, src, len)))
		return ret;
	ret = io_out(q, &io, dst, room);
	if (ret) {
		io_done(q, &io, NULL, 0);
		return ret;
	}
	r.src = io.in;
	r.src_len = (__u32)len;
	r.dst = io.out;
	r.dst_len = (__u32)room;
	ret = wd_run(q, &r, -1);
	if (!ret && r.status == WD_STS_OK && r.out_len > room)
		ret = wd_fail(-EIO, "device wrote %u bytes into %zu", r.out_len, room);
	io_done(q, &io, !ret && r.status == WD_STS_OK ? dst : NULL,
		!ret && r.status == WD_STS_OK ? r.out_len : 0);
	if (ret)
		return ret;
	*out_len = r.status == WD_STS_OK ? r.out_len : 0;
	return outcome(q, &r, status, "request");
}

int wd_do_many(struct wd_queue *q, __u16 opcode, const void *src, const __u32 *lens, int n,
	       void *dst, __u32 dst_stride, __u32 *results, __u32 *out_lens, __u16 *statuses)
{
	struct wd_req stack[STACK_REQS], *reqs = stack;
	size_t total = 0, dst_total = (size_t)dst_stride * (size_t)(n > 0 ? n : 0);
	struct wd_io io = { 0 };
	int i, ret, bad = -1;

	ret = check_open(q);
	if (ret)
		return ret;
	if (n < 0 || (n && (!src || !lens)))
		return wd_fail(-EINVAL, "batch: bad arguments");
	for (i = 0; i < n; i++) {
		ret = check_len(lens[i]);
		if (ret)
			return ret;
		total += lens[i];
	}
	if (!n)
		return 0;
	if (n > STACK_REQS) {
		reqs = malloc(sizeof(*reqs) * (size_t)n);
		if (!reqs)
			return wd_err(ENOMEM, "batch of %d", n);
	}
	ret = io_in(q, &io, src, total);
	if (!ret) {
		ret = io_out(q, &io, dst, dst_total);
		if (ret)
			io_done(q, &io, NULL, 0);
	}
	if (ret)
		goto out;
	total = 0;
	for (i = 0; i < n; i++) {
		memset(&reqs[i], 0, sizeof(reqs[i]));
		reqs[i].opcode = opcode;
		reqs[i].src = (const char *)io.in + total;
		reqs[i].src_len = lens[i];
		if (dst_stride) {
			reqs[i].dst = (char *)io.out + (size_t)dst_stride * (size_t)i;
			reqs[i].dst_len = dst_stride;
		}
		total += lens[i];
	}
	ret = wd_run_many(q, reqs, n, -1);
	io_done(q, &io, ret ? NULL : dst, dst_total);
	if (ret)
		goto out;
	for (i = 0; i < n; i++) {
		if (results)
			results[i] = reqs[i].result;
		if (out_lens)
			out_lens[i] = reqs[i].out_len;
		if (statuses)
			statuses[i] = reqs[i].status;
		if (reqs[i].status != WD_STS_OK && bad < 0)
			bad = i;
	}
	if (bad >= 0)
		ret = wd_fail(-EIO, "piece %d of the batch failed on the device: status %u", bad,
			     reqs[bad].status);
out:
	if (reqs != stack)
		free(reqs);
	return ret;
}

int wd_do_crc32c_many(struct wd_queue *q, const void *src, const __u32 *lens, int n,
		      __u32 *crcs, __u16 *statuses)
{
	return wd_do_many(q, WD_OP_CRC32C, src, lens, n, NULL, 0, crcs, NULL, statuses);
}

int wd_do_sha256_many(struct wd_queue *q, const void *src, const __u32 *lens, int n,
		      __u8 *digests, __u16 *statuses)
{
	if (!digests)
		return wd_fail(-EINVAL, "wd_do_sha256_many: NULL digests");
	return wd_do_many(q, WD_OP_SHA256, src, lens, n, digests, WD_SHA256_DIGEST_LEN, NULL, NULL,
			  statuses);
}

long long wd_crc32c_call(struct wd_queue *q, const char *src, size_t len, __u32 seed)
{
	__u32 crc = 0;
	int ret;

	ret = wd_do_crc32c(q, src, len, seed, &crc, NULL);
	return ret ? ret : (long long)crc;
}

int wd_sha256_call(struct wd_queue *q, const char *src, size_t len, char *digest)
{
	return wd_do_sha256(q, src, len, (__u8 *)digest, NULL);
}
