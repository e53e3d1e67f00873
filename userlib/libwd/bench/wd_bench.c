// SPDX-License-Identifier: GPL-2.0
/*
 * wd_bench: the C library as a C user calls it, for `wrapdrive bench`.
 *
 *	wd_bench ALGO SIZE MODE BATCH SECONDS [DATA]
 *
 * ALGO is crc32c, sha256 or zlib; MODE one of
 *	sync	wd_send_sync + wd_recv_sync, one request at a time (the seed's calls)
 *	batch	wd_send_many of BATCH requests, two batches kept in flight,
 *		completions taken with wd_recv_many (wd_recv_sync when none)
 *	oneshot	wd_do_crc32c / wd_do_sha256 / wd_do_xfer on unshared memory
 *		(a staging copy each time), one at a time
 * DATA is "text" (default: words, moderately compressible, the same as the
 * Python benchmark's) or "selfbench" (the engine self-benchmark's input:
 * half random bytes, half one repeated byte), so zlib can be compared with
 * the engine's own rate on the same data.
 * Prints one line: "ops_per_sec N".  Nothing is pinned.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wd.h"

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

struct bench {
	struct wd_queue q;
	__u16 opcode;
	size_t size, out_len;
	int batch;
	char *src, *dst;	/* shared */
	char *plain_src, *plain_dst;	/* not shared */
	struct wd_req *reqs;
	struct wd_req **ptrs;
	int in_flight;
};

static int die(const char *what, int ret)
{
	fprintf(stderr, "wd_bench: %s: %s (%s)\n", what, strerror(-ret), wd_errmsg());
	exit(1);
}

/* The Python benchmark's sample_data(): words and a separator, from an LCG. */
static void fill_text(char *p, size_t n)
{
	static const char *const words[] = { "wrapdrive", "queue", "doorbell", "ring", "engine",
					     "vfio", "mdev", "accelerator", "completion",
					     "descriptor" };
	unsigned long x = 12345;
	size_t i = 0;

	while (i < n) {
		const char *w;
		size_t k;

		x = (x * 1103515245UL + 12345UL) & 0x7fffffffUL;
		w = words[x % 10];
		for (k = 0; w[k] && i < n; k++)
			p[i++] = w[k];
		if (i < n)
			p[i++] = (char)(32 + (x >> 16) % 95);
	}
}

/* The engine's selfbench input: half random, half a run of 'w'. */
static void fill_selfbench(char *p, size_t n)
{
	unsigned long x = 42;
	size_t i;

	for (i = 0; i < n / 2; i++) {
		x = x * 6364136223846793005UL + 1442695040888963407UL;
		p[i] = (char)(x >> 56);
	}
	memset(p + n / 2, 'w', n - n / 2);
}

static long step_sync(struct bench *b)
{
	struct wd_req *r = &b->reqs[0], *got;
	int ret = wd_send_sync(&b->q, r);

	if (ret)
		die("wd_send_sync", ret);
	ret = wd_recv_sync(&b->q, (void **)&got);
	if (ret)
		die("wd_recv_sync", ret);
	if (got->status)
		die("request status", -EIO);
	return 1;
}

static long step_batch(struct bench *b)
{
	int n = b->batch, got, i, ret;

	while (b->in_flight + n <= 2 * n) {
		struct wd_req **free_ptrs = b->ptrs + 2 * n;	/* scratch */
		int k = 0;

		for (i = 0; i < 2 * n && k < n; i++)
			if (!b->reqs[i].state)
				free_ptrs[k++] = &b->reqs[i];
		ret = wd_send_many(&b->q, free_ptrs, k);
		if (ret < 0)
			die("wd_send_many", ret);
		b->in_flight += ret;
		if (ret < k)
			break;
	}
	got = wd_recv_many(&b->q, b->ptrs, 2 * n);
	if (got == -EAGAIN) {
		ret = wd_recv_sync(&b->q, (void **)&b->ptrs[0]);
		if (ret)
			die("wd_recv_sync", ret);
		got = 1;
	} else if (got < 0) {
		die("wd_recv_many", got);
	}
	for (i = 0; i < got; i++)
		if (b->ptrs[i]->status)
			die("request status", -EIO);
	b->in_flight -= got;
	return got;
}

static long step_oneshot(struct bench *b)
{
	__u8 digest[WD_SHA256_DIGEST_LEN];
	size_t out = b->out_len;
	__u32 crc;
	int ret;

	if (b->opcode == WD_OP_CRC32C)
		ret = wd_do_crc32c(&b->q, b->plain_src, b->size, 0, &crc, NULL);
	else if (b->opcode == WD_OP_SHA256)
		ret = wd_do_sha256(&b->q, b->plain_src, b->size, digest, NULL);
	else
		ret = wd_do_xfer(&b->q, b->opcode, b->plain_src, b->size, b->plain_dst, &out,
				 NULL);
	if (ret)
		die("wd_do_*", ret);
	return 1;
}

int main(int argc, char **argv)
{
	struct bench b = { 0 };
	struct wd_capa capa = { 0 };
	long (*step)(struct bench *);
	double seconds, start, t, end;
	long ops = 0, reps = 1, r;
	size_t stride;
	int i, ret;

	if (argc != 6 && argc != 7) {
		fprintf(stderr, "usage: wd_bench ALGO SIZE sync|batch|oneshot BATCH SECONDS "
			"[text|selfbench]\n");
		return 2;
	}
	capa.alg = argv[1];
	b.size = strtoul(argv[2], NULL, 0);
	b.batch = atoi(argv[4]);
	seconds = atof(argv[5]);
	if (!strcmp(argv[1], "crc32c")) {
		b.opcode = WD_OP_CRC32C;
	} else if (!strcmp(argv[1], "sha256")) {
		b.opcode = WD_OP_SHA256;
		b.out_len = WD_SHA256_DIGEST_LEN;
	} else if (!strcmp(argv[1], "zlib")) {
		b.opcode = WD_OP_DEFLATE;
		b.out_len = wd_deflate_bound(b.size);
	} else {
		fprintf(stderr, "wd_bench: unknown algorithm %s\n", argv[1]);
		return 2;
	}
	if (!strcmp(argv[3], "sync")) {
		step = step_sync;
		b.batch = 1;
	} else if (!strcmp(argv[3], "batch")) {
		step = step_batch;
	} else if (!strcmp(argv[3], "oneshot")) {
		step = step_oneshot;
	} else {
		fprintf(stderr, "wd_bench: unknown mode %s\n", argv[3]);
		return 2;
	}
	if (b.batch < 1 || b.batch > 1024 || !b.size || b.size > WD_MAX_LEN) {
		fprintf(stderr, "wd_bench: bad batch or size\n");
		return 2;
	}
	ret = wd_request_queue(&b.q, &capa);
	if (ret)
		die("wd_request_queue", ret);
	stride = (b.size + 63) & ~(size_t)63;
	b.src = aligned_alloc(4096, (stride * 2 * (size_t)b.batch + 4095) & ~(size_t)4095);
	b.dst = aligned_alloc(4096, ((b.out_len + 64) * 2 * (size_t)b.batch + 4095) &
			      ~(size_t)4095);
	b.plain_src = malloc(b.size);
	b.plain_dst = malloc(b.out_len + 64);
	b.reqs = calloc(2 * (size_t)b.batch, sizeof(*b.reqs));
	b.ptrs = calloc(4 * (size_t)b.batch, sizeof(*b.ptrs));
	if (!b.src || !b.dst || !b.plain_src || !b.plain_dst || !b.reqs || !b.ptrs)
		die("allocation", -ENOMEM);
	if (argc == 7 && !strcmp(argv[6], "selfbench"))
		fill_selfbench(b.plain_src, b.size);
	else
		fill_text(b.plain_src, b.size);
	ret = wd_mem_share(&b.q, b.src, stride * 2 * (size_t)b.batch, 0);
	if (!ret && b.out_len)
		ret = wd_mem_share(&b.q, b.dst, (b.out_len + 64) * 2 * (size_t)b.batch, 0);
	if (ret)
		die("wd_mem_share", ret);
	for (i = 0; i < 2 * b.batch; i++) {
		memcpy(b.src + stride * (size_t)i, b.plain_src, b.size);
		b.reqs[i].opcode = b.opcode;
		b.reqs[i].src = b.src + stride * (size_t)i;
		b.reqs[i].src_len = (__u32)b.size;
		if (b.out_len) {
			b.reqs[i].dst = b.dst + (b.out_len + 64) * (size_t)i;
			b.reqs[i].dst_len = (__u32)b.out_len;
		}
	}
	step(&b);	/* warm-up */
	start = now();
	end = start + seconds;
	t = start;
	while (t < end) {
		double t0 = t;

		for (r = 0; r < reps; r++)
			ops += step(&b);
		t = now();
		if (t - t0 < 0.005)
			reps *= 2;
	}
	printf("ops_per_sec %.1f\n", (double)ops / (t - start));
	{
		struct wd_stats st;

		wd_queue_stats(&b.q, &st);
		fprintf(stderr, "wd_bench: %ld ops, %lu kicks, %lu spins, %lu sleeps\n", ops,
			st.kicks, st.spins, st.sleeps);
	}
	while (b.in_flight > 0) {
		struct wd_req *got;

		if (wd_recv_sync(&b.q, (void **)&got))
			break;
		b.in_flight--;
	}
	wd_release_queue(&b.q);
	return 0;
}
