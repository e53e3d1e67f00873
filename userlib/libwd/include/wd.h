/* SPDX-License-Identifier: GPL-2.0 */
/*
 * libwd: the WrapDrive user library in C.
 *
 * The seed's calls, with the seed's signatures:
 *
 *	struct wd_queue q = { 0 };
 *	struct wd_capa capa = { .alg = "crc32c" };
 *	struct wd_req req = { .opcode = WD_OP_CRC32C, .src = buf, .src_len = n }, *done;
 *
 *	wd_request_queue(&q, &capa);		// select, create the mdev, open, map
 *	wd_mem_share(&q, buf, size, 0);		// buf may now be named in requests
 *	wd_send(&q, &req);			// -EBUSY when the ring is full
 *	wd_recv_sync(&q, (void **)&done);	// spin, then sleep on the eventfd
 *	// done == &req, done->status == WD_STS_OK, done->result is the CRC
 *	wd_release_queue(&q);
 *
 * Errors are negative errnos: -EBUSY (ring full, wd_send), -EAGAIN (nothing
 * completed, wd_recv), -ENODEV (the queue died, or no device offers the
 * capability), -ENOSPC (every matching device is out of queues), -EFAULT
 * (a buffer not shared with the device), -E2BIG (a length over WD_MAX_LEN),
 * -EINVAL (bad argument), -ETIMEDOUT, -EIO (the device broke the ring
 * protocol), or what a system call returned.  wd_errmsg() says more about
 * the last error of the calling thread.
 *
 * Threads: every call on one struct wd_queue may be made from several
 * threads at once.  A queue has one mutex guarding its ring state (SQ tail,
 * CQ head, the table of requests in flight, the list of completed requests
 * not yet received), its shared-memory table and its staging buffers; it
 * is never held while spinning or sleeping.  At most one thread at a time
 * sleeps on the eventfd; the others wait on a condition variable that the
 * sleeper broadcasts when it wakes (so no wake-up is lost to a second
 * sleeper).  wd_request_queue and wd_release_queue must not race with
 * other calls on the same queue.
 *
 * A request (struct wd_req) belongs to the library from wd_send until
 * wd_recv hands it back: it must stay valid and untouched in between.
 * At most `entries` requests are in flight, and at most twice that in
 * flight or completed and not yet received: past that wd_send says -EBUSY
 * (and wd_send_sync waits) until wd_recv takes some.
 */
#ifndef WD_H
#define WD_H

#include <stddef.h>
#include <stdint.h>

#include "wrapdrive.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What a caller asks for: an algo_type string and WD_CAPA_* / WD_* flag bits. */
struct wd_capa {
	const char *alg;
	__u32 flags;
};

struct wd_queue_priv;

/*
 * One queue.  Zero it, optionally set sysfs_root, spin and uuid, then call
 * wd_request_queue().  The other fields are filled by the library and
 * are read-only for the caller.
 *
 * Provisioned queues: an administrator may create queues in advance (with
 * mdevctl, or by writing a UUID to a type's `create` file) and give users
 * their VFIO group nodes.  With uuid set, wd_request_queue opens that
 * queue (its algo_type must be capa->alg, its flags must cover
 * capa->flags).  Without, it first looks for a provisioned queue of a
 * matching type that the caller may open and nobody holds, in the ranking
 * order below, and creates a queue only when there is none.  A queue the
 * library did not create is never removed: wd_release_queue closes it and
 * leaves it for the next user (provisioned = 1: a queue named by uuid, or
 * found provisioned).
 */
struct wd_queue {
	/* in (optional) */
	const char *sysfs_root;	/* NULL: "/sys" */
	__u32 spin;		/* ring polls before a sync call sleeps; 0: adaptive, <= 100 us */
	const char *uuid;	/* NULL: select; else open this existing mdev */

	/* out */
	char name[40];		/* the mdev's UUID */
	char parent[64];	/* the parent device, e.g. "wd_dummy.0" */
	char mdev_type[64];	/* e.g. "wd_dummy-crc32c" */
	char alg[32];		/* the type's algo_type */
	__u32 type_flags;	/* capabilities/flags of the type */
	__u32 capa_flags;	/* hdr.capa_flags of the queue */
	__u32 entries;		/* ring length */
	__u32 max_streams;	/* zlib stream slots */
	int numa_zone;		/* -1 when unknown */
	int priority;
	int provisioned;	/* 1: an existing mdev, kept on release */
	int device_fd;
	int event_fd;
	struct wd_queue_priv *priv;
};

/*
 * A request and, once completed, its outcome.  src, dst and ctx are
 * process addresses of memory shared with the queue (wd_mem_share, or any
 * memory on a WD_CAPA_SHARE_ALL queue); a NULL address is fine with a
 * length of 0.  The chaining fields are the descriptor's (see
 * kernel/uapi/wrapdrive.h "Chaining"): flags (WD_DF_MORE / WD_DF_CONT),
 * seed (crc32c), ctx (sha256), stream / level / flush (zlib).
 */
struct wd_req {
	/* in */
	__u16 opcode;		/* WD_OP_* */
	__u16 flags;		/* WD_DF_* */
	__u32 src_len;
	__u32 dst_len;
	__u32 seed;		/* crc32c: a previous result, 0 to start */
	const void *src;
	void *dst;
	void *ctx;		/* sha256 chaining: struct wd_sha256_ctx */
	__u16 stream;		/* zlib: stream slot */
	__u8 level;		/* deflate: WD_LEVEL_* or 1..9 */
	__u8 flush;		/* deflate with WD_DF_MORE: WD_FLUSH_* */
	/* out: valid once wd_recv/wd_recv_sync returned the request */
	__u16 status;		/* WD_STS_* */
	__u16 cqe_flags;	/* WD_CF_* */
	__u32 out_len;		/* bytes written to dst */
	__u32 result;		/* crc32c: the CRC; zlib: src bytes used */
	/* the caller's */
	void *user;
	/* the library's */
	__u32 tag;
	__u32 state;
};

/* The seed's calls. */
int wd_request_queue(struct wd_queue *q, struct wd_capa *capa);
void wd_release_queue(struct wd_queue *q);
int wd_send(struct wd_queue *q, void *req);
int wd_recv(struct wd_queue *q, void **req);
int wd_send_sync(struct wd_queue *q, void *req);
int wd_recv_sync(struct wd_queue *q, void **req);
int wd_mem_share(struct wd_queue *q, const void *addr, size_t size, int flags);
void wd_mem_unshare(struct wd_queue *q, const void *addr, size_t size);

/* The last error of the calling thread, in words. */
const char *wd_errmsg(void);

/*
 * Beyond the seed.
 *
 * wd_send_many posts up to n requests with one doorbell store and returns
 * how many it posted (-EBUSY if none fit).  wd_recv_many takes up to n
 * completed requests.  The _timeout forms of the sync calls give up after
 * timeout_ms milliseconds (-1: never) with -ETIMEDOUT.
 * wd_mem_unshare_checked is wd_mem_unshare that says -ENOENT when the
 * range was not shared as a whole.
 */
int wd_send_many(struct wd_queue *q, struct wd_req **reqs, int n);
int wd_recv_many(struct wd_queue *q, struct wd_req **reqs, int n);
int wd_send_sync_timeout(struct wd_queue *q, void *req, int timeout_ms);
int wd_recv_sync_timeout(struct wd_queue *q, void **req, int timeout_ms);
int wd_mem_unshare_checked(struct wd_queue *q, const void *addr, size_t size);
/* The device address of [addr, addr + len) (0 with -EFAULT if not shared). */
__u64 wd_dev_addr(struct wd_queue *q, const void *addr, size_t len);
/* 1 when [addr, addr + len) is shared with the queue's device. */
int wd_is_shared(struct wd_queue *q, const void *addr, size_t len);
/* Requests submitted and not yet received; 1 if the queue is dead. */
int wd_in_flight(struct wd_queue *q);
int wd_is_dead(struct wd_queue *q);
/* Counters, for tuning: kicks (pwrite), sleeps on the eventfd, spins, ignored CQEs. */
struct wd_stats {
	unsigned long kicks, sleeps, spins, spurious;
};
void wd_queue_stats(struct wd_queue *q, struct wd_stats *st);
/*
 * For event loops (epoll, asyncio) that wait on q->event_fd themselves:
 * drain it, arm irq_request and re-check.  1: nothing has arrived, wait
 * for event_fd to be readable, then call wd_recv; 0: something is there
 * already (disarmed), call wd_recv now.
 */
int wd_arm_wait(struct wd_queue *q);

/*
 * Run requests to completion: submit, spin briefly, sleep if needed, and
 * reap; other threads' requests completed on the way stay theirs.
 * wd_run_many returns 0 when every request completed (check each one's
 * status), or a negative errno (nothing left in flight then).
 */
int wd_run(struct wd_queue *q, struct wd_req *req, int timeout_ms);
int wd_run_many(struct wd_queue *q, struct wd_req *reqs, int n, int timeout_ms);
/*
 * wd_run in two halves, so a caller can prepare the next request while the
 * device works on this one: wd_run_start posts req (waiting while the ring
 * is full), wd_run_wait waits for that request and nothing else.  Every
 * request started must be waited for before it is reused or freed.
 */
int wd_run_start(struct wd_queue *q, struct wd_req *req, int timeout_ms);
int wd_run_wait(struct wd_queue *q, struct wd_req *req, int timeout_ms);

/*
 * One-shot operations on any memory: input that is not shared with the
 * device is copied to a staging buffer of the queue, input that is shared
 * is used in place; output likewise.  They return 0 or a negative errno
 * (-EBADF: the queue is not open); a device status other than WD_STS_OK
 * comes back as the positive status in *status (when status is not NULL)
 * and -EIO.
 */
int wd_do_crc32c(struct wd_queue *q, const void *src, size_t len, __u32 seed,
		 __u32 *crc, __u16 *status);
int wd_do_sha256(struct wd_queue *q, const void *src, size_t len,
		 __u8 digest[WD_SHA256_DIGEST_LEN], __u16 *status);
/* opcode WD_OP_MEMCPY, WD_OP_DEFLATE or WD_OP_INFLATE; *out_len in/out. */
int wd_do_xfer(struct wd_queue *q, __u16 opcode, const void *src, size_t len,
	       void *dst, size_t *out_len, __u16 *status);
/*
 * The same for bindings that want one call and one return value: the CRC
 * (0..2^32-1), or a negative errno (-EBADF: the queue is not open); on
 * -EIO, wd_last_status() is the device's status.  wd_do_sha256_into
 * returns 0 or a negative errno likewise.
 */
long long wd_crc32c_call(struct wd_queue *q, const char *src, size_t len, __u32 seed);
int wd_sha256_call(struct wd_queue *q, const char *src, size_t len, char *digest);
/* The device status of the calling thread's last failed request. */
int wd_last_status(void);

/*
 * Batches: n pieces laid end to end in src, piece i is lens[i] bytes.
 * wd_do_many: any opcode; piece i writes to dst + i * dst_stride (dst_stride
 * bytes of room; dst unused when dst_stride is 0); results, out_lens and
 * statuses (each may be NULL) get each piece's outcome.
 * crc32c: crcs[i]; sha256: digests + 32 * i.  statuses[i] (may be NULL)
 * gets each piece's status; the call returns -EIO if any is not OK.
 */
int wd_do_many(struct wd_queue *q, __u16 opcode, const void *src, const __u32 *lens, int n,
	       void *dst, __u32 dst_stride, __u32 *results, __u32 *out_lens, __u16 *statuses);
int wd_do_crc32c_many(struct wd_queue *q, const void *src, const __u32 *lens,
		      int n, __u32 *crcs, __u16 *statuses);
int wd_do_sha256_many(struct wd_queue *q, const void *src, const __u32 *lens,
		      int n, __u8 *digests, __u16 *statuses);

/*
 * Streams: data of any size, in pieces of any size (kernel/uapi/wrapdrive.h,
 * "Chaining").  The library cuts what it is given into device requests of
 * WD_STREAM_PIECE bytes, copied through two staging buffers of the queue so
 * the device works on one piece while the caller fills the next; the
 * caller's buffers are free again when a call returns.
 *
 *	struct wd_stream s = { 0 };
 *	__u8 digest[WD_SHA256_DIGEST_LEN];
 *
 *	wd_sha256_init(&q, &s);			// q: a "sha256" queue
 *	wd_sha256_update(&s, buf, n);		// as often as needed, any n
 *	wd_sha256_final(&s, digest);		// the digest; s is released
 *
 *	__u32 crc = 0;				// q: a "crc32c" queue
 *	wd_crc32c_update(&q, &crc, buf, n);	// crc(a + b) = crc(b) from crc(a)
 *
 *	wd_deflate_init(&q, &s, 6);		// q: a "zlib" queue
 *	wd_stream_write(&s, buf, n, WD_FLUSH_NONE);
 *	wd_stream_write(&s, NULL, 0, WD_STREAM_FINISH);
 *	n = wd_stream_read(&s, out, room);	// the zlib stream, in parts
 *	wd_stream_release(&s);
 *
 * sha256 keeps its state (struct wd_sha256_ctx) in memory shared with the
 * device, so a stream can be copied (wd_stream_copy) and a digest taken
 * without ending it (wd_sha256_digest), as hashlib does.  A zlib stream's
 * state lives in the driver, in one of the queue's max_streams slots,
 * which the stream holds until it ends or is released: a queue runs at
 * most max_streams zlib streams at once (wd_*_init says -EBUSY past that).
 *
 * Deflate input is gathered until a piece is full or a flush asks for
 * output: wd_stream_write with WD_FLUSH_SYNC or WD_FLUSH_FULL makes
 * everything written so far readable (zlib's Z_SYNC_FLUSH / Z_FULL_FLUSH),
 * WD_STREAM_FINISH ends the stream (Z_FINISH).  Inflate runs everything
 * written before wd_stream_write returns; when the zlib stream ends, eof is
 * set, total_in counts the stream's bytes and what followed it is left
 * unread (wd_stream_write's input beyond total_in).  The output waits in
 * the stream until wd_stream_read takes it; wd_stream_pending says how
 * much there is.
 *
 * A stream is used by one thread at a time.  Every call returns 0 (or a
 * count) or a negative errno; a device status other than WD_STS_OK is
 * -EIO with the status in wd_last_status().  A failed call ends the
 * stream: later calls return the same error until wd_stream_release.
 */
#define WD_STREAM_PIECE		(2U << 20)	/* bytes per device request */
#define WD_STREAM_FINISH	16		/* wd_stream_write: end the zlib stream */

struct wd_stream_priv;

struct wd_stream {
	/* out: read-only for the caller */
	struct wd_queue *q;
	__u16 opcode;		/* WD_OP_SHA256, WD_OP_DEFLATE or WD_OP_INFLATE */
	__u16 slot;		/* zlib: the stream slot it holds */
	int eof;		/* inflate: the zlib stream ended; deflate: finished */
	__u64 total_in;		/* bytes of input used */
	__u64 total_out;	/* bytes of output produced */
	struct wd_stream_priv *priv;
};

int wd_sha256_init(struct wd_queue *q, struct wd_stream *s);
int wd_sha256_update(struct wd_stream *s, const void *data, size_t len);
/* The digest of everything so far; the stream goes on. */
int wd_sha256_digest(struct wd_stream *s, __u8 digest[WD_SHA256_DIGEST_LEN]);
/* The digest, then wd_stream_release. */
int wd_sha256_final(struct wd_stream *s, __u8 digest[WD_SHA256_DIGEST_LEN]);
/*
 * wd_sha256_update without the copy: wd_sha256_space gives the free part
 * of the staging buffer being filled (*room > 0 bytes at *buf), the caller
 * writes data there (read(2) straight into it, say) and wd_sha256_filled
 * says how much, which hashes it after what came before.  Nothing else may
 * be called on the stream in between.
 */
int wd_sha256_space(struct wd_stream *s, void **buf, size_t *room);
int wd_sha256_filled(struct wd_stream *s, size_t n);

/* *crc = CRC-32C of data, continuing from *crc (0 to start), any len. */
int wd_crc32c_update(struct wd_queue *q, __u32 *crc, const void *data, size_t len);
/* CRC-32C of A + B from crc1 = crc(A), crc2 = crc(B) and len2 = |B| (no device). */
__u32 wd_crc32c_combine(__u32 crc1, __u32 crc2, __u64 len2);

/* level: WD_LEVEL_DEFAULT, 1..9 or WD_LEVEL_STORE. */
int wd_deflate_init(struct wd_queue *q, struct wd_stream *s, int level);
int wd_inflate_init(struct wd_queue *q, struct wd_stream *s);
/* flush: WD_FLUSH_NONE, WD_FLUSH_SYNC, WD_FLUSH_FULL or WD_STREAM_FINISH. */
int wd_stream_write(struct wd_stream *s, const void *in, size_t len, int flush);
size_t wd_stream_pending(const struct wd_stream *s);
/* Up to room bytes of output into out: how many. */
size_t wd_stream_read(struct wd_stream *s, void *out, size_t room);

/* A second sha256 stream with from's state, on the same queue (-EOPNOTSUPP for zlib). */
int wd_stream_copy(struct wd_stream *to, struct wd_stream *from);
/* Wait for the pieces in flight (before fork: a child can then wd_stream_move). */
int wd_stream_sync(struct wd_stream *s);
/*
 * A sha256 stream inherited across fork (synced before it), moved to the
 * child's own queue q: its state and gathered input are copied, nothing of
 * the parent's queue is touched.  With q NULL the stream is dropped the
 * same way (any stream: a zlib stream cannot move).
 */
int wd_stream_move(struct wd_stream *s, struct wd_queue *q);
/* Free the stream's buffers and its slot (the zlib stream is dropped). Idempotent. */
void wd_stream_release(struct wd_stream *s);

/*
 * Device selection, for tools and tests (wd_request_queue uses it).
 * Every function takes the sysfs root ("/sys" when NULL).
 */
struct wd_sel_cand {
	char parent[64];
	char mdev_type[64];
	char type_path[512];
	char alg[32];
	__u32 flags;
	int available;
	int numa_zone;		/* -1 when unknown */
	int priority;
	int distance;
};

/* Hooks the tests replace; NULL members (or a NULL pointer) mean the real thing. */
struct wd_sel_hooks {
	int (*create)(const char *create_path, const char *uuid, void *arg); /* 0 / -errno */
	int (*alive)(int pid, void *arg);		/* 1 if the process lives */
	int (*busy)(int group, void *arg);		/* 1 if the VFIO group is open */
	int (*open_group)(int group, void *arg);	/* an fd, or -errno */
	void *arg;
};

/* The calling thread's NUMA node (-1 when unknown). */
int wd_sel_node(const char *root);
/* Matching types, best first: how many (at most max written), or -errno. */
int wd_sel_rank(const char *root, const struct wd_capa *capa, int node,
		struct wd_sel_cand *out, int max);
/* Create an mdev on the best type with room; *cand and uuid[37] filled. */
int wd_sel_create(const char *root, const struct wd_capa *capa, int node,
		  const struct wd_sel_hooks *hooks, struct wd_sel_cand *cand,
		  char *uuid);
/* Remove our mdevs whose creator died and whose group nobody holds. */
int wd_sel_reclaim(const char *root, const struct wd_sel_hooks *hooks,
		   char *removed, size_t removed_len);
/* A UUID of this library's namespace for pid (57447276-...-<pid>). */
void wd_sel_new_uuid(int pid, char *uuid);
/* 1 when uuid is in this library's namespace (a queue it created). */
int wd_sel_is_ours(const char *uuid);
/*
 * The existing mdev uuid as a candidate (its type's attributes); -ENOENT
 * when there is no such mdev, -EINVAL when it is not a WrapDrive queue of
 * capa (capa may be NULL: any WrapDrive queue).
 */
int wd_sel_lookup(const char *root, const struct wd_capa *capa, const char *uuid,
		  struct wd_sel_cand *cand);
/*
 * A provisioned queue for capa: an mdev of a matching type, not of this
 * library's namespace, whose VFIO group the caller may open and nobody
 * holds, in ranking order.  Returns the open group fd (>= 0) with *cand
 * and uuid[37] filled, -ENOENT when there is none, or another -errno.
 */
int wd_sel_provisioned(const char *root, const struct wd_capa *capa, int node,
		       const struct wd_sel_hooks *hooks, struct wd_sel_cand *cand,
		       char *uuid);

/*
 * Host tests only: drive the ring over plain memory laid out as the three
 * regions (no VFIO).  kick_fd receives the kicks (pwrite of 4 bytes at
 * offset 0), event_fd is the eventfd the test signals.  Buffers are
 * process addresses (as on a WD_CAPA_SHARE_ALL queue).
 */
int wd_attach_memory(struct wd_queue *q, void *doorbell, const void *cq_region,
		     size_t cq_size, void *sq_region, size_t sq_size,
		     int kick_fd, int event_fd);
void wd_detach_memory(struct wd_queue *q);

#ifdef __cplusplus
}
#endif

#endif /* WD_H */
