/* SPDX-License-Identifier: GPL-2.0 */
/*
 * wd_dummy internals, shared by its three files:
 *   dummy_accel.c   the driver: parameters, devices, WrapDrive ops, debugfs
 *   dummy_engine.c  the engine: which queue runs when, and on which thread
 *   dummy_algs.c    the algorithms: one descriptor in, one completion out
 *
 * A hardware driver keeps the first file's shape; its engine is the
 * hardware, and its algorithms are the hardware's business.
 */
#ifndef _WD_DUMMY_H
#define _WD_DUMMY_H

#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

#include "wrapdrive.h"

#define WD_DUMMY_NAME		"wd_dummy"
#define WD_DUMMY_CHUNK		(64 * 1024)	/* bytes moved per step */
#define WD_DUMMY_BATCH		16	/* descriptors fetched at once */

/* Module parameters (dummy_accel.c) the engine and algorithms read. */
extern bool wd_dummy_dma_api;
extern unsigned int wd_dummy_poll_idle_us;
extern unsigned int wd_dummy_poll_max_us;
extern unsigned int wd_dummy_stall_us;
extern unsigned int wd_dummy_max_engines;
extern unsigned int wd_dummy_stream_mem_kb;

enum wd_dummy_algo {
	WD_ALGO_MEMCPY,
	WD_ALGO_CRC32C,
	WD_ALGO_SHA256,
	WD_ALGO_ZLIB,
};

struct wd_dummy_zstream;

/*
 * struct wd_dummy_scratch - working memory of one executor (an engine
 * thread or a selfbench run), owned by that one thread: no lock.
 * @in: input bounce buffer, WD_DUMMY_CHUNK bytes
 * @out: output bounce buffer for zlib, allocated on first use
 * @zs: deflate and inflate state for one-shot zlib requests, on first use
 */
struct wd_dummy_scratch {
	u8 *in;
	u8 *out;
	struct wd_dummy_zstream *zs[2];
};

/*
 * struct wd_dummy_dev - one device: its engine threads and their poll list.
 *
 * Locking: @lock (a spinlock: the kick path takes it) protects @poll_list,
 * @engines, @sleepers, @retired, @nr_engines, @stopping, every engine's
 * @cur and @since, and the scheduling fields of every queue (state, node,
 * engine, kicked, closing) as well as the WrapDrive queue's priv pointer.
 * It is never held while a request runs.  WrapDrive calls queue_open,
 * queue_close and kick with its queue lock held, which comes before @lock;
 * the engine threads never take the queue lock (no WrapDrive helper they
 * call does), so queue_close may wait for them.  @release_wq: queue_close
 * waits there for the engine to let go of the queue.  @watchdog runs in a
 * kworker; it is cancelled (sync) before the engines are stopped.
 * @nr_streams and @stream_bytes are atomics: zlib streams of all queues.
 * @bench_lock serialises selfbench runs and guards @bench_result.
 */
struct wd_dummy_dev {
	struct platform_device *pdev;
	struct wd_accel *accel;
	unsigned int idx;
	int node;			/* NUMA node, or NUMA_NO_NODE */
	int cpu;			/* engine CPU, or -1: not pinned */
	spinlock_t lock;		/* see above */
	struct list_head poll_list;	/* queues with work (NAPI's list) */
	struct list_head engines;	/* live engine threads */
	struct list_head sleepers;	/* engines with nothing to do */
	struct list_head retired;	/* engines that exited, to reap */
	unsigned int nr_engines;
	unsigned int next_engine_id;
	bool stopping;
	wait_queue_head_t release_wq;
	struct delayed_work watchdog;
	atomic_t nr_streams;
	atomic_long_t stream_bytes;
	struct mutex bench_lock;	/* one selfbench at a time */
	char bench_result[96];		/* under @bench_lock */
};

/* Where a queue stands with the engine; see dummy_engine.c. */
enum wd_dummy_qstate {
	WD_DQ_IDLE,	/* not polled; the ring says WD_Q_ENGINE_IDLE */
	WD_DQ_LISTED,	/* on the device's poll list */
	WD_DQ_RUNNING,	/* taken by one engine thread */
};

/*
 * struct wd_dummy_queue - an open queue as the driver sees it.
 *
 * Locking: @state, @node, @engine, @kicked and @closing are under d->lock.
 * Everything below them belongs to the engine thread that holds the queue
 * (state RUNNING), and to queue_open/queue_close, which run when no
 * engine holds it: only one thread at a time ever touches them, so they
 * need no lock.  That includes the zlib streams.
 */
struct wd_dummy_queue {
	struct wd_dummy_dev *d;
	struct wd_queue *q;
	enum wd_dummy_algo algo;
	bool weak;
	/* under d->lock */
	enum wd_dummy_qstate state;
	struct list_head node;
	struct wd_dummy_engine *engine;
	bool kicked;
	bool closing;
	/* owned by the engine holding the queue */
	bool ring_idle;			/* WD_Q_ENGINE_IDLE is set */
	u64 last_work_ns;
	u64 idle_since_ns;
	u64 window_ns;			/* adaptive polling window */
	u32 max_streams;
	struct wd_dummy_zstream **streams;	/* [max_streams] */
	struct page *db_page;		/* own_doorbell: the queue's doorbell */
};

/* dummy_engine.c */
int wd_dummy_engine_init(struct wd_dummy_dev *d);
void wd_dummy_engine_fini(struct wd_dummy_dev *d);
void wd_dummy_engine_add_queue(struct wd_dummy_dev *d,
			       struct wd_dummy_queue *dq);
void wd_dummy_engine_del_queue(struct wd_dummy_dev *d,
			       struct wd_dummy_queue *dq);
void wd_dummy_engine_kick(struct wd_dummy_dev *d, struct wd_queue *q);

/* dummy_algs.c */
int wd_dummy_scratch_alloc(struct wd_dummy_scratch *s, int node);
void wd_dummy_scratch_free(struct wd_dummy_scratch *s);
void wd_dummy_exec(struct wd_dummy_scratch *s, struct wd_dummy_queue *dq,
		   const struct wd_desc *desc, struct wd_cqe *cqe);
void wd_dummy_weak_order(struct wd_desc *batch, u32 n, struct wd_desc *tmp);
void wd_dummy_streams_free(struct wd_dummy_queue *dq);
int wd_dummy_run_kernel(struct wd_dummy_scratch *s, u16 opcode,
			const u8 *src, u32 src_len, u8 *dst, u32 dst_len,
			u32 *out_len);

#endif /* _WD_DUMMY_H */
