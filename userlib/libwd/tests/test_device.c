// SPDX-License-Identifier: GPL-2.0
/*
 * libwd against the real modules (run inside a guest with wrapdrive.ko and
 * wd_dummy.ko loaded, as root): every seed call, bad input, the sleeping
 * path's CPU use, and threads sharing one queue.  Prints
 * "N checks, M failed" and a few measured figures.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "wd.h"
#include "check.h"

#define BIG	(16U << 20)

static __u32 crc32c_sw(__u32 crc, const void *buf, size_t len)
{
	const unsigned char *p = buf;
	int k;

	crc = ~crc;
	while (len--) {
		crc ^= *p++;
		for (k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0x82f63b78U & (0U - (crc & 1)));
	}
	return ~crc;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu_now(void)
{
	struct rusage ru;

	getrusage(RUSAGE_THREAD, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static void *page_alloc(size_t n)
{
	void *p = aligned_alloc(4096, (n + 4095) & ~(size_t)4095);

	if (!p)
		abort();
	memset(p, 0, n);
	return p;
}

static void test_request_and_bad_capabilities(void)
{
	struct wd_queue q = { 0 };
	struct wd_capa capa = { .alg = "no-such-algorithm" };

	CHECK(wd_request_queue(&q, &capa) == -ENODEV);
	CHECK(strstr(wd_errmsg(), "no-such-algorithm") != NULL);
	CHECK(wd_request_queue(&q, NULL) == -EINVAL);
	capa.alg = "zlib";
	capa.flags = WD_CAPA_SHARE_ALL;	/* no SVA zlib type */
	CHECK(wd_request_queue(&q, &capa) == -ENODEV);
	capa.alg = "crc32c";
	capa.flags = 0;
	CHECK(wd_request_queue(&q, &capa) == 0);
	CHECK(!strncmp(q.name, "57447276-", 9));
	CHECK(q.entries >= 2 && !(q.entries & (q.entries - 1)));
	CHECK(!strcmp(q.alg, "crc32c"));
	CHECK(wd_request_queue(&q, &capa) == -EBUSY);	/* already open */
	wd_release_queue(&q);
	wd_release_queue(&q);
	CHECK(q.priv == NULL);
}

static void test_seed_calls(void)
{
	struct wd_queue q = { 0 };
	struct wd_capa capa = { .alg = "crc32c" };
	char *buf = page_alloc(8192);
	struct wd_req r = { .opcode = WD_OP_CRC32C }, r2, *got = NULL;

	CHECK(wd_request_queue(&q, &capa) == 0);
	CHECK(wd_recv(&q, (void **)&got) == -EAGAIN);
	/* memory */
	CHECK(wd_mem_share(&q, buf, 8192, 1) == -EINVAL);
	CHECK(wd_mem_share(&q, NULL, 8192, 0) == -EINVAL);
	CHECK(wd_mem_share(&q, buf, 8192, 0) == 0);
	CHECK(wd_mem_share(&q, buf + 4096, 100, 0) == -EEXIST);	/* overlaps */
	CHECK(wd_mem_share(&q, buf, 8192, 0) == 0);		/* same range: counted */
	CHECK(wd_is_shared(&q, buf + 10, 100));
	memcpy(buf, "123456789", 9);
	r.src = buf;
	r.src_len = 9;
	/* wd_send + wd_recv_sync */
	CHECK(wd_send(&q, &r) == 0);
	CHECK(wd_send(&q, &r) == -EINVAL);	/* already in flight */
	CHECK(wd_recv_sync(&q, (void **)&got) == 0);
	CHECK(got == &r && r.status == WD_STS_OK && r.result == 0xe3069283);
	/* seed chaining: crc("1234") then "56789" */
	r.src_len = 4;
	CHECK(wd_send_sync(&q, &r) == 0);
	CHECK(wd_recv_sync(&q, (void **)&got) == 0 && got == &r);
	r2 = (struct wd_req){ .opcode = WD_OP_CRC32C, .src = buf + 4, .src_len = 5,
			      .seed = r.result };
	CHECK(wd_send_sync(&q, &r2) == 0);
	/* wd_recv polls */
	{
		double deadline = now() + 10;
		int ret;

		while ((ret = wd_recv(&q, (void **)&got)) == -EAGAIN && now() < deadline)
			;
		CHECK(ret == 0 && got == &r2 && r2.result == 0xe3069283);
	}
	/* bad input answered before the ring */
	r2.src_len = WD_MAX_LEN + 1;
	CHECK(wd_send(&q, &r2) == -E2BIG);
	r2.src = buf + 16384;	/* not shared */
	r2.src_len = 64;
	CHECK(wd_send(&q, &r2) == -EFAULT);
	CHECK(wd_send(&q, NULL) == -EINVAL);
	CHECK(wd_recv(&q, NULL) == -EINVAL);
	/* a bad opcode is the device's to answer: a status, the queue goes on */
	r2 = (struct wd_req){ .opcode = WD_OP_SHA256, .src = buf, .src_len = 9 };
	CHECK(wd_send(&q, &r2) == 0);
	CHECK(wd_recv_sync(&q, (void **)&got) == 0 && got == &r2);
	CHECK(r2.status == WD_STS_BAD_OPCODE);
	CHECK(r2.out_len == 0 && r2.result == 0);
	/* unshare: counted, then gone */
	wd_mem_unshare(&q, buf, 8192);
	CHECK(wd_is_shared(&q, buf, 8192));
	wd_mem_unshare(&q, buf, 8192);
	CHECK(!wd_is_shared(&q, buf, 8192));
	CHECK(wd_mem_unshare_checked(&q, buf, 8192) == -ENOENT);
	r.src_len = 9;
	CHECK(wd_send(&q, &r) == -EFAULT);
	/* one-shot helpers on unshared memory: staged */
	{
		__u32 crc = 0;

		CHECK(wd_do_crc32c(&q, "123456789", 9, 0, &crc, NULL) == 0 && crc == 0xe3069283);
	}
	wd_release_queue(&q);
	CHECK(wd_send(&q, &r) == -EINVAL);	/* released */
	free(buf);
}

/*
 * wd_do_sha256 stages unshared input and uses shared input in place: both
 * give the same digest at every size, from any address.  After release,
 * every one-shot call answers -EBADF.
 */
static void test_sha256_staged_and_in_place(void)
{
	static const size_t sizes[] = { (32U << 10) - 1, 32U << 10, (32U << 10) + 1,
					(48U << 10) + 5, (64U << 10) + 3, (1U << 20) + 7,
					WD_MAX_LEN };
	struct wd_queue q = { 0 };
	struct wd_capa capa = { .alg = "sha256" };
	__u8 *plain = malloc(WD_MAX_LEN), *shared = page_alloc(WD_MAX_LEN);
	__u8 a[WD_SHA256_DIGEST_LEN], b[WD_SHA256_DIGEST_LEN];
	unsigned int i, x = 2463534242U;
	size_t k;
	__u16 st;

	if (!plain)
		abort();
	for (k = 0; k < WD_MAX_LEN; k++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		plain[k] = (__u8)x;
	}
	memcpy(shared, plain, WD_MAX_LEN);
	CHECK(wd_request_queue(&q, &capa) == 0);
	CHECK(wd_mem_share(&q, shared, WD_MAX_LEN, 0) == 0);
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		st = 0xffff;
		CHECK(wd_do_sha256(&q, plain, sizes[i], a, &st) == 0 && st == WD_STS_OK);
		CHECK(wd_do_sha256(&q, shared, sizes[i], b, NULL) == 0);
		CHECK(!memcmp(a, b, sizeof(a)));
		if (memcmp(a, b, sizeof(a)))
			fprintf(stderr, "sha256 of %zu bytes: staged and in place differ\n",
				sizes[i]);
	}
	/* from an odd address */
	CHECK(wd_do_sha256(&q, plain + 3, (40U << 10) + 1, a, NULL) == 0);
	CHECK(wd_do_sha256(&q, shared + 3, (40U << 10) + 1, b, NULL) == 0);
	CHECK(!memcmp(a, b, sizeof(a)));
	CHECK(wd_do_sha256(&q, plain, WD_MAX_LEN + 1, a, NULL) == -E2BIG);
	wd_mem_unshare(&q, shared, WD_MAX_LEN);
	wd_release_queue(&q);
	/* a released queue: -EBADF from every one-shot call, no crash */
	{
		__u32 crc, lens[1] = { 64 };
		size_t room = 64;

		CHECK(wd_do_sha256(&q, plain, 64U << 10, a, NULL) == -EBADF);
		CHECK(wd_do_sha256(&q, plain, 64, a, NULL) == -EBADF);
		CHECK(wd_do_crc32c(&q, plain, 64, 0, &crc, NULL) == -EBADF);
		CHECK(wd_do_xfer(&q, WD_OP_MEMCPY, plain, 64, b, &room, NULL) == -EBADF);
		CHECK(wd_do_crc32c_many(&q, plain, lens, 1, &crc, NULL) == -EBADF);
		CHECK(wd_crc32c_call(&q, (const char *)plain, 64, 0) == -EBADF);
	}
	free(plain);
	free(shared);
}

/*
 * A full ring answers -EBUSY at once; the sync forms sleep instead of
 * spinning.  The ring is filled with one slow request (16 MiB sha256) and
 * NOPs behind it: a strictly ordered queue completes nothing before the
 * slow one, and closing the queue waits for no more than a round of NOPs.
 */
static void test_full_ring_and_sleeping(void)
{
	struct wd_queue q = { 0 };
	struct wd_capa capa = { .alg = "sha256" };
	char *src = page_alloc(BIG), *dst = page_alloc(4096);
	struct wd_req *reqs, extra, *got;
	double t0, c0, wall, cpu;
	__u32 i, n;

	CHECK(wd_request_queue(&q, &capa) == 0);
	n = q.entries;
	reqs = calloc(n, sizeof(*reqs));
	CHECK(wd_mem_share(&q, src, BIG, 0) == 0);
	CHECK(wd_mem_share(&q, dst, 4096, 0) == 0);
	for (i = 0; i < n; i++) {
		if (i == 0)
			reqs[i] = (struct wd_req){ .opcode = WD_OP_SHA256, .src = src,
						   .src_len = BIG, .dst = dst, .dst_len = 32 };
		else
			reqs[i] = (struct wd_req){ .opcode = WD_OP_NOP };
		CHECK(wd_send(&q, &reqs[i]) == 0);
	}
	extra = (struct wd_req){ .opcode = WD_OP_NOP };
	t0 = now();
	CHECK(wd_send(&q, &extra) == -EBUSY);
	CHECK(now() - t0 < 0.05);
	CHECK(wd_recv(&q, (void **)&got) == -EAGAIN);	/* the slow one is not done */
	/* wd_send_sync on the full ring: sleeps until the first completion */
	t0 = now();
	c0 = cpu_now();
	CHECK(wd_send_sync_timeout(&q, &extra, 120000) == 0);
	wall = now() - t0;
	cpu = cpu_now() - c0;
	printf("wd_send_sync on a full ring: %.1f ms CPU over %.2f s\n", cpu * 1e3, wall);
	CHECK(reqs[0].state == 3);	/* room came from a completion, not yet received */
	CHECK(wall > 0.05 && cpu < 0.2 * wall + 0.02);
	for (i = 0; i <= n; i++) {
		CHECK(wd_recv_sync_timeout(&q, (void **)&got, 60000) == 0);
		if (i < n)
			CHECK(got == &reqs[i] && got->status == WD_STS_OK);	/* strict order */
		else
			CHECK(got == &extra);
	}
	wd_release_queue(&q);

	/* wd_recv_sync for 4 slow requests on a fresh queue: mostly asleep */
	memset(&q, 0, sizeof(q));
	CHECK(wd_request_queue(&q, &capa) == 0);
	CHECK(wd_mem_share(&q, src, BIG, 0) == 0);
	CHECK(wd_mem_share(&q, dst, 4096, 0) == 0);
	for (i = 0; i < 4; i++) {
		reqs[i] = (struct wd_req){ .opcode = WD_OP_SHA256, .src = src, .src_len = BIG,
					   .dst = dst + 32 * i, .dst_len = 32 };
		CHECK(wd_send(&q, &reqs[i]) == 0);
	}
	t0 = now();
	c0 = cpu_now();
	for (i = 0; i < 4; i++) {
		CHECK(wd_recv_sync(&q, (void **)&got) == 0);
		CHECK(got == &reqs[i] && got->status == WD_STS_OK);	/* strictly ordered */
	}
	wall = now() - t0;
	cpu = cpu_now() - c0;
	printf("sleeping: 4 x 16 MiB sha256 in wd_recv_sync: %.1f ms CPU over %.2f s (%.2f%%)\n",
	       cpu * 1e3, wall, 100 * cpu / wall);
	CHECK(wall > 0.3);
	CHECK(cpu < 0.05 * wall);
	/* idle: blocked with nothing in flight */
	t0 = now();
	c0 = cpu_now();
	CHECK(wd_recv_sync_timeout(&q, (void **)&got, 1000) == -ETIMEDOUT);
	wall = now() - t0;
	cpu = cpu_now() - c0;
	printf("idle wd_recv_sync: %.2f ms CPU over %.2f s (%.2f%%)\n", cpu * 1e3, wall,
	       100 * cpu / wall);
	CHECK(wall >= 0.99 && cpu < 0.05 * wall);
	wd_release_queue(&q);
	free(reqs);
	free(src);
	free(dst);
}

#define THREADS		4
#define PER_THREAD	400

struct worker {
	struct wd_queue *q;
	int id, bad;
};

static void *runner(void *arg)
{
	struct worker *w = arg;
	unsigned char data[300];
	int i;

	for (i = 0; i < PER_THREAD; i++) {
		size_t len = 1 + (size_t)((i * 7 + w->id) % 300);
		__u32 crc = 0;

		memset(data, w->id * 13 + i, sizeof(data));
		if (wd_do_crc32c(w->q, data, len, 0, &crc, NULL) || crc != crc32c_sw(0, data, len))
			w->bad++;
	}
	return NULL;
}

static void *seed_user(void *arg)
{
	struct worker *w = arg;
	char *buf = page_alloc(4096);
	int i;

	memset(buf, 0x5a, 4096);
	if (wd_mem_share(w->q, buf, 4096, 0)) {
		w->bad++;
		return NULL;
	}
	for (i = 0; i < PER_THREAD; i++) {
		struct wd_req r = { .opcode = WD_OP_CRC32C, .src = buf, .src_len = 1 + i }, *got;

		if (wd_send_sync(w->q, &r) || wd_recv_sync(w->q, (void **)&got) || got != &r ||
		    r.result != crc32c_sw(0, buf, 1 + (size_t)i))
			w->bad++;
	}
	wd_mem_unshare(w->q, buf, 4096);
	free(buf);
	return NULL;
}

static void test_threads(void)
{
	struct wd_queue q = { 0 };
	struct wd_capa capa = { .alg = "crc32c" };
	struct worker w[THREADS + 1];
	pthread_t t[THREADS + 1];
	int i, bad = 0;

	CHECK(wd_request_queue(&q, &capa) == 0);
	for (i = 0; i <= THREADS; i++) {
		w[i] = (struct worker){ .q = &q, .id = i };
		pthread_create(&t[i], NULL, i < THREADS ? runner : seed_user, &w[i]);
	}
	for (i = 0; i <= THREADS; i++) {
		pthread_join(t[i], NULL);
		bad += w[i].bad;
	}
	CHECK(bad == 0);
	CHECK(wd_in_flight(&q) == 0);
	wd_release_queue(&q);
}

/* Write text to a sysfs file; 0 or -errno. */
static int sysfs_write(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	int ret = 0;

	if (!f)
		return -errno;
	if (fputs(text, f) < 0)
		ret = -errno;
	if (fclose(f) && !ret)
		ret = -errno;
	return ret;
}

static int mdev_exists(const char *uuid)
{
	char path[128];

	snprintf(path, sizeof(path), "/sys/bus/mdev/devices/%s", uuid);
	return access(path, F_OK) == 0;
}

/*
 * Queues an administrator made: opened by name (q.uuid), or chosen
 * before creating one; never removed by wd_release_queue.
 */
static void test_provisioned(void)
{
	static const char uuid[] = "0badcafe-1111-4222-8333-444455556666";
	static const char type[] =
		"/sys/class/mdev_bus/wd_dummy.0/mdev_supported_types/wd_dummy-crc32c";
	struct wd_queue q = { 0 }, q2 = { 0 }, bad = { 0 };
	struct wd_capa capa = { .alg = "crc32c" }, sha = { .alg = "sha256" };
	char path[256];
	__u32 crc;

	snprintf(path, sizeof(path), "%s/create", type);
	CHECK(sysfs_write(path, uuid) == 0);
	q.uuid = uuid;
	CHECK(wd_request_queue(&q, &capa) == 0);
	CHECK(q.provisioned == 1 && !strcmp(q.name, uuid));
	CHECK(wd_do_crc32c(&q, "123456789", 9, 0, &crc, NULL) == 0 && crc == 0xe3069283);
	wd_release_queue(&q);
	CHECK(mdev_exists(uuid));
	/* without a name: the free provisioned queue, not a new one */
	CHECK(wd_request_queue(&q2, &capa) == 0);
	CHECK(q2.provisioned == 1 && !strcmp(q2.name, uuid));
	/* while it is held, a request creates a queue of its own */
	q = (struct wd_queue){ 0 };
	CHECK(wd_request_queue(&q, &capa) == 0);
	CHECK(q.provisioned == 0 && !strncmp(q.name, "57447276-", 9));
	wd_release_queue(&q);
	/* by name, while someone holds it: EBUSY, said in words */
	q = (struct wd_queue){ .uuid = uuid };
	CHECK(wd_request_queue(&q, &capa) == -EBUSY);
	CHECK(strstr(wd_errmsg(), "in use") != NULL);
	wd_release_queue(&q2);
	CHECK(mdev_exists(uuid));
	/* by name, of another algorithm; a name that is no UUID; no such queue */
	bad.uuid = uuid;
	CHECK(wd_request_queue(&bad, &sha) == -EINVAL);
	CHECK(strstr(wd_errmsg(), "is a 'crc32c' queue, not 'sha256'") != NULL);
	bad = (struct wd_queue){ .uuid = "../../kernel" };
	CHECK(wd_request_queue(&bad, &capa) == -EINVAL);
	bad = (struct wd_queue){ .uuid = "0badcafe-1111-4222-8333-000000000000" };
	CHECK(wd_request_queue(&bad, &capa) == -ENOENT);
	snprintf(path, sizeof(path), "/sys/bus/mdev/devices/%s/remove", uuid);
	CHECK(sysfs_write(path, "1") == 0);
}

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	test_request_and_bad_capabilities();
	test_seed_calls();
	test_sha256_staged_and_in_place();
	test_full_ring_and_sleeping();
	test_threads();
	test_provisioned();
	CHECK_REPORT();
	return failures ? 1 : 0;
}
