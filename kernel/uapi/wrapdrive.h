/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * WrapDrive user-space ABI, version 2: what a queue (a vfio-mdev device)
 * looks like once user space has opened it through VFIO.  This header is
 * the only definition of the ABI: the kernel, the C library and the Python
 * binding are all compiled against it.
 *
 * Opening
 *   A queue is an mdev; user space opens it the VFIO way: a container
 *   (/dev/vfio/vfio), VFIO_SET_IOMMU(VFIO_TYPE1v2_IOMMU), the mdev's group,
 *   VFIO_GROUP_GET_DEVICE_FD(uuid).  A WD_CAPA_SHARE_ALL queue needs the
 *   container and VFIO_SET_IOMMU too (VFIO hands out no device fd without
 *   them), it just never maps DMA.  The queue belongs to the address space
 *   (mm) of the process that opened the device fd: see "fork and exit".
 *
 * Regions (VFIO_DEVICE_GET_REGION_INFO gives each one's offset and size;
 * map them with mmap(MAP_SHARED) at that offset, or use pread/pwrite)
 *
 *   WD_REGION_DOORBELL  read-write, one page: struct wd_doorbell.  User
 *                       space writes it; the device only reads it (and
 *                       zeroes it at open and reset).  Reading it back
 *                       returns what was last written.
 *   WD_REGION_CQ        read-only: struct wd_ring_hdr in the first page,
 *                       the completion queue (CQ, struct wd_cqe) at
 *                       hdr.cq_off.  Written by the device only.  mmap
 *                       with PROT_WRITE fails with EACCES, pwrite with
 *                       EINVAL, and mprotect cannot make it writable.
 *   WD_REGION_SQ        read-write: the submission queue (SQ, struct
 *                       wd_desc) from offset 0.  Written by user space;
 *                       the device copies each descriptor once, when it
 *                       takes it, and never writes this region.
 *   WD_IRQ_QUEUE_STATE  VFIO irq index 0, an eventfd: the queue's state
 *                       changed (completions were posted on request, the
 *                       queue died, or its release was requested).
 *
 *   A version-1 user (one region holding header, SQ and CQ, mapped
 *   writable) fails at its mmap of region 1 with EACCES.  Every user must
 *   check hdr.magic and hdr.version before anything else.
 *
 * Indices
 *   sq_tail, sq_head, cq_tail and cq_head are free-running 32-bit counters;
 *   a slot is (index & (entries - 1)); entries is a power of two.  All four
 *   are 0 when the device fd is opened (every open, reopen included) and
 *   after VFIO_DEVICE_RESET.
 *
 * Submitting (no syscall on the fast path)
 *   1. in flight = sq_tail - cq_head.  The ring is full when it equals
 *      entries; user space must keep this bound (the device never takes a
 *      descriptor it could not complete into a free CQ slot, so a user that
 *      ignores the bound only stalls itself).
 *   2. Fill SQ[sq_tail & mask] (and the following slots), then store the
 *      new sq_tail to doorbell.sq_tail (a release store: slots first).
 *   3. Full memory barrier, then read hdr.status.  If WD_Q_ENGINE_IDLE is
 *      set the device stopped polling this queue: kick it by writing the
 *      new tail with pwrite() of 4 bytes at offset 0 of WD_REGION_DOORBELL
 *      (the region's offset from GET_REGION_INFO, plus 0).  A kick is a
 *      write to doorbell.sq_tail: the value written becomes sq_tail.
 *      A kick while the engine polls costs a syscall and nothing else.
 *   The device ignores an sq_tail more than `entries` ahead of sq_head
 *   (garbage, or a torn store) until a sane value is stored.
 *
 * Completing
 *   While cq_head != hdr.cq_tail (an acquire load): read CQ[cq_head & mask],
 *   then store cq_head + 1 to doorbell.cq_head.  A completion names its
 *   request by tag.  A WD_WEAK_ORDER queue may complete independent
 *   requests out of submission order; chained requests (WD_DF_MORE or
 *   WD_DF_CONT set) are never reordered with each other.  Any other queue
 *   completes every request in submission order.
 *
 * Sleeping (what wd_recv_sync does when polling found nothing)
 *   1. Drain the eventfd (non-blocking read; a count left from an earlier
 *      wait is stale).
 *   2. Store 1 to doorbell.irq_request, full barrier, re-check cq_tail and
 *      status.
 *   3. If something arrived: store 0 to irq_request (disarm) and do not
 *      sleep.  Otherwise poll/read the eventfd.
 *   The device signals the eventfd once per armed request: when it posts a
 *   completion and irq_request is 1 and the irq is not masked, it sets
 *   irq_request to 0 and signals.  A disarm that races with a completion
 *   may leave one stale count, which step 1 of the next wait drains, so a
 *   wake-up is a hint: always re-check the ring after waking.
 *   VFIO_IRQ_SET_ACTION_MASK / UNMASK (index 0) suppress / allow the signal.
 *   A completion posted while masked with irq_request armed is signalled
 *   at UNMASK.  Death and release requests are signalled even when masked
 *   or disarmed.
 *
 * Requests
 *   Every request taken by the device completes with exactly one struct
 *   wd_cqe.  A bad request never stops the queue.  Before it touches any
 *   memory the device checks a descriptor in this order and reports the
 *   first flaw it finds:
 *     WD_STS_BAD_OPCODE  opcode unknown or not of this queue's algo_type
 *     WD_STS_BAD_FLAGS   a flag bit not defined for the opcode, a reserved
 *                        field not 0, or a deflate flush/level out of range
 *     WD_STS_BAD_LEN     src_len or dst_len over WD_MAX_LEN, or a buffer
 *                        that wraps around the address space
 *     WD_STS_BAD_CHAIN   a chaining error (see "Chaining")
 *     WD_STS_NOSPC       dst_len too small for an output whose size the
 *                        lengths tell (memcpy, a sha256 digest)
 *   Then, executing it, the first of these it meets:
 *     WD_STS_BAD_ADDR    a buffer (or the sha256 context) not shared with
 *                        the device, not writable where it must be, or
 *                        lying in any WrapDrive queue's own regions
 *     WD_STS_NOMEM       the device is out of stream memory; retry later
 *     WD_STS_NOSPC       the output does not fit in dst (one-shot zlib)
 *     WD_STS_BAD_DATA    corrupt input (inflate)
 *   On any status but WD_STS_OK, out_len and result are 0 and dst may have
 *   been partly written.  A length of 0 touches no memory, so its address
 *   is not checked (0 is fine).
 *   WD_OP_NOP completes with WD_STS_OK on every queue; it checks flags,
 *   reserved fields and lengths like any request but never touches memory.
 *
 * Algorithms (opcode: what it does)
 *   WD_OP_MEMCPY   dst <- src; dst_len >= src_len or WD_STS_NOSPC;
 *                  out_len = src_len.
 *   WD_OP_CRC32C   cqe.result = CRC-32C (Castagnoli, reflected polynomial
 *                  0x82f63b78, initial value and final XOR 0xffffffff:
 *                  "123456789" gives 0xe3069283) of src, continuing from
 *                  desc.seed: seed is a previous result (0 to start), so
 *                  crc(a + b) = crc(b, seed = crc(a)), as zlib.crc32(data,
 *                  value).  dst is not used.
 *   WD_OP_SHA256   one-shot (no WD_DF_* flag): dst <- the 32-byte digest,
 *                  dst_len >= 32.  Chained: see below.
 *   WD_OP_DEFLATE  dst <- a zlib stream (RFC 1950) of src at desc.level
 *                  (0: zlib's default, 6; 1..9; WD_LEVEL_STORE: stored
 *                  blocks).  One-shot output fits in wd_deflate_bound(src_len).
 *   WD_OP_INFLATE  dst <- the data of the zlib stream at the start of src.
 *                  Inflate stops at the end of the first stream: cqe.flags
 *                  has WD_CF_STREAM_END and cqe.result is the number of src
 *                  bytes that stream used; bytes after it (trailing data, a
 *                  second stream) are the caller's.  A one-shot whose src
 *                  ends before the stream does gets WD_STS_BAD_DATA.
 *   For DEFLATE and INFLATE cqe.result is the number of src bytes consumed.
 *
 * Chaining (data of any size, in pieces)
 *   WD_DF_MORE  more input follows: keep the state after this request.
 *   WD_DF_CONT  this request continues a chain: take the state from the
 *               previous piece.
 *   Neither flag: one-shot.  First piece: MORE.  Middle pieces: CONT|MORE.
 *   Last piece: CONT.  Any split of the input gives the one-shot result.
 *   crc32c needs no flags: chain it with desc.seed.
 *   sha256: the state lives in user memory, in a struct wd_sha256_ctx at
 *     desc.ctx (shared like any buffer, read-write).  MORE: the device
 *     stores the state there (CONT: after reading it).  The last piece
 *     (CONT only) writes the digest to dst and clears ctx.magic.  CONT on
 *     a context without WD_SHA256_CTX_MAGIC: WD_STS_BAD_CHAIN.  The state
 *     is the caller's data: the device trusts nothing in it but the magic.
 *   zlib: the stream state (hundreds of KiB of deflate or inflate work
 *     space, with kernel pointers, so it cannot live in user memory) is
 *     kept by the driver per queue, in stream slot desc.stream
 *     (0 .. hdr.max_streams - 1).  A first piece (MORE without CONT)
 *     starts a stream there, dropping any earlier one; the last piece
 *     (CONT without MORE) ends it and frees the slot.  desc.flush is the
 *     zlib flush mode of a DEFLATE piece with MORE (WD_FLUSH_NONE, _SYNC,
 *     _FULL); a piece without MORE finishes the stream.  A chained piece
 *     whose dst fills up before all of src is used (or before a flush or
 *     finish is complete) still completes WD_STS_OK, with WD_CF_DST_FULL
 *     in cqe.flags: out_len bytes were written, result bytes of src were
 *     used, and the state is kept; submit the rest (CONT, same flags) with
 *     a new dst.  BAD_CHAIN: a slot number >= max_streams, CONT on an
 *     empty slot or on a slot of the other opcode; or MORE/CONT on a
 *     WD_OP_INFLATE after the stream ended (the state is dropped, the slot
 *     freed).  Streams are freed on reset, on close and when the queue
 *     dies.  The device's stream memory is bounded (WD_STS_NOMEM).
 *
 * Death and removal
 *   When the device goes away (driver unbound, module unloaded) or the
 *   owning mm exits, the queue dies: requests not yet completed are
 *   dropped, WD_Q_DEAD is set in hdr.status and the eventfd is signalled.
 *   The mappings stay valid (reads and writes never fault, the device no
 *   longer looks at them), so a user notices on its next look at
 *   hdr.status.  ioctls, read and write then fail with ENODEV; munmap and
 *   close() work.  Unbinding the device, or removing the mdev, blocks
 *   until every user has closed the queue's device fd and unmapped its
 *   regions; while it waits the device sets WD_Q_RELEASE (a queue being
 *   removed is also dead) and signals the eventfd, asking the owner to
 *   close the queue.  rmmod of the driver
 *   fails with EAGAIN (module in use) while any of its queues is open.
 *
 * VFIO_DEVICE_RESET stops the queue, drops every request not yet
 * completed (no completion is posted for them: the caller of the reset
 * owns their fate), frees its zlib streams, zeroes the doorbell, sets all
 * four indices back to 0 and starts it again.  WD_STS_ABORTED is for a
 * driver that ends a request early in other cases (its own error
 * handling); a request it has taken always completes.
 *
 * Memory
 *   Buffers are IOVAs mapped with VFIO_IOMMU_MAP_DMA (read-write for dst
 *   and the sha256 context), or process virtual addresses on a
 *   WD_CAPA_SHARE_ALL queue.  VFIO_IOMMU_UNMAP_DMA always wins promptly: a
 *   request using the range when it is unmapped completes with
 *   WD_STS_BAD_ADDR.  The device reads and writes user memory only while
 *   it executes a request.
 *
 * fork and exit
 *   The regions are mapped VM_DONTCOPY, so a child has no mapping of its
 *   parent's queue.  A child holding an inherited device fd can only
 *   close it: mmap, read, write and ioctls from another address space
 *   than the one that opened the queue fail with EPERM.  When the owning
 *   mm exits the queue dies (see above) and releases every page it
 *   pinned, whoever still holds the fd.
 */
#ifndef _UAPI_WRAPDRIVE_H
#define _UAPI_WRAPDRIVE_H

#include <linux/types.h>

#define WD_ABI_VERSION		2
#define WD_RING_MAGIC		0x51524457	/* "WDRQ" little endian */

/* Capability flag bits: mdev type attribute capabilities/flags (hex). */
#define WD_CAPA_SHARE_ALL	(1U << 0) /* buffers are process VAs (SVM) */
#define WD_WEAK_ORDER		(1U << 1) /* completions may be reordered */

/* VFIO region and irq indices of a queue. */
#define WD_REGION_DOORBELL	0
#define WD_REGION_CQ		1
#define WD_REGION_SQ		2
#define WD_NUM_REGIONS		3
#define WD_IRQ_QUEUE_STATE	0
#define WD_NUM_IRQS		1

/* Opcodes: each algo_type accepts its own, and WD_OP_NOP. */
#define WD_OP_NOP		0	/* any algo_type: completes, no work */
#define WD_OP_MEMCPY		1	/* "memcpy" */
#define WD_OP_CRC32C		2	/* "crc32c" */
#define WD_OP_SHA256		3	/* "sha256" */
#define WD_OP_DEFLATE		4	/* "zlib" */
#define WD_OP_INFLATE		5	/* "zlib" */

/* Completion status (struct wd_cqe.status), in checking order. */
#define WD_STS_OK		0
#define WD_STS_BAD_OPCODE	1
#define WD_STS_BAD_ADDR		2
#define WD_STS_BAD_LEN		3
#define WD_STS_NOSPC		4
#define WD_STS_BAD_DATA		5
#define WD_STS_BAD_FLAGS	6
#define WD_STS_ABORTED		7
#define WD_STS_BAD_CHAIN	8
#define WD_STS_NOMEM		9

/* struct wd_desc.flags */
#define WD_DF_MORE		(1U << 0) /* more input follows: keep state */
#define WD_DF_CONT		(1U << 1) /* continues a chain: take state */

/* struct wd_cqe.flags */
#define WD_CF_STREAM_END	(1U << 0) /* inflate: end of the zlib stream */
#define WD_CF_DST_FULL		(1U << 1) /* chained zlib: more output due */

/* struct wd_desc.flush (WD_OP_DEFLATE with WD_DF_MORE) */
#define WD_FLUSH_NONE		0
#define WD_FLUSH_SYNC		1
#define WD_FLUSH_FULL		2

/* struct wd_desc.level (WD_OP_DEFLATE) */
#define WD_LEVEL_DEFAULT	0	/* zlib's default, 6 */
#define WD_LEVEL_STORE		10	/* zlib level 0: stored blocks */

#define WD_MAX_LEN		(16U << 20)	/* max src_len / dst_len */
#define WD_SHA256_DIGEST_LEN	32
#define WD_SHA256_BLOCK_LEN	64
#define WD_SHA256_CTX_MAGIC	0x32414853	/* "SHA2" little endian */

/* Output room that always holds a one-shot deflate of @n bytes. */
static inline __u64 wd_deflate_bound(__u64 n)
{
	return n + (n >> 12) + (n >> 14) + (n >> 25) + 13;
}

/* A submission descriptor: 64 bytes. */
struct wd_desc {
	__u32 tag;		/* 0x00 echoed in wd_cqe.tag */
	__u16 opcode;		/* 0x04 WD_OP_* */
	__u16 flags;		/* 0x06 WD_DF_* */
	__u64 src;		/* 0x08 IOVA, or VA on a WD_CAPA_SHARE_ALL queue */
	__u64 dst;		/* 0x10 same */
	__u32 src_len;		/* 0x18 */
	__u32 dst_len;		/* 0x1c */
	__u64 ctx;		/* 0x20 sha256: address of a wd_sha256_ctx */
	__u32 seed;		/* 0x28 crc32c: starting value */
	__u16 stream;		/* 0x2c zlib: stream slot */
	__u8 level;		/* 0x2e deflate: WD_LEVEL_DEFAULT, 1..9, _STORE */
	__u8 flush;		/* 0x2f deflate with WD_DF_MORE: WD_FLUSH_* */
	__u64 __rsvd[2];	/* 0x30 must be 0 */
};

/* A completion: 16 bytes. */
struct wd_cqe {
	__u32 tag;		/* the request's wd_desc.tag */
	__u16 status;		/* WD_STS_* */
	__u16 flags;		/* WD_CF_* */
	__u32 out_len;		/* bytes written to dst */
	__u32 result;		/* crc32c: the CRC; zlib: src bytes used */
};

/* The state of a chained sha256, in user memory: 112 bytes. */
struct wd_sha256_ctx {
	__u32 magic;		/* WD_SHA256_CTX_MAGIC while a chain is open */
	__u32 __rsvd;
	__u64 total;		/* bytes hashed so far */
	__u32 h[8];		/* intermediate hash */
	__u8 pending[WD_SHA256_BLOCK_LEN]; /* total % 64 bytes, not yet hashed */
};

/* WD_REGION_DOORBELL: one page, user space writes, the device reads. */
struct wd_doorbell {
	__u32 sq_tail;		/* 0x00: producer index; see the kick */
	__u32 __pad0[15];
	__u32 cq_head;		/* 0x40: consumer index of the CQ */
	__u32 __pad1[15];
	__u32 irq_request;	/* 0x80: 1 = signal the eventfd once, 0 = not */
	__u32 __pad2[15];
};

/* hdr.status bits, set by the device. */
#define WD_Q_ENGINE_IDLE	(1U << 0) /* engine sleeps: kick by pwrite */
#define WD_Q_DEAD		(1U << 1) /* queue is dead: release it */
#define WD_Q_RELEASE		(1U << 2) /* removal waits: please release */

/* First page of WD_REGION_CQ: the device writes, user space reads. */
struct wd_ring_hdr {
	__u32 magic;		/* 0x00: WD_RING_MAGIC */
	__u32 version;		/* WD_ABI_VERSION */
	__u32 entries;		/* SQ and CQ length, a power of two */
	__u32 desc_size;	/* sizeof(struct wd_desc) */
	__u32 cqe_size;		/* sizeof(struct wd_cqe) */
	__u32 cq_off;		/* byte offset of the CQ in WD_REGION_CQ */
	__u32 capa_flags;	/* the queue's capability flags */
	__u32 max_streams;	/* zlib stream slots of this queue */
	__u32 __pad0[8];
	__u32 sq_head;		/* 0x40: descriptors taken by the device */
	__u32 __pad1[15];
	__u32 cq_tail;		/* 0x80: completions posted by the device */
	__u32 __pad2[15];
	__u32 status;		/* 0xc0: WD_Q_* bits */
	__u32 __pad3[15];
};

#ifdef __KERNEL__
#include <linux/build_bug.h>
static_assert(sizeof(struct wd_desc) == 64);
static_assert(sizeof(struct wd_cqe) == 16);
static_assert(sizeof(struct wd_sha256_ctx) == 112);
static_assert(sizeof(struct wd_doorbell) == 192);
static_assert(sizeof(struct wd_ring_hdr) == 256);
static_assert(offsetof(struct wd_desc, src) == 0x08);
static_assert(offsetof(struct wd_desc, ctx) == 0x20);
static_assert(offsetof(struct wd_desc, seed) == 0x28);
static_assert(offsetof(struct wd_desc, __rsvd) == 0x30);
static_assert(offsetof(struct wd_doorbell, cq_head) == 0x40);
static_assert(offsetof(struct wd_doorbell, irq_request) == 0x80);
static_assert(offsetof(struct wd_ring_hdr, sq_head) == 0x40);
static_assert(offsetof(struct wd_ring_hdr, cq_tail) == 0x80);
static_assert(offsetof(struct wd_ring_hdr, status) == 0xc0);
#endif

#endif /* _UAPI_WRAPDRIVE_H */
