// SPDX-License-Identifier: GPL-2.0
/*
 * libwd: streams, data of any size (wd.h "Streams").
 *
 * Input is copied into pieces of WD_STREAM_PIECE bytes, staging buffers
 * shared with the device.  sha256 and crc32c alternate two pieces: one is
 * filled while the device works on the other (chained requests are never
 * reordered, so a sha256 chain may have both in flight; crc32c pieces are
 * independent and their CRCs are joined with wd_crc32c_combine).  zlib
 * runs one piece at a time: a piece may answer WD_CF_DST_FULL, and its
 * continuation must come before the next piece.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "wd_priv.h"

#define NPIECES		2
#define ZOUT_ROOM	(2 * WD_STREAM_PIECE)	/* > wd_deflate_bound(WD_STREAM_PIECE) */

struct wd_piece {
	struct wd_req req;
	struct wd_stage *st;
	__u8 *buf;		/* WD_STREAM_PIECE bytes, shared */
	size_t fill;
	int busy;		/* started, not yet waited for */
};

struct wd_stream_priv {
	struct wd_piece piece[NPIECES];
	int cur;		/* the piece being filled */
	int started;		/* a first piece (WD_DF_MORE) went through */
	int err;		/* sticky: the stream is over */
	int err_status;		/* the device's status with it, if any */
	int has_slot;
	__u8 level;
	struct wd_stage *ctl_st;	/* sha256: two contexts and a digest */
	struct wd_sha256_ctx *ctx;	/* [0] the chain, [1] a digest's copy */
	__u8 *digest;
	struct wd_stage *out_st;	/* zlib: what the device writes */
	__u8 *out;			/* output not yet read: [ohead, olen) */
	size_t ohead, olen, ocap;
};

/* -- CRC-32C combination (zlib's crc32_combine, Castagnoli polynomial) -- */

static __u32 gf2_times(const __u32 *mat, __u32 vec)
{
	__u32 sum = 0;

	for (; vec; vec >>= 1, mat++)
		if (vec & 1)
			sum ^= *mat;
	return sum;
}

static void gf2_square(__u32 *sq, const __u32 *mat)
{
	int n;

	for (n = 0; n < 32; n++)
		sq[n] = gf2_times(mat, mat[n]);
}

__u32 wd_crc32c_combine(__u32 crc1, __u32 crc2, __u64 len2)
{
	__u32 even[32], odd[32];
	int n;

	if (!len2)
		return crc1;
	odd[0] = 0x82f63b78U;	/* the operator for one zero bit */
	for (n = 1; n < 32; n++)
		odd[n] = 1U << (n - 1);
	gf2_square(even, odd);	/* two zero bits */
	gf2_square(odd, even);	/* four */
	do {
		gf2_square(even, odd);
		if (len2 & 1)
			crc1 = gf2_times(even, crc1);
		len2 >>= 1;
		if (!len2)
			break;
		gf2_square(odd, even);
		if (len2 & 1)
			crc1 = gf2_times(odd, crc1);
		len2 >>= 1;
	} while (len2);
	return crc1 ^ crc2;
}

/* -- pieces ------------------------------------------------------------- */

static int piece_buf(struct wd_queue *q, struct wd_piece *pc)
{
	if (pc->buf)
		return 0;
	pc->buf = wd_stage_get(q, WD_STREAM_PIECE, &pc->st);
	return pc->buf ? 0 : -ENOMEM;
}

static void piece_free(struct wd_queue *q, struct wd_piece *pc)
{
	if (pc->st)
		wd_stage_put(q, pc->st);
	pc->st = NULL;
	pc->buf = NULL;
	pc->fill = 0;
}

static int status_error(struct wd_queue *q, const struct wd_req *r, const char *what)
{
	int dead = wd_death_of(q, r, what);

	if (dead)
		return dead;
	wd_set_last_status(r->status);
	return wd_fail(-EIO, "%s failed on the device: status %u", what, r->status);
}

/* The device broke the chaining contract: -EIO with no device status. */
static int __attribute__((format(printf, 1, 2))) broken(const char *fmt, ...)
{
	char msg[160];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	wd_set_last_status(WD_STS_OK);
	return wd_fail(-EIO, "%s", msg);
}

/* Wait for a piece in flight; its outcome in pc->req. */
static int piece_wait(struct wd_queue *q, struct wd_piece *pc, const char *what)
{
	int ret;

	if (!pc->busy)
		return 0;
	pc->busy = 0;
	ret = wd_run_wait(q, &pc->req, -1);
	if (ret)
		return ret;
	if (pc->req.status != WD_STS_OK)
		return status_error(q, &pc->req, what);
	return 0;
}

static int piece_start(struct wd_queue *q, struct wd_piece *pc)
{
	int ret = wd_run_start(q, &pc->req, -1);

	if (!ret)
		pc->busy = 1;
	return ret;
}

/* -- common ------------------------------------------------------------- */

static int stream_check(struct wd_stream *s, __u16 opcode)
{
	if (!s || !s->priv || !s->q || !s->q->priv)
		return wd_fail(-EBADF, "the stream is not open (released?)");
	if (s->opcode != opcode && !(opcode == WD_OP_DEFLATE && s->opcode == WD_OP_INFLATE))
		return wd_fail(-EINVAL, "stream of opcode %u used for opcode %u", s->opcode, opcode);
	if (s->priv->err) {
		wd_set_last_status(s->priv->err_status);
		return wd_fail(s->priv->err, "the stream ended with an error (status %d)",
			       s->priv->err_status);
	}
	return 0;
}

/* Record the first error: the stream is over. */
static int stream_fail(struct wd_stream *s, int ret)
{
	if (ret && !s->priv->err) {
		s->priv->err = ret;
		s->priv->err_status = ret == -EIO ? wd_last_status() : 0;
	}
	return ret;
}

static int stream_new(struct wd_queue *q, struct wd_stream *s, __u16 opcode, const char *alg)
{
	if (!q || !q->priv || !s)
		return wd_fail(-EINVAL, "stream: bad arguments (an open queue and a stream)");
	if (strcmp(q->alg, alg))
		return wd_fail(-EINVAL, "stream: a %s stream needs a \"%s\" queue, not \"%s\"",
			       alg, alg, q->alg);
	memset(s, 0, sizeof(*s));
	s->priv = calloc(1, sizeof(*s->priv));
	if (!s->priv)
		return wd_err(ENOMEM, "stream");
	s->q = q;
	s->opcode = opcode;
	return 0;
}

static int slot_get(struct wd_queue *q, __u16 *slot)
{
	struct wd_queue_priv *p = q->priv;
	__u32 i;
	int ret = -EBUSY;

	if (!q->max_streams)
		return wd_fail(-EOPNOTSUPP, "queue %s has no zlib stream slots", q->name);
	pthread_mutex_lock(&p->lock);
	if (!p->stream_slots)
		p->stream_slots = calloc(q->max_streams, 1);
	if (!p->stream_slots) {
		ret = -ENOMEM;
	} else {
		for (i = 0; i < q->max_streams; i++) {
			if (!p->stream_slots[i]) {
				p->stream_slots[i] = 1;
				*slot = (__u16)i;
				ret = 0;
				break;
			}
		}
	}
	pthread_mutex_unlock(&p->lock);
	if (ret == -ENOMEM)
		return wd_err(ENOMEM, "stream slot table");
	if (ret)
		return wd_fail(ret, "all %u zlib stream slots of queue %s are in use",
			       q->max_streams, q->name);
	return 0;
}

static void slot_put(struct wd_stream *s)
{
	struct wd_queue_priv *p = s->q->priv;

	if (!s->priv->has_slot)
		return;
	s->priv->has_slot = 0;
	pthread_mutex_lock(&p->lock);
	if (p->stream_slots && s->slot < s->q->max_streams)
		p->stream_slots[s->slot] = 0;
	pthread_mutex_unlock(&p->lock);
}

/*
 * A staging buffer whose queue is gone (released, or the parent's after
 * fork): ours to unmap, nothing to unshare.
 */
static void drop_stage(struct wd_stage **st)
{
	if (*st) {
		munmap((*st)->mem, (*st)->size);
		free(*st);
		*st = NULL;
	}
}

int wd_stream_sync(struct wd_stream *s)
{
	struct wd_stream_priv *pr;
	int i, ret = 0;

	if (!s || !s->priv || !s->q || !s->q->priv)
		return wd_fail(-EBADF, "the stream is not open (released?)");
	pr = s->priv;
	/* the older piece first: the one after the current */
	for (i = 1; i <= NPIECES; i++) {
		int r = piece_wait(s->q, &pr->piece[(pr->cur + i) % NPIECES], "stream piece");

		if (r && !ret)
			ret = r;
	}
	return stream_fail(s, ret);
}

void wd_stream_release(struct wd_stream *s)
{
	struct wd_stream_priv *pr;
	int i;

	if (!s || !s->priv)
		return;
	pr = s->priv;
	if (s->q && s->q->priv) {
		for (i = 0; i < NPIECES; i++) {
			if (pr->piece[i].busy) {
				pr->piece[i].busy = 0;
				wd_run_wait(s->q, &pr->piece[i].req, -1);
			}
			piece_free(s->q, &pr->piece[i]);
		}
		if (pr->ctl_st)
			wd_stage_put(s->q, pr->ctl_st);
		if (pr->out_st)
			wd_stage_put(s->q, pr->out_st);
		slot_put(s);
	} else {
		/* the queue was released first: its device mappings went with it */
		for (i = 0; i < NPIECES; i++)
			drop_stage(&pr->piece[i].st);
		drop_stage(&pr->ctl_st);
		drop_stage(&pr->out_st);
	}
	free(pr->out);
	free(pr);
	s->priv = NULL;
}

/* -- sha256 ------------------------------------------------------------- */

int wd_sha256_init(struct wd_queue *q, struct wd_stream *s)
{
	struct wd_stream_priv *pr;
	int ret = stream_new(q, s, WD_OP_SHA256, "sha256");

	if (ret)
		return ret;
	pr = s->priv;
	pr->ctx = wd_stage_get(q, 2 * sizeof(struct wd_sha256_ctx) + WD_SHA256_DIGEST_LEN,
			       &pr->ctl_st);
	if (!pr->ctx) {
		wd_stream_release(s);
		return -ENOMEM;
	}
	memset(pr->ctx, 0, 2 * sizeof(struct wd_sha256_ctx));
	pr->digest = (__u8 *)(pr->ctx + 2);
	return 0;
}

/* Send the current piece as a chain piece with WD_DF_MORE; move to the other. */
static int sha256_push(struct wd_stream *s)
{
	struct wd_stream_priv *pr = s->priv;
	struct wd_piece *pc = &pr->piece[pr->cur];
	int ret;

	memset(&pc->req, 0, sizeof(pc->req));
	pc->req.opcode = WD_OP_SHA256;
	pc->req.flags = WD_DF_MORE | (pr->started ? WD_DF_CONT : 0);
	pc->req.src = pc->buf;
	pc->req.src_len = (__u32)pc->fill;
	pc->req.ctx = &pr->ctx[0];
	ret = piece_start(s->q, pc);
	if (ret)
		return ret;
	pr->started = 1;
	s->total_in += pc->fill;
	pr->cur = (pr->cur + 1) % NPIECES;
	pc = &pr->piece[pr->cur];
	ret = piece_wait(s->q, pc, "sha256 piece");
	pc->fill = 0;
	return ret;
}

int wd_sha256_update(struct wd_stream *s, const void *data, size_t len)
{
	const __u8 *in = data;
	int ret = stream_check(s, WD_OP_SHA256);

	if (ret)
		return ret;
	if (len && !data)
		return wd_fail(-EINVAL, "wd_sha256_update: NULL data");
	while (len) {
		struct wd_piece *pc = &s->priv->piece[s->priv->cur];
		size_t n;

		ret = piece_buf(s->q, pc);
		if (ret)
			return stream_fail(s, ret);
		n = WD_STREAM_PIECE - pc->fill;
		if (n > len)
			n = len;
		memcpy(pc->buf + pc->fill, in, n);
		pc->fill += n;
		in += n;
		len -= n;
		if (pc->fill == WD_STREAM_PIECE) {
			ret = sha256_push(s);
			if (ret)
				return stream_fail(s, ret);
		}
	}
	return 0;
}

int wd_sha256_space(struct wd_stream *s, void **buf, size_t *room)
{
	struct wd_piece *pc;
	int ret = stream_check(s, WD_OP_SHA256);

	if (ret)
		return ret;
	if (!buf || !room)
		return wd_fail(-EINVAL, "wd_sha256_space: NULL argument");
	pc = &s->priv->piece[s->priv->cur];
	ret = piece_buf(s->q, pc);
	if (ret)
		return stream_fail(s, ret);
	*buf = pc->buf + pc->fill;
	*room = WD_STREAM_PIECE - pc->fill;	/* never 0: a full piece is sent at once */
	return 0;
}

int wd_sha256_filled(struct wd_stream *s, size_t n)
{
	struct wd_piece *pc;
	int ret = stream_check(s, WD_OP_SHA256);

	if (ret)
		return ret;
	pc = &s->priv->piece[s->priv->cur];
	if (!pc->buf || n > WD_STREAM_PIECE - pc->fill)
		return wd_fail(-EINVAL, "wd_sha256_filled: %zu bytes is more than "
			       "wd_sha256_space gave", n);
	pc->fill += n;
	if (pc->fill == WD_STREAM_PIECE) {
		ret = sha256_push(s);
		if (ret)
			return stream_fail(s, ret);
	}
	return 0;
}

int wd_sha256_digest(struct wd_stream *s, __u8 digest[WD_SHA256_DIGEST_LEN])
{
	struct wd_stream_priv *pr;
	struct wd_piece *pc;
	struct wd_req r = { .opcode = WD_OP_SHA256, .dst_len = WD_SHA256_DIGEST_LEN };
	int ret = stream_check(s, WD_OP_SHA256);

	if (ret)
		return ret;
	ret = wd_stream_sync(s);
	if (ret)
		return ret;
	pr = s->priv;
	pc = &pr->piece[pr->cur];
	r.src = pc->fill ? pc->buf : NULL;
	r.src_len = (__u32)pc->fill;
	r.dst = pr->digest;
	if (pr->started) {
		/* the last piece on a copy of the state: the chain goes on */
		pr->ctx[1] = pr->ctx[0];
		r.flags = WD_DF_CONT;
		r.ctx = &pr->ctx[1];
	}
	ret = wd_run(s->q, &r, -1);
	if (!ret && r.status != WD_STS_OK)
		ret = status_error(s->q, &r, "sha256 digest");
	if (ret)
		return stream_fail(s, ret);
	memcpy(digest, pr->digest, WD_SHA256_DIGEST_LEN);
	return 0;
}

int wd_sha256_final(struct wd_stream *s, __u8 digest[WD_SHA256_DIGEST_LEN])
{
	int ret = wd_sha256_digest(s, digest);

	wd_stream_release(s);
	return ret;
}

int wd_stream_copy(struct wd_stream *to, struct wd_stream *from)
{
	struct wd_stream_priv *fp;
	struct wd_piece *src, *dst;
	int ret = stream_check(from, from ? from->opcode : 0);

	if (ret)
		return ret;
	if (from->opcode != WD_OP_SHA256)
		return wd_fail(-EOPNOTSUPP, "a zlib stream's state is the driver's: it cannot "
			       "be copied");
	ret = wd_stream_sync(from);
	if (!ret)
		ret = wd_sha256_init(from->q, to);
	if (ret)
		return ret;
	fp = from->priv;
	to->priv->ctx[0] = fp->ctx[0];
	to->priv->started = fp->started;
	to->total_in = from->total_in;
	src = &fp->piece[fp->cur];
	dst = &to->priv->piece[0];
	if (src->fill) {
		ret = piece_buf(to->q, dst);
		if (ret) {
			wd_stream_release(to);
			return ret;
		}
		memcpy(dst->buf, src->buf, src->fill);
		dst->fill = src->fill;
	}
	return 0;
}

int wd_stream_move(struct wd_stream *s, struct wd_queue *q)
{
	struct wd_stream_priv *old, *pr;
	struct wd_stream n;
	struct wd_piece *pc;
	int i, ret;

	if (!s || !s->priv)
		return wd_fail(-EBADF, "the stream is not open (released?)");
	old = s->priv;
	if (!q) {	/* drop it: nothing of the parent's queue is touched */
		for (i = 0; i < NPIECES; i++)
			drop_stage(&old->piece[i].st);
		drop_stage(&old->ctl_st);
		drop_stage(&old->out_st);
		free(old->out);
		free(old);
		s->priv = NULL;
		return 0;
	}
	if (s->opcode != WD_OP_SHA256)
		return wd_fail(-EOPNOTSUPP, "a zlib stream's state is in the parent's driver "
			       "slot: it cannot move to another queue");
	for (i = 0; i < NPIECES; i++)
		if (old->piece[i].busy)
			return wd_fail(-EINVAL, "the stream had pieces in flight when it was "
				       "inherited (wd_stream_sync before fork)");
	ret = wd_sha256_init(q, &n);
	if (ret)
		return ret;
	pr = n.priv;
	pr->ctx[0] = old->ctx[0];
	pr->started = old->started;
	pr->err = old->err;
	n.total_in = s->total_in;
	pc = &old->piece[old->cur];
	if (pc->fill) {
		ret = piece_buf(q, &pr->piece[0]);
		if (ret) {
			wd_stream_release(&n);
			return ret;
		}
		memcpy(pr->piece[0].buf, pc->buf, pc->fill);
		pr->piece[0].fill = pc->fill;
	}
	for (i = 0; i < NPIECES; i++)
		drop_stage(&old->piece[i].st);
	drop_stage(&old->ctl_st);
	free(old->out);
	free(old);
	*s = n;
	return 0;
}

/* -- crc32c ------------------------------------------------------------- */

int wd_crc32c_update(struct wd_queue *q, __u32 *crc, const void *data, size_t len)
{
	struct wd_piece pcs[NPIECES] = { 0 };
	const __u8 *in = data;
	__u32 acc;
	int cur = 0, i, ret = 0;

	if (!q || !q->priv || !crc)
		return wd_fail(-EINVAL, "wd_crc32c_update: bad arguments");
	if (len && !data)
		return wd_fail(-EINVAL, "wd_crc32c_update: NULL data");
	acc = *crc;
	if (len <= WD_STREAM_PIECE || (len <= WD_MAX_LEN && wd_is_shared(q, data, len)))
		return wd_do_crc32c(q, data, len, acc, crc, NULL);
	while (len && !ret) {
		struct wd_piece *pc = &pcs[cur];
		size_t n = len < WD_STREAM_PIECE ? len : WD_STREAM_PIECE;

		/* the oldest piece in flight: its CRC joins the total now */
		ret = piece_wait(q, pc, "crc32c piece");
		if (ret)
			break;
		if (pc->req.src_len)
			acc = wd_crc32c_combine(acc, pc->req.result, pc->req.src_len);
		ret = piece_buf(q, pc);
		if (ret)
			break;
		memcpy(pc->buf, in, n);
		memset(&pc->req, 0, sizeof(pc->req));
		pc->req.opcode = WD_OP_CRC32C;
		pc->req.src = pc->buf;
		pc->req.src_len = (__u32)n;
		ret = piece_start(q, pc);
		in += n;
		len -= n;
		cur = (cur + 1) % NPIECES;
	}
	for (i = 0; i < NPIECES; i++) {
		struct wd_piece *pc = &pcs[(cur + i) % NPIECES];
		int r = piece_wait(q, pc, "crc32c piece");

		if (!r && !ret && pc->req.src_len)
			acc = wd_crc32c_combine(acc, pc->req.result, pc->req.src_len);
		if (r && !ret)
			ret = r;
		piece_free(q, pc);
	}
	if (!ret)
		*crc = acc;
	return ret;
}

/* -- zlib --------------------------------------------------------------- */

static int zstream_new(struct wd_queue *q, struct wd_stream *s, __u16 opcode, int level)
{
	int ret;

	if (opcode == WD_OP_DEFLATE && level != WD_LEVEL_STORE && (level < 0 || level > 9))
		return wd_fail(-EINVAL, "deflate level %d: want 0 (default), 1..9 or "
			       "WD_LEVEL_STORE", level);
	ret = stream_new(q, s, opcode, "zlib");
	if (ret)
		return ret;
	s->priv->level = (__u8)level;
	ret = slot_get(q, &s->slot);
	if (ret) {
		wd_stream_release(s);
		return ret;
	}
	s->priv->has_slot = 1;
	s->priv->out_st = NULL;
	if (!wd_stage_get(q, ZOUT_ROOM, &s->priv->out_st)) {
		wd_stream_release(s);
		return -ENOMEM;
	}
	return 0;
}

int wd_deflate_init(struct wd_queue *q, struct wd_stream *s, int level)
{
	return zstream_new(q, s, WD_OP_DEFLATE, level);
}

int wd_inflate_init(struct wd_queue *q, struct wd_stream *s)
{
	return zstream_new(q, s, WD_OP_INFLATE, 0);
}

static int out_append(struct wd_stream *s, const void *data, size_t n)
{
	struct wd_stream_priv *pr = s->priv;

	if (!n)
		return 0;
	if (pr->ohead && pr->ohead == pr->olen)
		pr->ohead = pr->olen = 0;
	if (pr->olen + n > pr->ocap) {
		size_t cap = pr->ocap ? pr->ocap : 64 << 10;
		__u8 *nb;

		if (pr->ohead) {	/* move what is left to the front first */
			memmove(pr->out, pr->out + pr->ohead, pr->olen - pr->ohead);
			pr->olen -= pr->ohead;
			pr->ohead = 0;
		}
		while (cap < pr->olen + n)
			cap *= 2;
		if (cap > pr->ocap) {
			nb = realloc(pr->out, cap);
			if (!nb)
				return wd_err(ENOMEM, "stream output of %zu bytes", cap);
			pr->out = nb;
			pr->ocap = cap;
		}
	}
	memcpy(pr->out + pr->olen, data, n);
	pr->olen += n;
	s->total_out += n;
	return 0;
}

/*
 * Run the filled piece with flags (and flush), and every continuation that
 * WD_CF_DST_FULL asks for; its output goes to the stream's output.
 */
static int zpiece_run(struct wd_stream *s, __u16 flags, __u8 flush)
{
	struct wd_stream_priv *pr = s->priv;
	struct wd_piece *pc = &pr->piece[0];
	const __u8 *src = pc->buf;
	size_t left = pc->fill;
	int ret;

	pc->fill = 0;
	for (;;) {
		struct wd_req r = {
			.opcode = s->opcode, .flags = flags, .src = left ? src : NULL,
			.src_len = (__u32)left, .dst = pr->out_st->mem, .dst_len = ZOUT_ROOM,
			.stream = s->slot, .level = pr->level,
			.flush = flags & WD_DF_MORE ? flush : WD_FLUSH_NONE,
		};

		ret = wd_run(s->q, &r, -1);
		if (!ret && r.status != WD_STS_OK)
			ret = status_error(s->q, &r, s->opcode == WD_OP_DEFLATE ? "deflate" : "inflate");
		if (!ret && (r.result > left || r.out_len > ZOUT_ROOM))
			ret = broken("device used %u of %zu bytes, wrote %u of %u", r.result, left,
				     r.out_len, ZOUT_ROOM);
		if (!ret)
			ret = out_append(s, pr->out_st->mem, r.out_len);
		if (ret)
			return stream_fail(s, ret);
		if (flags & WD_DF_MORE)
			pr->started = 1;
		src += r.result;
		left -= r.result;
		s->total_in += r.result;
		if (s->opcode == WD_OP_INFLATE && (r.cqe_flags & WD_CF_STREAM_END)) {
			s->eof = 1;
			slot_put(s);	/* the device freed it */
			return 0;
		}
		if (!(r.cqe_flags & WD_CF_DST_FULL))
			break;
		if (!r.result && !r.out_len)
			return stream_fail(s, broken("device reported a full output buffer but "
						     "wrote nothing"));
		flags |= WD_DF_CONT;
	}
	if (left && s->opcode == WD_OP_DEFLATE)
		return stream_fail(s, broken("deflate left %zu bytes of a piece unused", left));
	if (!(flags & WD_DF_MORE)) {
		s->eof = 1;
		slot_put(s);	/* a last piece frees the slot */
	}
	return 0;
}

int wd_stream_write(struct wd_stream *s, const void *in, size_t len, int flush)
{
	const __u8 *p = in;
	struct wd_stream_priv *pr;
	struct wd_piece *pc;
	int ret = stream_check(s, WD_OP_DEFLATE);

	if (ret)
		return ret;
	pr = s->priv;
	pc = &pr->piece[0];
	if (s->opcode == WD_OP_SHA256)
		return wd_fail(-EINVAL, "wd_stream_write is for zlib streams");
	if (flush != WD_FLUSH_NONE && flush != WD_FLUSH_SYNC && flush != WD_FLUSH_FULL &&
	    flush != WD_STREAM_FINISH)
		return wd_fail(-EINVAL, "flush mode %d", flush);
	if (len && !in)
		return wd_fail(-EINVAL, "wd_stream_write: NULL input");
	if (s->eof) {
		if (s->opcode == WD_OP_INFLATE)
			return 0;	/* what follows the stream is the caller's */
		if (!len && flush == WD_STREAM_FINISH)
			return 0;
		return wd_fail(-EINVAL, "the deflate stream is finished");
	}
	ret = piece_buf(s->q, pc);
	if (ret)
		return stream_fail(s, ret);
	while (len && !s->eof) {
		size_t n = WD_STREAM_PIECE - pc->fill;

		if (n > len)
			n = len;
		memcpy(pc->buf + pc->fill, p, n);
		pc->fill += n;
		p += n;
		len -= n;
		if (pc->fill == WD_STREAM_PIECE || s->opcode == WD_OP_INFLATE) {
			ret = zpiece_run(s, WD_DF_MORE | (pr->started ? WD_DF_CONT : 0),
					 WD_FLUSH_NONE);
			if (ret)
				return ret;
		}
	}
	if (s->eof || flush == WD_FLUSH_NONE)
		return 0;
	if (s->opcode == WD_OP_INFLATE) {
		if (flush != WD_STREAM_FINISH)
			return 0;	/* inflate output is never held back */
		return zpiece_run(s, WD_DF_CONT, WD_FLUSH_NONE);	/* ends early: BAD_DATA */
	}
	if (flush == WD_STREAM_FINISH) {
		/* never started: one request, whose output fits in ZOUT_ROOM */
		return zpiece_run(s, pr->started ? WD_DF_CONT : 0, WD_FLUSH_NONE);
	}
	return zpiece_run(s, WD_DF_MORE | (pr->started ? WD_DF_CONT : 0), (__u8)flush);
}

size_t wd_stream_pending(const struct wd_stream *s)
{
	return s && s->priv ? s->priv->olen - s->priv->ohead : 0;
}

size_t wd_stream_read(struct wd_stream *s, void *out, size_t room)
{
	struct wd_stream_priv *pr;
	size_t n;

	if (!s || !s->priv || !out)
		return 0;
	pr = s->priv;
	n = pr->olen - pr->ohead;
	if (n > room)
		n = room;
	memcpy(out, pr->out + pr->ohead, n);
	pr->ohead += n;
	if (pr->ohead == pr->olen)
		pr->ohead = pr->olen = 0;
	return n;
}
