// SPDX-License-Identifier: GPL-2.0
/*
 * Host test of libwd's ring logic against a simulated device working on
 * the same memory layout as a real queue (doorbell, CQ region with the
 * header page, SQ).  No VFIO: wd_attach_memory.  The real device is
 * tested in the VM suite; this one can misbehave on purpose.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "wd.h"
#include "check.h"
#include "wd_priv.h"


struct sim {
	struct wd_doorbell *db;
	struct wd_ring_hdr *hdr;
	struct wd_cqe *cq;
	struct wd_desc *sq;
	__u32 entries;
	int efd, kick_fd;
	int weak;		/* complete pairs in reverse order */
	volatile int stop;
	pthread_t thread;
	unsigned long signals;
};

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

static void sim_init(struct sim *s, __u32 entries)
{
	memset(s, 0, sizeof(*s));
	s->entries = entries;
	s->db = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	s->hdr = mmap(NULL, 4096 + entries * sizeof(struct wd_cqe), PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	s->sq = mmap(NULL, entries * sizeof(struct wd_desc), PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	s->cq = (struct wd_cqe *)((char *)s->hdr + 4096);
	s->hdr->magic = WD_RING_MAGIC;
	s->hdr->version = WD_ABI_VERSION;
	s->hdr->entries = entries;
	s->hdr->desc_size = sizeof(struct wd_desc);
	s->hdr->cqe_size = sizeof(struct wd_cqe);
	s->hdr->cq_off = 4096;
	s->hdr->capa_flags = WD_CAPA_SHARE_ALL;
	s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	s->kick_fd = memfd_create("kick", 0);
}

static void sim_fini(struct sim *s)
{
	munmap(s->db, 4096);
	munmap(s->hdr, 4096 + s->entries * sizeof(struct wd_cqe));
	munmap(s->sq, s->entries * sizeof(struct wd_desc));
	close(s->efd);
	close(s->kick_fd);
}

static int sim_attach(struct sim *s, struct wd_queue *q)
{
	memset(q, 0, sizeof(*q));
	return wd_attach_memory(q, s->db, s->hdr, 4096 + s->entries * sizeof(struct wd_cqe),
				s->sq, s->entries * sizeof(struct wd_desc), s->kick_fd, s->efd);
}

static void post(struct sim *s, const struct wd_desc *d)
{
	__u32 tail = s->hdr->cq_tail;
	struct wd_cqe *c = &s->cq[tail & (s->entries - 1)];

	c->tag = d->tag;
	c->status = d->opcode == WD_OP_CRC32C || d->opcode == WD_OP_NOP ? WD_STS_OK
									 : WD_STS_BAD_OPCODE;
	c->flags = 0;
	c->out_len = 0;
	c->result = d->opcode == WD_OP_CRC32C ?
		crc32c_sw(d->seed, (const void *)(uintptr_t)d->src, d->src_len) : 0;
	__atomic_store_n(&s->hdr->cq_tail, tail + 1, __ATOMIC_RELEASE);
}

static void signal_if_armed(struct sim *s)
{
	__u64 one = 1;

	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (__atomic_load_n(&s->db->irq_request, __ATOMIC_ACQUIRE)) {
		__atomic_store_n(&s->db->irq_request, 0, __ATOMIC_RELEASE);
		s->signals++;
		if (write(s->efd, &one, sizeof(one)) != sizeof(one))
			abort();
	}
}

/* Take up to max descriptors, complete them; returns how many. */
static int sim_step(struct sim *s, int max)
{
	__u32 tail = __atomic_load_n(&s->db->sq_tail, __ATOMIC_ACQUIRE);
	__u32 cq_head = __atomic_load_n(&s->db->cq_head, __ATOMIC_ACQUIRE);
	int n = 0;

	while (s->hdr->sq_head != tail && n < max &&
	       s->hdr->cq_tail - cq_head < s->entries) {
		struct wd_desc d = s->sq[s->hdr->sq_head & (s->entries - 1)];

		if (s->weak && s->hdr->sq_head + 1 != tail &&
		    s->hdr->cq_tail + 1 - cq_head < s->entries) {
			struct wd_desc d2 = s->sq[(s->hdr->sq_head + 1) & (s->entries - 1)];

			s->hdr->sq_head += 2;
			post(s, &d2);	/* the later one first */
			post(s, &d);
			n += 2;
			continue;
		}
		s->hdr->sq_head++;
		post(s, &d);
		n++;
	}
	if (n)
		signal_if_armed(s);
	return n;
}

static void *sim_thread(void *arg)
{
	struct sim *s = arg;

	while (!s->stop)
		if (!sim_step(s, 16))
			usleep(20);
	return NULL;
}

static void test_header_checked(void)
{
	struct sim s;
	struct wd_queue q;

	sim_init(&s, 8);
	s.hdr->version = 1;
	CHECK(sim_attach(&s, &q) == -EPROTO);
	CHECK(strstr(wd_errmsg(), "version 1"));
	s.hdr->version = WD_ABI_VERSION;
	s.hdr->entries = 6;
	CHECK(sim_attach(&s, &q) == -EPROTO);
	s.hdr->entries = 8;
	s.hdr->desc_size = 32;
	CHECK(sim_attach(&s, &q) == -EPROTO);
	s.hdr->desc_size = sizeof(struct wd_desc);
	CHECK(sim_attach(&s, &q) == 0);
	wd_release_queue(&q);
	CHECK(q.priv == NULL);
	sim_fini(&s);
}

static void test_full_empty_tags_wrap(void)
{
	struct wd_req r[8], extra = { .opcode = WD_OP_NOP }, *got;
	char data[64];
	struct sim s;
	struct wd_queue q;
	int i, round;

	memset(data, 'a', sizeof(data));
	sim_init(&s, 4);
	CHECK(sim_attach(&s, &q) == 0);
	CHECK(wd_recv(&q, (void **)&got) == -EAGAIN);
	for (round = 0; round < 5; round++) {	/* 20 requests through 4 slots: wraps */
		for (i = 0; i < 4; i++) {
			memset(&r[i], 0, sizeof(r[i]));
			r[i].opcode = WD_OP_CRC32C;
			r[i].src = data;
			r[i].src_len = (__u32)(i + round);
			r[i].seed = (__u32)round;
			CHECK(wd_send(&q, &r[i]) == 0);
		}
		CHECK(wd_send(&q, &extra) == -EBUSY);		/* full */
		CHECK(wd_recv(&q, (void **)&got) == -EAGAIN);	/* nothing done yet */
		CHECK(sim_step(&s, 100) == 4);
		for (i = 0; i < 4; i++) {
			CHECK(wd_recv(&q, (void **)&got) == 0);
			CHECK(got == &r[i]);
			CHECK(got->status == WD_STS_OK);
			CHECK(got->tag == (__u32)(round * 4 + i));
			CHECK(got->result == crc32c_sw((__u32)round, data, (size_t)(i + round)));
		}
		CHECK(wd_recv(&q, (void **)&got) == -EAGAIN);
		CHECK(s.db->cq_head == s.hdr->cq_tail);
	}
	CHECK(wd_in_flight(&q) == 0);
	wd_release_queue(&q);
	sim_fini(&s);
}

/* Completed requests not yet received hold places too: at most two rings' worth. */
static void test_done_list_bound(void)
{
	struct wd_req r[9], *got;
	struct sim s;
	struct wd_queue q;
	int i;

	sim_init(&s, 4);
	CHECK(sim_attach(&s, &q) == 0);
	for (i = 0; i < 9; i++)
		r[i] = (struct wd_req){ .opcode = WD_OP_NOP };
	for (i = 0; i < 4; i++)
		CHECK(wd_send(&q, &r[i]) == 0);
	CHECK(sim_step(&s, 100) == 4);
	for (i = 4; i < 8; i++)		/* the first four are reaped to the done list */
		CHECK(wd_send(&q, &r[i]) == 0);
	CHECK(sim_step(&s, 100) == 4);
	CHECK(wd_send(&q, &r[8]) == -EBUSY);	/* eight completed, none received */
	CHECK(wd_recv(&q, (void **)&got) == 0 && got == &r[0]);
	CHECK(wd_send(&q, &r[8]) == 0);
	CHECK(sim_step(&s, 100) == 1);
	for (i = 1; i < 9; i++)
		CHECK(wd_recv(&q, (void **)&got) == 0 && got == &r[i]);
	CHECK(wd_recv(&q, (void **)&got) == -EAGAIN);
	wd_release_queue(&q);
	sim_fini(&s);
}

static void test_crc_known_answer_and_chaining(void)
{
	struct sim s;
	struct wd_queue q;
	__u32 crc = 0, a = 0;
	__u16 st = 99;

	sim_init(&s, 8);
	CHECK(sim_attach(&s, &q) == 0);
	s.stop = 0;
	pthread_create(&s.thread, NULL, sim_thread, &s);
	CHECK(wd_do_crc32c(&q, "123456789", 9, 0, &crc, &st) == 0);
	CHECK(crc == 0xe3069283);
	CHECK(st == WD_STS_OK);
	CHECK(wd_do_crc32c(&q, "1234", 4, 0, &a, NULL) == 0);
	CHECK(wd_do_crc32c(&q, "56789", 5, a, &crc, NULL) == 0);
	CHECK(crc == 0xe3069283);
	CHECK(wd_crc32c_call(&q, "123456789", 9, 0) == 0xe3069283LL);
	CHECK(wd_crc32c_call(&q, "x", WD_MAX_LEN + 1ULL, 0) == -E2BIG);
	s.stop = 1;
	pthread_join(s.thread, NULL);
	wd_release_queue(&q);
	sim_fini(&s);
}

static void test_weak_order_and_slot_reuse(void)
{
	struct wd_req r[4], *got[4];
	struct sim s;
	struct wd_queue q;
	int i, n;

	sim_init(&s, 4);
	s.weak = 1;
	CHECK(sim_attach(&s, &q) == 0);
	for (i = 0; i < 4; i++) {
		memset(&r[i], 0, sizeof(r[i]));
		r[i].opcode = WD_OP_NOP;
		CHECK(wd_send(&q, &r[i]) == 0);
	}
	CHECK(sim_step(&s, 100) == 4);
	n = wd_recv_many(&q, got, 4);
	CHECK(n == 4);
	CHECK(got[0] == &r[1] && got[1] == &r[0] && got[2] == &r[3] && got[3] == &r[2]);
	/* a request still in flight keeps its slot even when the ring has room */
	s.weak = 0;
	CHECK(wd_send(&q, &r[0]) == 0);		/* tag 4, slot 0 */
	CHECK(wd_send(&q, &r[0]) == -EINVAL);	/* already in flight */
	wd_release_queue(&q);
	sim_fini(&s);
}

static void test_hostile_device(void)
{
	struct wd_req r = { .opcode = WD_OP_NOP }, *got;
	struct sim s;
	struct wd_queue q;

	sim_init(&s, 8);
	CHECK(sim_attach(&s, &q) == 0);
	/* a completion naming a tag never sent is ignored */
	CHECK(wd_send(&q, &r) == 0);
	s.cq[0].tag = 77;
	s.hdr->cq_tail = 1;
	CHECK(wd_recv(&q, (void **)&got) == -EAGAIN);
	CHECK(q.priv->spurious == 1);
	/* a cq_tail beyond what was submitted breaks the queue for good */
	s.hdr->cq_tail = 2;
	CHECK(wd_recv(&q, (void **)&got) == -EIO);
	CHECK(strstr(wd_errmsg(), "cq_tail 2"));
	CHECK(wd_send(&q, &r) == -EIO || wd_send(&q, &r) == -EINVAL);
	CHECK(wd_recv(&q, (void **)&got) == -EIO);
	wd_release_queue(&q);
	sim_fini(&s);
}

static void test_dead_and_kick(void)
{
	struct wd_req r = { .opcode = WD_OP_NOP }, r2 = { .opcode = WD_OP_NOP }, *got;
	struct sim s;
	struct wd_queue q;
	__u32 kicked = 0;

	sim_init(&s, 8);
	CHECK(sim_attach(&s, &q) == 0);
	s.hdr->status = WD_Q_ENGINE_IDLE;
	CHECK(wd_send(&q, &r) == 0);
	CHECK(pread(s.kick_fd, &kicked, 4, 0) == 4 && kicked == 1);
	CHECK(q.priv->kicks == 1);
	s.hdr->status = 0;
	CHECK(wd_send(&q, &r2) == 0);
	CHECK(q.priv->kicks == 1);	/* engine polling: no syscall */
	s.hdr->status = WD_Q_DEAD;
	CHECK(wd_send(&q, &(struct wd_req){ .opcode = WD_OP_NOP }) == -ENODEV);
	CHECK(wd_recv(&q, (void **)&got) == -ENODEV);
	CHECK(wd_recv_sync(&q, (void **)&got) == -ENODEV);
	CHECK(wd_is_dead(&q));
	wd_release_queue(&q);
	sim_fini(&s);
}

static void test_sleep_arm_disarm(void)
{
	struct wd_req r = { .opcode = WD_OP_NOP }, *got;
	struct sim s;
	struct wd_queue q;

	sim_init(&s, 8);
	CHECK(sim_attach(&s, &q) == 0);
	q.spin = 1;
	/* nothing in flight: sleeps, times out, leaves irq_request armed */
	CHECK(wd_recv_sync_timeout(&q, (void **)&got, 30) == -ETIMEDOUT);
	CHECK(s.db->irq_request == 1);
	/* completion already posted before the sync call: no sleep, disarmed */
	s.db->irq_request = 0;
	CHECK(wd_send(&q, &r) == 0);
	sim_step(&s, 1);
	CHECK(wd_recv_sync_timeout(&q, (void **)&got, 1000) == 0 && got == &r);
	CHECK(s.db->irq_request == 0);
	/* a stale count in the eventfd does not end a later wait early */
	{
		__u64 one = 1;

		CHECK(write(s.efd, &one, 8) == 8);
	}
	CHECK(wd_recv_sync_timeout(&q, (void **)&got, 30) == -ETIMEDOUT);
	/* woken by the device thread */
	s.stop = 0;
	pthread_create(&s.thread, NULL, sim_thread, &s);
	usleep(1000);
	CHECK(wd_send(&q, &r) == 0);
	CHECK(wd_recv_sync_timeout(&q, (void **)&got, 2000) == 0 && got == &r);
	s.stop = 1;
	pthread_join(s.thread, NULL);
	wd_release_queue(&q);
	sim_fini(&s);
}

/* The disarm step of the protocol, driven by hand. */
static void test_disarm_when_completion_races(void)
{
	struct wd_req r = { .opcode = WD_OP_NOP }, *got;
	struct sim s;
	struct wd_queue q;
	__u64 cnt;

	sim_init(&s, 8);
	CHECK(sim_attach(&s, &q) == 0);
	q.spin = 1;
	CHECK(wd_send(&q, &r) == 0);
	sim_step(&s, 1);	/* posted, not armed: no signal */
	CHECK(s.signals == 0);
	CHECK(read(s.efd, &cnt, 8) < 0);
	CHECK(wd_recv_sync_timeout(&q, (void **)&got, 1000) == 0);
	CHECK(s.db->irq_request == 0);	/* armed, re-checked, disarmed */
	wd_release_queue(&q);
	sim_fini(&s);
}

#define THREADS		4
#define PER_THREAD	3000

struct hammer {
	struct wd_queue *q;
	int id;
	int bad;
};

static void *hammer_thread(void *arg)
{
	struct hammer *h = arg;
	char buf[64];
	int i;

	for (i = 0; i < PER_THREAD; i++) {
		__u32 crc = 0;
		size_t len = (size_t)(i % 60) + 1;

		memset(buf, h->id * 31 + i, sizeof(buf));
		if (i % 3 == 2) {
			struct wd_req r[4];
			int k;

			for (k = 0; k < 4; k++)
				r[k] = (struct wd_req){ .opcode = WD_OP_CRC32C, .src = buf,
							.src_len = (__u32)(len - (size_t)(k < (int)len ? k : 0)) };
			if (wd_run_many(h->q, r, 4, 5000))
				h->bad++;
			for (k = 0; k < 4; k++)
				if (r[k].result != crc32c_sw(0, buf, r[k].src_len))
					h->bad++;
		} else if (wd_do_crc32c(h->q, buf, len, 0, &crc, NULL) ||
			   crc != crc32c_sw(0, buf, len)) {
			h->bad++;
		}
	}
	return NULL;
}

/*
 * The seed's pair beside them: wd_recv hands back whichever request
 * completed, so one thread does this (two would receive each other's).
 */
static void *seed_thread(void *arg)
{
	struct hammer *h = arg;
	int i;

	for (i = 0; i < PER_THREAD; i++) {
		struct wd_req r = { .opcode = WD_OP_NOP, .user = &r }, *got;

		if (wd_send_sync(h->q, &r))
			h->bad++;
		if (wd_recv_sync(h->q, (void **)&got) || got->status)
			h->bad++;
	}
	return NULL;
}

static void test_threads(void)
{
	struct hammer h[THREADS + 1];
	pthread_t t[THREADS + 1];
	struct sim s;
	struct wd_queue q;
	int i, bad = 0;

	sim_init(&s, 16);
	CHECK(sim_attach(&s, &q) == 0);
	q.spin = 64;
	pthread_create(&s.thread, NULL, sim_thread, &s);
	for (i = 0; i < THREADS + 1; i++) {
		h[i] = (struct hammer){ .q = &q, .id = i };
		pthread_create(&t[i], NULL, i < THREADS ? hammer_thread : seed_thread, &h[i]);
	}
	for (i = 0; i < THREADS + 1; i++) {
		pthread_join(t[i], NULL);
		bad += h[i].bad;
	}
	CHECK(bad == 0);
	CHECK(wd_in_flight(&q) == 0);
	s.stop = 1;
	pthread_join(s.thread, NULL);
	wd_release_queue(&q);
	sim_fini(&s);
}

static void test_bad_arguments(void)
{
	struct wd_req big = { .opcode = WD_OP_CRC32C, .src_len = WD_MAX_LEN + 1 }, *got;
	struct wd_queue q0 = { 0 };
	struct sim s;
	struct wd_queue q;

	CHECK(wd_request_queue(NULL, NULL) == -EINVAL);
	CHECK(wd_crc32c_call(&q0, "x", 1, 0) == -EBADF);	/* never opened */
	CHECK(wd_request_queue(&q0, &(struct wd_capa){ .alg = NULL }) == -EINVAL);
	sim_init(&s, 8);
	CHECK(sim_attach(&s, &q) == 0);
	CHECK(wd_send(&q, NULL) == -EINVAL);
	CHECK(wd_recv(&q, NULL) == -EINVAL);
	big.src = &big;
	CHECK(wd_send(&q, &big) == -E2BIG);
	CHECK(wd_recv(&q, (void **)&got) == -EAGAIN);	/* nothing was posted */
	CHECK(wd_mem_share(&q, &s, 16, 1) == -EINVAL);
	CHECK(wd_mem_share(&q, NULL, 16, 0) == -EINVAL);
	CHECK(wd_mem_share(&q, &s, 0, 0) == -EINVAL);
	wd_release_queue(&q);
	wd_release_queue(&q);		/* twice is fine */
	wd_release_queue(&q0);		/* never opened is fine */
	sim_fini(&s);
}

int main(void)
{
	test_header_checked();
	test_full_empty_tags_wrap();
	test_done_list_bound();
	test_crc_known_answer_and_chaining();
	test_weak_order_and_slot_reuse();
	test_hostile_device();
	test_dead_and_kick();
	test_sleep_arm_disarm();
	test_disarm_when_completion_races();
	test_threads();
	test_bad_arguments();
	CHECK_REPORT();
	return failures ? 1 : 0;
}
