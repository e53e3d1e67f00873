/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * WrapDrive user-space ABI: what a queue (a vfio-mdev device) looks like
 * once user space has opened it through VFIO.
 *
 * A queue exposes two VFIO regions and one VFIO interrupt:
 *
 *   WD_REGION_DOORBELL  one page, written by user space only (the "MMIO"
 *                       registers of the queue: its own page, never shared
 *                       with another queue), struct wd_doorbell.
 *   WD_REGION_RING      written by the device (header) and by user space
 *                       (submission entries): struct wd_ring_hdr in the
 *                       first page, then the submission queue (SQ) of
 *                       struct wd_desc and the completion queue (CQ) of
 *                       struct wd_cqe, each `entries` long.
 *   WD_IRQ_QUEUE_STATE  VFIO irq index 0: the queue's state changed
 *                       (completions were posted, or the queue died).
 *
 * Indices (sq_tail, sq_head, cq_tail, cq_head) are free-running 32-bit
 * counters; the slot is (index & (entries - 1)); entries is a power of two.
 *
 * Submitting (no syscall on the fast path):
 *   1. in-flight = sq_tail - cq_head; the ring is full when it equals
 *      entries (user space keeps this bound, so the CQ never overflows).
 *   2. fill SQ[sq_tail & mask], then store sq_tail + n to doorbell.sq_tail.
 *   3. full memory barrier, then read ring.status: if WD_Q_ENGINE_IDLE is
 *      set, the engine stopped polling; pwrite() 4 bytes (the new tail) at
 *      offset 0 of WD_REGION_DOORBELL to wake it (the slow-path kick).
 *
 * Completing:
 *   while cq_head != ring.cq_tail: read CQ[cq_head & mask], then store
 *   cq_head + 1 to doorbell.cq_head.  Each completion names its request by
 *   tag; a WD_WEAK_ORDER queue may complete requests out of order, any other
 *   queue completes them in submission order.
 *
 * Sleeping (wd_recv_sync): store 1 to doorbell.irq_request, full barrier,
 * re-check cq_tail, then wait on the eventfd given with VFIO_DEVICE_SET_IRQS.
 * The device clears irq_request (sets it back to 0) each time it signals, so
 * every wait really waits and every wake-up is consumed exactly once.
 * VFIO_IRQ_SET_ACTION_MASK / UNMASK on index 0 suppress / allow signalling.
 *
 * Errors: every request completes with a status; WD_STS_* below.  A bad
 * request never stops the queue.  When the device goes away the queue is
 * dead: WD_Q_DEAD is set in ring.status, the eventfd is signalled, the
 * mappings are zapped (access faults with SIGBUS), and ioctls, read and
 * write fail with -ENODEV; close() still works.
 *
 * VFIO_DEVICE_RESET stops the queue, drops every request not yet
 * completed (no completion is posted for them: the caller of the reset
 * owns their fate), sets all four indices back to 0 and starts it again.
 * wd_dummy finishes each request it has taken before the reset returns,
 * so it never posts WD_STS_ABORTED; the code is for drivers that abort.
 *
 * fork(): the regions are mapped VM_DONTCOPY, so a child has no mapping of
 * its parent's queue.  A child holding an inherited device fd can only
 * close it: mmap, read, write and ioctls from another address space than
 * the one that opened the queue fail with -EPERM.  A queue belongs to the
 * address space (mm) that opened it, not to a task.
 */
#ifndef _UAPI_WRAPDRIVE_H
#define _UAPI_WRAPDRIVE_H

#include <linux/types.h>

#define WD_ABI_VERSION		1
#define WD_RING_MAGIC		0x51524457	/* "WDRQ" little endian */

/* Capability flag bits: mdev type attribute capabilities/flags (hex). */
#define WD_CAPA_SHARE_ALL	(1U << 0) /* buffers are process VAs (SVM) */
#define WD_WEAK_ORDER		(1U << 1) /* completions may be reordered */

/* VFIO region and irq indices of a queue. */
#define WD_REGION_DOORBELL	0
#define WD_REGION_RING		1
#define WD_NUM_REGIONS		2
#define WD_IRQ_QUEUE_STATE	0
#define WD_NUM_IRQS		1

/* Opcodes: each algo_type accepts its own. */
#define WD_OP_NOP		0	/* any algo_type: completes, no work */
#define WD_OP_MEMCPY		1	/* "memcpy": dst <- src */
#define WD_OP_CRC32C		2	/* "crc32c": cqe.result = crc32c(src) */
#define WD_OP_SHA256		3	/* "sha256": dst <- 32-byte digest */
#define WD_OP_DEFLATE		4	/* "zlib": dst <- zlib stream (RFC 1950) */
#define WD_OP_INFLATE		5	/* "zlib": dst <- inflated zlib stream */

/* Completion status (struct wd_cqe.status). */
#define WD_STS_OK		0
#define WD_STS_BAD_OPCODE	1	/* unknown or not this queue's algo */
#define WD_STS_BAD_ADDR		2	/* buffer not (fully) shared/mapped */
#define WD_STS_BAD_LEN		3	/* length over WD_MAX_LEN or wraps */
#define WD_STS_NOSPC		4	/* output buffer too small */
#define WD_STS_BAD_DATA		5	/* corrupt input (e.g. inflate) */
#define WD_STS_BAD_FLAGS	6	/* reserved descriptor bits set */
#define WD_STS_ABORTED		7	/* a driver cut the request short */

#define WD_MAX_LEN		(16U << 20)	/* max src_len / dst_len */
#define WD_SHA256_DIGEST_LEN	32

/* A submission descriptor: 32 bytes. */
struct wd_desc {
	__u32 tag;		/* echoed in wd_cqe.tag */
	__u16 opcode;		/* WD_OP_* */
	__u16 flags;		/* reserved, must be 0 */
	__u64 src;		/* IOVA, or VA on a WD_CAPA_SHARE_ALL queue */
	__u64 dst;		/* same; unused (0) for crc32c and nop */
	__u32 src_len;
	__u32 dst_len;
};

/* A completion: 16 bytes. */
struct wd_cqe {
	__u32 tag;		/* the request's wd_desc.tag */
	__u32 status;		/* WD_STS_* */
	__u32 out_len;		/* bytes written to dst */
	__u32 result;		/* crc32c value; 0 otherwise */
};

/* WD_REGION_DOORBELL: one page, user space writes, the device reads. */
struct wd_doorbell {
	__u32 sq_tail;		/* 0x00: producer index; a store is the kick */
	__u32 __pad0[15];
	__u32 cq_head;		/* 0x40: consumer index of the CQ */
	__u32 __pad1[15];
	__u32 irq_request;	/* 0x80: 1 = signal the eventfd once */
	__u32 __pad2[15];
};

/* ring.status bits, set by the device. */
#define WD_Q_ENGINE_IDLE	(1U << 0) /* engine sleeps: kick by pwrite */
#define WD_Q_DEAD		(1U << 1) /* device gone; mappings zapped next */

/* First page of WD_REGION_RING: the device writes, user space reads. */
struct wd_ring_hdr {
	__u32 magic;		/* 0x00: WD_RING_MAGIC */
	__u32 version;		/* WD_ABI_VERSION */
	__u32 entries;		/* SQ and CQ length, a power of two */
	__u32 desc_size;	/* sizeof(struct wd_desc) */
	__u32 cqe_size;		/* sizeof(struct wd_cqe) */
	__u32 sq_off;		/* byte offset of the SQ in the region */
	__u32 cq_off;		/* byte offset of the CQ in the region */
	__u32 capa_flags;	/* the queue's capability flags */
	__u32 __pad0[8];
	__u32 sq_head;		/* 0x40: descriptors consumed by the device */
	__u32 __pad1[15];
	__u32 cq_tail;		/* 0x80: completions posted by the device */
	__u32 __pad2[15];
	__u32 status;		/* 0xc0: WD_Q_* bits */
	__u32 __pad3[15];
};

#ifdef __KERNEL__
#include <linux/build_bug.h>
static_assert(sizeof(struct wd_desc) == 32);
static_assert(sizeof(struct wd_cqe) == 16);
static_assert(sizeof(struct wd_doorbell) == 192);
static_assert(sizeof(struct wd_ring_hdr) == 256);
static_assert(offsetof(struct wd_desc, src) == 8);
static_assert(offsetof(struct wd_desc, src_len) == 24);
static_assert(offsetof(struct wd_doorbell, cq_head) == 0x40);
static_assert(offsetof(struct wd_doorbell, irq_request) == 0x80);
static_assert(offsetof(struct wd_ring_hdr, sq_head) == 0x40);
static_assert(offsetof(struct wd_ring_hdr, cq_tail) == 0x80);
static_assert(offsetof(struct wd_ring_hdr, status) == 0xc0);
#endif

#endif /* _UAPI_WRAPDRIVE_H */
