"""cffi (API mode, out of line) builders for the two extension modules.

``wrapdrive._abi``
    kernel/uapi/wrapdrive.h alone: every WD_* constant and every struct
    wd_*, laid out by the C compiler.  Needs nothing but the header, so the
    in-guest kernel tests can import it too.
``wrapdrive._native``
    the same ABI plus libwd (userlib/libwd/src/*.c compiled into the module):
    the ring, selection, VFIO opening and memory sharing the package calls.

The cdef of the ABI is generated from the header's text (``#define WD_x``
lines and ``struct wd_*`` bodies); every constant is declared ``...`` and
every struct ends in ``...;``, so values and layouts come from the compiler,
never from a hand copy.  The libwd prototypes below are compiled against
include/wd.h: a prototype that disagrees with the header fails the build.
"""

from __future__ import annotations

import re
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
LIBWD = HERE / "libwd"
UAPI = LIBWD / "uapi" / "wrapdrive.h"  # a symlink to kernel/uapi/wrapdrive.h

_DEFINE = re.compile(r"^#define\s+(WD_[A-Z0-9_]+)[ \t]", re.M)  # object-like only
_STRUCT = re.compile(r"^struct\s+(wd_\w+)\s*\{(.*?)^\};", re.M | re.S)
_FIELD = re.compile(r"^\s*(__[us]\d+)\s+(\w+)(\[[^\]]*\])?\s*;", re.M)

TYPES = """
typedef uint8_t __u8;
typedef uint16_t __u16;
typedef uint32_t __u32;
typedef uint64_t __u64;
typedef int32_t __s32;
"""


def abi_cdef(text: str | None = None) -> str:
    """cdef text for every constant and struct of the uapi header."""
    if text is None:
        text = UAPI.read_text()
    out = [TYPES]
    for name in _DEFINE.findall(text):
        out.append(f"#define {name} ...")
    for sname, body in _STRUCT.findall(text):
        fields = []
        for typ, fname, arr in _FIELD.findall(body):
            if fname.startswith("__"):
                continue  # padding and reserved words: the compiler places them
            fields.append(f"    {typ} {fname}{'[...]' if arr else ''};")
        out.append(f"struct {sname} {{\n" + "\n".join(fields) + "\n    ...;\n};")
    out.append("uint64_t wd_deflate_bound(uint64_t n);")
    return "\n".join(out) + "\n"


LIBWD_CDEF = """
struct wd_capa { const char *alg; __u32 flags; };
struct wd_queue {
    const char *sysfs_root;
    __u32 spin;
    const char *uuid;
    char name[40];
    char parent[64];
    char mdev_type[64];
    char alg[32];
    __u32 type_flags;
    __u32 capa_flags;
    __u32 entries;
    __u32 max_streams;
    int numa_zone;
    int priority;
    int provisioned;
    int device_fd;
    int event_fd;
    ...;
};
struct wd_req {
    __u16 opcode;
    __u16 flags;
    __u32 src_len;
    __u32 dst_len;
    __u32 seed;
    const void *src;
    void *dst;
    void *ctx;
    __u16 stream;
    __u8 level;
    __u8 flush;
    __u16 status;
    __u16 cqe_flags;
    __u32 out_len;
    __u32 result;
    void *user;
    __u32 tag;
    __u32 state;
};
struct wd_sel_cand {
    char parent[64];
    char mdev_type[64];
    char type_path[512];
    char alg[32];
    __u32 flags;
    int available;
    int numa_zone;
    int priority;
    int distance;
};
struct wd_sel_hooks {
    int (*create)(const char *create_path, const char *uuid, void *arg);
    int (*alive)(int pid, void *arg);
    int (*busy)(int group, void *arg);
    int (*open_group)(int group, void *arg);
    void *arg;
};

int wd_request_queue(struct wd_queue *q, struct wd_capa *capa);
void wd_release_queue(struct wd_queue *q);
int wd_send(struct wd_queue *q, void *req);
int wd_recv(struct wd_queue *q, void **req);
int wd_send_sync(struct wd_queue *q, void *req);
int wd_recv_sync(struct wd_queue *q, void **req);
int wd_mem_share(struct wd_queue *q, const void *addr, size_t size, int flags);
void wd_mem_unshare(struct wd_queue *q, const void *addr, size_t size);
const char *wd_errmsg(void);

int wd_send_many(struct wd_queue *q, struct wd_req **reqs, int n);
int wd_recv_many(struct wd_queue *q, struct wd_req **reqs, int n);
int wd_send_sync_timeout(struct wd_queue *q, void *req, int timeout_ms);
int wd_recv_sync_timeout(struct wd_queue *q, void **req, int timeout_ms);
int wd_mem_unshare_checked(struct wd_queue *q, const void *addr, size_t size);
__u64 wd_dev_addr(struct wd_queue *q, const void *addr, size_t len);
int wd_is_shared(struct wd_queue *q, const void *addr, size_t len);
int wd_in_flight(struct wd_queue *q);
int wd_is_dead(struct wd_queue *q);
struct wd_stats { unsigned long kicks, sleeps, spins, spurious; };
void wd_queue_stats(struct wd_queue *q, struct wd_stats *st);
int wd_arm_wait(struct wd_queue *q);
int wd_run(struct wd_queue *q, struct wd_req *req, int timeout_ms);
int wd_run_many(struct wd_queue *q, struct wd_req *reqs, int n, int timeout_ms);

int wd_do_crc32c(struct wd_queue *q, const void *src, size_t len, __u32 seed,
                 __u32 *crc, __u16 *status);
int wd_do_sha256(struct wd_queue *q, const void *src, size_t len, __u8 *digest,
                 __u16 *status);
int wd_do_xfer(struct wd_queue *q, __u16 opcode, const void *src, size_t len,
               void *dst, size_t *out_len, __u16 *status);
long long wd_crc32c_call(struct wd_queue *q, const char *src, size_t len, __u32 seed);
int wd_sha256_call(struct wd_queue *q, const char *src, size_t len, char *digest);
int wd_last_status(void);
int wd_do_many(struct wd_queue *q, __u16 opcode, const void *src, const __u32 *lens, int n,
               void *dst, __u32 dst_stride, __u32 *results, __u32 *out_lens,
               __u16 *statuses);
int wd_do_crc32c_many(struct wd_queue *q, const void *src, const __u32 *lens, int n,
                      __u32 *crcs, __u16 *statuses);
int wd_do_sha256_many(struct wd_queue *q, const void *src, const __u32 *lens, int n,
                      __u8 *digests, __u16 *statuses);

int wd_run_start(struct wd_queue *q, struct wd_req *req, int timeout_ms);
int wd_run_wait(struct wd_queue *q, struct wd_req *req, int timeout_ms);

#define WD_STREAM_PIECE ...
#define WD_STREAM_FINISH ...
struct wd_stream_priv;
struct wd_stream {
    struct wd_queue *q;
    __u16 opcode;
    __u16 slot;
    int eof;
    __u64 total_in;
    __u64 total_out;
    struct wd_stream_priv *priv;
};
int wd_sha256_init(struct wd_queue *q, struct wd_stream *s);
int wd_sha256_update(struct wd_stream *s, const void *data, size_t len);
int wd_sha256_digest(struct wd_stream *s, __u8 *digest);
int wd_sha256_final(struct wd_stream *s, __u8 *digest);
int wd_sha256_space(struct wd_stream *s, void **buf, size_t *room);
int wd_sha256_filled(struct wd_stream *s, size_t n);
int wd_crc32c_update(struct wd_queue *q, __u32 *crc, const void *data, size_t len);
__u32 wd_crc32c_combine(__u32 crc1, __u32 crc2, __u64 len2);
int wd_deflate_init(struct wd_queue *q, struct wd_stream *s, int level);
int wd_inflate_init(struct wd_queue *q, struct wd_stream *s);
int wd_stream_write(struct wd_stream *s, const void *in, size_t len, int flush);
size_t wd_stream_pending(const struct wd_stream *s);
size_t wd_stream_read(struct wd_stream *s, void *out, size_t room);
int wd_stream_copy(struct wd_stream *to, struct wd_stream *from);
int wd_stream_sync(struct wd_stream *s);
int wd_stream_move(struct wd_stream *s, struct wd_queue *q);
void wd_stream_release(struct wd_stream *s);

int wd_sel_node(const char *root);
int wd_sel_rank(const char *root, const struct wd_capa *capa, int node,
                struct wd_sel_cand *out, int max);
int wd_sel_create(const char *root, const struct wd_capa *capa, int node,
                  const struct wd_sel_hooks *hooks, struct wd_sel_cand *cand, char *uuid);
int wd_sel_reclaim(const char *root, const struct wd_sel_hooks *hooks,
                   char *removed, size_t removed_len);
void wd_sel_new_uuid(int pid, char *uuid);
int wd_sel_is_ours(const char *uuid);
int wd_sel_lookup(const char *root, const struct wd_capa *capa, const char *uuid,
                  struct wd_sel_cand *cand);
int wd_sel_provisioned(const char *root, const struct wd_capa *capa, int node,
                       const struct wd_sel_hooks *hooks, struct wd_sel_cand *cand,
                       char *uuid);

int wd_attach_memory(struct wd_queue *q, void *doorbell, const void *cq_region,
                     size_t cq_size, void *sq_region, size_t sq_size,
                     int kick_fd, int event_fd);
void wd_detach_memory(struct wd_queue *q);
"""

CFLAGS = ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration",
          "-pthread"]

abi = FFI()
abi.cdef(abi_cdef())
abi.set_source("wrapdrive._abi", '#include "wrapdrive.h"\n',
               include_dirs=[str(LIBWD / "uapi")], extra_compile_args=CFLAGS)

native = FFI()
native.cdef(abi_cdef() + LIBWD_CDEF)
native.set_source(
    "wrapdrive._native", '#include "wd.h"\n',
    sources=[str(p.relative_to(HERE)) for p in sorted((LIBWD / "src").glob("*.c"))],
    include_dirs=[str(LIBWD / "include"), str(LIBWD / "uapi"), str(LIBWD / "src")],
    extra_compile_args=CFLAGS, extra_link_args=["-pthread"])

if __name__ == "__main__":
    abi.compile(verbose=True)
    native.compile(verbose=True)
