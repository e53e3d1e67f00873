// SPDX-License-Identifier: GPL-2.0
/*
 * libwd's streams against the real modules (inside a guest, as root):
 * sha256, crc32c, deflate and inflate of data of any size in pieces of any
 * size, byte for byte against independent references (the kernel's own
 * sha256 and crc32c through AF_ALG, zlib), and what bad use gets.  Prints
 * "N checks, M failed".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/if_alg.h>
#include <zlib.h>

#include "wd.h"
#include "check.h"

#define PIECE	WD_STREAM_PIECE
#define BIG	(3 * WD_MAX_LEN + 7)	/* the largest input below */

static unsigned char *data;	/* BIG random bytes */
static unsigned char *text;	/* BIG compressible bytes */
static unsigned long long rng_state = 88172645463325252ULL;

static unsigned long long rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* A split point: often 0, 1, a block or piece boundary +-1, else random. */
static size_t cut(size_t left)
{
	static const size_t special[] = { 0, 1, 63, 64, 65, PIECE - 1, PIECE, PIECE + 1,
					  WD_MAX_LEN - 1, WD_MAX_LEN + 1 };
	size_t n;

	if (rnd() % 3 == 0)
		n = special[rnd() % (sizeof(special) / sizeof(special[0]))];
	else
		n = rnd() % (3 * (size_t)PIECE / 2);
	return n < left ? n : left;
}

/* The kernel's own hash of buf (AF_ALG "sha256" or "crc32c"). */
static int afalg(const char *alg, const void *buf, size_t len, void *out, size_t out_len)
{
	struct sockaddr_alg sa = { .salg_family = AF_ALG, .salg_type = "hash" };
	const char *p = buf;
	int tfm, op, ok = -1;

	strncpy((char *)sa.salg_name, alg, sizeof(sa.salg_name) - 1);
	tfm = socket(AF_ALG, SOCK_SEQPACKET, 0);
	if (tfm < 0 || bind(tfm, (struct sockaddr *)&sa, sizeof(sa)))
		goto out;
	op = accept(tfm, NULL, 0);
	if (op < 0)
		goto out;
	while (len) {
		size_t n = len > (64 << 10) ? 64 << 10 : len;
		ssize_t w = send(op, p, n, MSG_MORE);

		if (w <= 0)
			break;
		p += w;
		len -= (size_t)w;
	}
	if (!len && send(op, "", 0, 0) == 0 && read(op, out, out_len) == (ssize_t)out_len)
		ok = 0;
	close(op);
out:
	if (tfm >= 0)
		close(tfm);
	return ok;
}

static __u32 ref_crc(const void *buf, size_t len)
{
	__u32 crc = 0;

	if (afalg("crc32c", buf, len, &crc, sizeof(crc)))
		fprintf(stderr, "AF_ALG crc32c failed: %s\n", strerror(errno));
	return crc;
}

static void open_queue(struct wd_queue *q, const char *alg)
{
	struct wd_capa capa = { .alg = alg };

	memset(q, 0, sizeof(*q));
	CHECK(wd_request_queue(q, &capa) == 0);
}

static void test_sha256(void)
{
	static const size_t sizes[] = { 0, 1, 63, 64, 65, PIECE - 1, PIECE, PIECE + 1,
					WD_MAX_LEN + 1, BIG };
	struct wd_queue q;
	size_t i;
	int t;

	open_queue(&q, "sha256");
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		unsigned char want[32], got[32], mid[32], ref_mid[32];

		CHECK(afalg("sha256", data, sizes[i], want, 32) == 0);
		for (t = 0; t < (sizes[i] > WD_MAX_LEN ? 1 : 3); t++) {
			struct wd_stream s = { 0 }, c = { 0 };
			size_t off = 0, half = sizes[i] / 2;
			int ok = 1;

			CHECK(wd_sha256_init(&q, &s) == 0);
			while (off < sizes[i]) {
				size_t n = t == 0 ? sizes[i] - off : cut(sizes[i] - off);

				if (off < half && off + n >= half && n) {
					/* a digest and a copy half way: neither ends the chain */
					n = half - off;
					ok &= wd_sha256_update(&s, data + off, n) == 0;
					off += n;
					CHECK(wd_sha256_digest(&s, mid) == 0);
					CHECK(afalg("sha256", data, half, ref_mid, 32) == 0);
					CHECK(!memcmp(mid, ref_mid, 32));
					CHECK(wd_stream_copy(&c, &s) == 0);
					continue;
				}
				ok &= wd_sha256_update(&s, data + off, n) == 0;
				off += n;
			}
			CHECK(ok);
			CHECK(wd_sha256_final(&s, got) == 0);
			CHECK(!memcmp(got, want, 32));
			CHECK(s.priv == NULL);
			if (c.priv) {	/* the copy goes on from half way */
				CHECK(wd_sha256_update(&c, data + half, sizes[i] - half) == 0);
				CHECK(wd_sha256_final(&c, got) == 0);
				CHECK(!memcmp(got, want, 32));
			}
		}
	}
	wd_release_queue(&q);
}

/* wd_sha256_space/_filled: the caller writes into the staging memory. */
static void test_sha256_in_place(void)
{
	size_t sizes[] = { 0, 1, PIECE, 2 * PIECE + 65, WD_MAX_LEN + 1 }, i;
	unsigned char want[32], got[32];
	struct wd_queue q;

	open_queue(&q, "sha256");
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct wd_stream s = { 0 };
		size_t off = 0;
		int ok = 1;

		CHECK(afalg("sha256", data, sizes[i], want, 32) == 0);
		CHECK(wd_sha256_init(&q, &s) == 0);
		while (off < sizes[i]) {
			size_t room = 0, n = cut(sizes[i] - off);
			void *buf = NULL;

			ok &= wd_sha256_space(&s, &buf, &room) == 0 && room > 0;
			if (n > room)
				n = room;
			memcpy(buf, data + off, n);
			ok &= wd_sha256_filled(&s, n) == 0;
			off += n;
		}
		CHECK(ok);
		CHECK(wd_sha256_final(&s, got) == 0);
		CHECK(!memcmp(got, want, 32));
	}
	{
		struct wd_stream s = { 0 };
		size_t room;
		void *buf;

		CHECK(wd_sha256_init(&q, &s) == 0);
		CHECK(wd_sha256_space(&s, &buf, &room) == 0 && room == PIECE);
		CHECK(wd_sha256_filled(&s, room + 1) == -EINVAL);
		wd_stream_release(&s);
	}
	wd_release_queue(&q);
}

static void test_crc32c(void)
{
	static const size_t sizes[] = { 0, 1, 4097, PIECE + 1, 2 * PIECE, WD_MAX_LEN + 1, BIG };
	struct wd_queue q;
	size_t i;
	int t;

	/* software combination against the kernel */
	CHECK(wd_crc32c_combine(ref_crc(data, 1000), ref_crc(data + 1000, 777), 777) ==
	      ref_crc(data, 1777));
	CHECK(wd_crc32c_combine(0x12345678, 0, 0) == 0x12345678);
	open_queue(&q, "crc32c");
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		__u32 want = ref_crc(data, sizes[i]);

		for (t = 0; t < 2; t++) {
			__u32 crc = 0;
			size_t off = 0;
			int ok = 1;

			do {
				size_t n = t == 0 ? sizes[i] - off : cut(sizes[i] - off);

				ok &= wd_crc32c_update(&q, &crc, data + off, n) == 0;
				off += n;
			} while (off < sizes[i]);
			CHECK(ok);
			CHECK(crc == want);
		}
	}
	CHECK(wd_crc32c_update(&q, NULL, data, 1) == -EINVAL);
	wd_release_queue(&q);
}

/* zlib's inflate of a whole stream (NULL if it is not one). */
static unsigned char *zinflate(const unsigned char *z, size_t zlen, size_t want, int flushed)
{
	unsigned char *out = malloc(want + 1);
	z_stream zs = { 0 };
	int ret;

	if (!out || inflateInit(&zs) != Z_OK)
		return NULL;
	zs.next_in = (unsigned char *)z;
	zs.avail_in = (uInt)zlen;
	zs.next_out = out;
	zs.avail_out = (uInt)want + 1;
	ret = inflate(&zs, Z_SYNC_FLUSH);
	inflateEnd(&zs);
	if (zs.total_out != want || (flushed ? ret != Z_OK && ret != Z_BUF_ERROR :
				     ret != Z_STREAM_END)) {
		free(out);
		return NULL;
	}
	return out;
}

static unsigned char *drain(struct wd_stream *s, unsigned char *out, size_t *len, size_t *cap)
{
	size_t n = wd_stream_pending(s);

	if (*len + n > *cap) {
		*cap = (*len + n) * 2;
		out = realloc(out, *cap);
	}
	*len += wd_stream_read(s, out + *len, n);
	return out;
}

static void test_deflate(void)
{
	static const size_t sizes[] = { 0, 1, 5000, PIECE + 1, WD_MAX_LEN + 1 };
	static const int levels[] = { WD_LEVEL_DEFAULT, 1, 9, WD_LEVEL_STORE };
	struct wd_queue q;
	size_t i;
	int t;

	open_queue(&q, "zlib");
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		for (t = 0; t < (sizes[i] > WD_MAX_LEN ? 1 : 4); t++) {
			struct wd_stream s = { 0 };
			size_t off = 0, zlen = 0, cap = 0;
			unsigned char *z = NULL, *back;
			int ok = 1;

			CHECK(wd_deflate_init(&q, &s, levels[t]) == 0);
			while (off < sizes[i]) {
				size_t n = t == 0 ? sizes[i] - off : cut(sizes[i] - off);
				int flush = t < 2 ? WD_FLUSH_NONE : (int)(rnd() % 3);

				ok &= wd_stream_write(&s, text + off, n, flush) == 0;
				off += n;
				z = drain(&s, z, &zlen, &cap);
				if (flush != WD_FLUSH_NONE && off < sizes[i]) {
					/* everything so far comes out of a flush */
					back = zinflate(z, zlen, off, 1);
					ok &= back && !memcmp(back, text, off);
					free(back);
				}
			}
			CHECK(ok);
			CHECK(wd_stream_write(&s, NULL, 0, WD_STREAM_FINISH) == 0);
			CHECK(s.eof);
			z = drain(&s, z, &zlen, &cap);
			CHECK(s.total_in == sizes[i] && s.total_out == zlen);
			back = zinflate(z, zlen, sizes[i], 0);
			CHECK(back && !memcmp(back, text, sizes[i]));
			CHECK(wd_stream_write(&s, "x", 1, WD_FLUSH_NONE) == -EINVAL);
			free(back);
			free(z);
			wd_stream_release(&s);
		}
	}
	wd_release_queue(&q);
}

static void test_inflate(void)
{
	static const size_t sizes[] = { 0, 1, 5000, 3 * PIECE + 9, WD_MAX_LEN + 1 };
	struct wd_queue q;
	size_t i;
	int t;

	open_queue(&q, "zlib");
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uLongf zlen = compressBound(sizes[i]) + 16;
		unsigned char *z = malloc(zlen);

		CHECK(compress2(z, &zlen, text, sizes[i], 6) == Z_OK);
		memcpy(z + zlen, "trailing", 8);	/* not the stream's */
		for (t = 0; t < (sizes[i] > WD_MAX_LEN ? 1 : 3); t++) {
			struct wd_stream s = { 0 };
			size_t off = 0, olen = 0, cap = 0, total = zlen + 8;
			unsigned char *out = NULL;
			int ok = 1;

			CHECK(wd_inflate_init(&q, &s) == 0);
			while (off < total && !s.eof) {
				size_t n = t == 0 ? total - off : cut(total - off);
				__u64 before = s.total_in;

				ok &= wd_stream_write(&s, z + off, n, WD_FLUSH_NONE) == 0;
				out = drain(&s, out, &olen, &cap);
				/* all of a piece is used, but for what follows the stream */
				ok &= s.eof || s.total_in - before == n;
				off += n;
			}
			CHECK(ok);
			CHECK(s.eof && s.total_in == zlen && olen == sizes[i]);
			CHECK(olen == sizes[i] && (!olen || !memcmp(out, text, olen)));
			CHECK(wd_stream_write(&s, "more", 4, WD_FLUSH_NONE) == 0); /* the caller's */
			free(out);
			wd_stream_release(&s);
		}
		free(z);
	}
	wd_release_queue(&q);
}

static void test_bad_use(void)
{
	struct wd_queue q, qs;
	struct wd_stream s = { 0 }, many[64];
	unsigned char bad[64], digest[32];
	__u32 i, n = 0;

	open_queue(&q, "zlib");
	open_queue(&qs, "sha256");
	CHECK(wd_sha256_init(&q, &s) == -EINVAL);	/* a zlib queue */
	CHECK(wd_deflate_init(&qs, &s, 6) == -EINVAL);
	CHECK(wd_deflate_init(&q, &s, 11) == -EINVAL);
	CHECK(wd_sha256_update(&s, data, 1) == -EBADF);	/* never opened */
	/* a queue runs max_streams zlib streams at once */
	CHECK(q.max_streams > 0 && q.max_streams < 64);
	for (i = 0; i < q.max_streams && i < 64; i++)
		n += wd_deflate_init(&q, &many[i], 1) == 0;
	CHECK(n == q.max_streams);
	CHECK(wd_inflate_init(&q, &s) == -EBUSY);
	wd_stream_release(&many[0]);
	CHECK(wd_inflate_init(&q, &s) == 0);	/* its slot is free again */
	for (i = 1; i < n; i++)
		wd_stream_release(&many[i]);
	/* corrupt input: a status, and the stream is over */
	memcpy(bad, "\x78\x9c\x07", 3);	/* a final block of the reserved type */
	memset(bad + 3, 0, sizeof(bad) - 3);
	CHECK(wd_stream_write(&s, bad, sizeof(bad), WD_FLUSH_NONE) == -EIO);
	CHECK(wd_last_status() == WD_STS_BAD_DATA);
	CHECK(wd_stream_write(&s, bad, 1, WD_FLUSH_NONE) == -EIO);
	wd_stream_release(&s);
	wd_stream_release(&s);	/* idempotent */
	/* a truncated stream: finishing it is BAD_DATA */
	CHECK(wd_inflate_init(&q, &s) == 0);
	CHECK(wd_stream_write(&s, "\x78\x9c", 2, WD_STREAM_FINISH) == -EIO);
	CHECK(wd_last_status() == WD_STS_BAD_DATA);
	wd_stream_release(&s);
	CHECK(wd_deflate_init(&q, &s, 1) == 0);
	CHECK(wd_stream_copy(&many[0], &s) == -EOPNOTSUPP);
	CHECK(wd_stream_write(&s, data, 1, 7) == -EINVAL);
	wd_stream_release(&s);
	/* a digest of nothing; a stream released without a digest */
	CHECK(wd_sha256_init(&qs, &s) == 0);
	CHECK(wd_sha256_final(&s, digest) == 0);
	CHECK(!memcmp(digest, "\xe3\xb0\xc4\x42\x98\xfc\x1c\x14", 8));
	CHECK(wd_sha256_digest(&s, digest) == -EBADF);
	CHECK(wd_sha256_init(&qs, &s) == 0);
	CHECK(wd_sha256_update(&s, data, PIECE + 5) == 0);
	wd_stream_release(&s);
	CHECK(wd_in_flight(&qs) == 0);
	wd_release_queue(&qs);
	wd_release_queue(&q);
}

int main(int argc, char **argv)
{
	size_t i;

	setvbuf(stdout, NULL, _IOLBF, 0);
	data = malloc(BIG);
	text = malloc(BIG);
	if (!data || !text)
		return 2;
	for (i = 0; i + 8 <= BIG; i += 8) {
		unsigned long long r = rnd();

		memcpy(data + i, &r, 8);
	}
	for (i = 0; i < BIG; ) {	/* runs and words: compressible */
		size_t n = 1 + rnd() % 300, k;

		for (k = 0; k < n && i < BIG; k++, i++)
			text[i] = (rnd() & 1) ? data[i] % 16 + 'a' : text[i ? i - 1 : 0];
	}
	for (i = 1; i < (size_t)argc || argc == 1; i++) {
		const char *only = argc > 1 ? argv[i] : NULL;

		if (!only || !strcmp(only, "sha256"))
			test_sha256();
		if (!only || !strcmp(only, "sha256"))
			test_sha256_in_place();
		if (!only || !strcmp(only, "crc32c"))
			test_crc32c();
		if (!only || !strcmp(only, "deflate"))
			test_deflate();
		if (!only || !strcmp(only, "inflate"))
			test_inflate();
		if (!only || !strcmp(only, "bad"))
			test_bad_use();
		if (argc == 1)
			break;
	}
	CHECK_REPORT();
	free(data);
	free(text);
	return failures ? 1 : 0;
}
