// SPDX-License-Identifier: GPL-2.0
/*
 * wd_dummy: a software accelerator on top of WrapDrive, the sample a vendor
 * driver copies.  This file is the driver proper: module parameters, one
 * platform device per accelerator, its capabilities (one mdev type each),
 * and the WrapDrive ops: queue_open, queue_close, kick; two optional modes
 * show what a hardware driver does differently (own_doorbell, dma_api).  The engine that
 * serves the queues is in dummy_engine.c, the algorithms in dummy_algs.c;
 * a hardware driver would start its engine in queue_open, ring it in
 * kick, and stop it in queue_close.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/cpumask.h>
#include <linux/debugfs.h>
#include <linux/dma-mapping.h>
#include <linux/fs.h>
#include <linux/iommu.h>
#include <linux/ktime.h>
#include <linux/log2.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/platform_device.h>
#include <linux/random.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/topology.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#include "dummy_accel.h"

#define WD_DUMMY_MAX_DEVS	16
#define WD_DUMMY_MAX_QUEUES	4096
#define WD_DUMMY_MAX_STREAMS	1024
#define WD_DUMMY_CPU_AUTO	(-1)	/* engine_cpus: the default place */
#define WD_DUMMY_CPU_ANY	(-2)	/* engine_cpus: not pinned */

/* ---------------------------------------------------------------------- */
/* Module parameters */

static unsigned int nr_devices = 2;
module_param(nr_devices, uint, 0444);
MODULE_PARM_DESC(nr_devices, "number of dummy devices (1..16, default 2)");

static int numa_zones[WD_DUMMY_MAX_DEVS] = { 0, 1 };
static unsigned int nr_numa_zones;
module_param_array(numa_zones, int, &nr_numa_zones, 0444);
MODULE_PARM_DESC(numa_zones, "NUMA zone of each device (default 0,1)");

static int priorities[WD_DUMMY_MAX_DEVS] = { 10, 20 };
static unsigned int nr_priorities;
module_param_array(priorities, int, &nr_priorities, 0444);
MODULE_PARM_DESC(priorities, "priority of each device (default 10,20)");

static int engine_cpus[WD_DUMMY_MAX_DEVS] = {
	[0 ... WD_DUMMY_MAX_DEVS - 1] = WD_DUMMY_CPU_AUTO
};

static unsigned int nr_engine_cpus;
module_param_array(engine_cpus, int, &nr_engine_cpus, 0444);
MODULE_PARM_DESC(engine_cpus, "CPU of each device's engine threads: -1 the default (the last CPU of the device's NUMA node, or of the nearest other node when it has only one), -2 not pinned");

static unsigned int max_queues = WD_DUMMY_MAX_QUEUES;
module_param(max_queues, uint, 0444);
MODULE_PARM_DESC(max_queues, "queues per device, all types together (1..4096, default 4096)");

static unsigned int ring_entries = 1024;
module_param(ring_entries, uint, 0444);
MODULE_PARM_DESC(ring_entries, "ring entries per queue, a power of two (2..65536, default 1024)");

static unsigned int max_streams = 16;
module_param(max_streams, uint, 0444);
MODULE_PARM_DESC(max_streams, "zlib stream slots per zlib queue (1..1024, default 16)");

static bool own_doorbell;
module_param(own_doorbell, bool, 0444);
MODULE_PARM_DESC(own_doorbell, "serve each queue's doorbell from a page of the driver, as hardware with MMIO doorbells does (default off)");

bool wd_dummy_dma_api;
module_param_named(dma_api, wd_dummy_dma_api, bool, 0444);
MODULE_PARM_DESC(dma_api, "reach request memory as a DMA device would: mapped with the DMA API, through DMA addresses (default off: CPU copies)");

/* Tunables: writable, each within its bounds (wd_dummy_bounds). */
unsigned int wd_dummy_poll_idle_us = 200;
unsigned int wd_dummy_poll_max_us = 10000;
unsigned int wd_dummy_stall_us = 10000;
unsigned int wd_dummy_max_engines = 64;
unsigned int wd_dummy_stream_mem_kb = 64 * 1024;

static const struct wd_dummy_bound {
	unsigned int *var;
	unsigned int min;
	unsigned int max;
} wd_dummy_bounds[] = {
	{ &wd_dummy_poll_idle_us, 0, USEC_PER_SEC },
	{ &wd_dummy_poll_max_us, 0, USEC_PER_SEC },
	{ &wd_dummy_stall_us, USEC_PER_MSEC, 60 * USEC_PER_SEC },
	{ &wd_dummy_max_engines, 1, WD_DUMMY_MAX_QUEUES + 1 },
	{ &wd_dummy_stream_mem_kb, 0, 4U << 20 },
};

static int wd_dummy_param_set(const char *val, const struct kernel_param *kp)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(wd_dummy_bounds); i++)
		if (kp->arg == wd_dummy_bounds[i].var)
			return param_set_uint_minmax(val, kp,
						     wd_dummy_bounds[i].min,
						     wd_dummy_bounds[i].max);
	return -EINVAL;
}

static const struct kernel_param_ops wd_dummy_bounded_ops = {
	.set = wd_dummy_param_set,
	.get = param_get_uint,
};

module_param_cb(poll_idle_us, &wd_dummy_bounded_ops, &wd_dummy_poll_idle_us,
		0644);
MODULE_PARM_DESC(poll_idle_us, "a queue is polled at least this long after its last request (0..1000000, default 200)");
module_param_cb(poll_max_us, &wd_dummy_bounded_ops, &wd_dummy_poll_max_us,
		0644);
MODULE_PARM_DESC(poll_max_us, "upper bound of the adaptive polling window (0..1000000, default 10000)");
module_param_cb(stall_us, &wd_dummy_bounded_ops, &wd_dummy_stall_us, 0644);
MODULE_PARM_DESC(stall_us, "a request running this long while other queues wait gets the others a new engine thread (1000..60000000, default 10000)");
module_param_cb(max_engines, &wd_dummy_bounded_ops, &wd_dummy_max_engines,
		0644);
MODULE_PARM_DESC(max_engines, "engine threads per device at most (1..4097, default 64)");
module_param_cb(stream_mem_kb, &wd_dummy_bounded_ops, &wd_dummy_stream_mem_kb,
		0644);
MODULE_PARM_DESC(stream_mem_kb, "zlib stream memory per device in KiB (0..4194304, default 65536)");

/* ---------------------------------------------------------------------- */
/* Capabilities */

static const struct wd_capa wd_dummy_capas[] = {
	{ .sysfs_name = "memcpy", .algo_type = "memcpy" },
	{ .sysfs_name = "crc32c", .algo_type = "crc32c" },
	{ .sysfs_name = "sha256", .algo_type = "sha256" },
	{ .sysfs_name = "zlib", .algo_type = "zlib" },
	{ .sysfs_name = "crc32c-weak", .algo_type = "crc32c",
	  .flags = WD_WEAK_ORDER },
	{ .sysfs_name = "sha256-weak", .algo_type = "sha256",
	  .flags = WD_WEAK_ORDER },
	{ .sysfs_name = "zlib-weak", .algo_type = "zlib",
	  .flags = WD_WEAK_ORDER },
	{ .sysfs_name = "sha256-sva", .algo_type = "sha256",
	  .flags = WD_CAPA_SHARE_ALL },
	{ .sysfs_name = "memcpy-sva", .algo_type = "memcpy",
	  .flags = WD_CAPA_SHARE_ALL },
};

static const char *const wd_dummy_algo_names[] = {
	[WD_ALGO_MEMCPY] = "memcpy",
	[WD_ALGO_CRC32C] = "crc32c",
	[WD_ALGO_SHA256] = "sha256",
	[WD_ALGO_ZLIB] = "zlib",
};

/* The engine's algorithm for an algo_type; -EINVAL if it has none. */
static int wd_dummy_algo_of(const char *algo_type)
{
	int i;

	for (i = 0; i < ARRAY_SIZE(wd_dummy_algo_names); i++)
		if (!strcmp(algo_type, wd_dummy_algo_names[i]))
			return i;
	return -EINVAL;
}

static struct platform_device *wd_dummy_pdevs[WD_DUMMY_MAX_DEVS];

/* ---------------------------------------------------------------------- */
/* WrapDrive ops */

static int wd_dummy_queue_open(struct wd_queue *q)
{
	struct wd_dummy_dev *d = wd_accel_priv(wd_queue_accel(q));
	const struct wd_capa *capa = wd_queue_capa(q);
	struct wd_dummy_queue *dq;
	int algo = wd_dummy_algo_of(capa->algo_type);

	if (algo < 0)
		return algo;	/* checked at probe: cannot happen */
	dq = kzalloc_node(sizeof(*dq), GFP_KERNEL, d->node);
	if (!dq)
		return -ENOMEM;
	dq->d = d;
	dq->q = q;
	dq->algo = algo;
	dq->weak = capa->flags & WD_WEAK_ORDER;
	dq->max_streams = capa->max_streams;
	if (dq->max_streams) {
		dq->streams = kcalloc_node(dq->max_streams,
					   sizeof(*dq->streams), GFP_KERNEL,
					   d->node);
		if (!dq->streams)
			goto err_free;
	}
	if (own_doorbell) {
		/* Hardware would hand out a page of its MMIO space here. */
		struct wd_doorbell_page db = {};

		dq->db_page = alloc_pages_node(d->node, GFP_KERNEL, 0);
		if (!dq->db_page)
			goto err_free;
		db.pfn = page_to_pfn(dq->db_page);
		db.kaddr = page_address(dq->db_page);
		wd_queue_set_doorbell(q, &db);
	}
	wd_dummy_engine_add_queue(d, dq);
	return 0;

err_free:
	kfree(dq->streams);
	kfree(dq);
	return -ENOMEM;
}

static void wd_dummy_queue_close(struct wd_queue *q)
{
	struct wd_dummy_dev *d = wd_accel_priv(wd_queue_accel(q));
	struct wd_dummy_queue *dq = wd_queue_priv(q);

	/* Aborts what runs, waits for the engine to let go of the queue. */
	wd_dummy_engine_del_queue(d, dq);
	wd_dummy_streams_free(dq);
	if (dq->db_page)
		__free_page(dq->db_page);
	kfree(dq->streams);
	kfree(dq);
}

static void wd_dummy_kick(struct wd_queue *q)
{
	wd_dummy_engine_kick(wd_accel_priv(wd_queue_accel(q)), q);
}

/* What selfbench runs, by name: an algorithm's one-shot request. */
static const struct {
	const char *name;
	u16 opcode;
} wd_dummy_bench_ops[] = {
	{ "memcpy", WD_OP_MEMCPY },
	{ "crc32c", WD_OP_CRC32C },
	{ "sha256", WD_OP_SHA256 },
	{ "zlib", WD_OP_DEFLATE },
	{ "inflate", WD_OP_INFLATE },
};

static int wd_dummy_bench_opcode(const char *name)
{
	int i;

	for (i = 0; i < ARRAY_SIZE(wd_dummy_bench_ops); i++)
		if (!strcmp(name, wd_dummy_bench_ops[i].name))
			return wd_dummy_bench_ops[i].opcode;
	return -EINVAL;
}

/*
 * Self-benchmark: the algorithm code on kernel buffers, in the caller, @count
 * times over @size bytes of half-compressible data (random bytes, then a run).
 * "inflate" inflates that data deflated once before the clock starts, and
 * checks the last round's output against it.
 */
static int wd_dummy_selfbench(const char *name, u32 size, u32 count,
			      u64 *nsec)
{
	int opcode = wd_dummy_bench_opcode(name);
	struct wd_dummy_scratch s = {};
	u8 *plain, *packed = NULL, *dst;
	u32 i, dst_len, in_len, out_len;
	const u8 *in;
	int ret = 0;
	u64 t0;

	if (opcode < 0)
		return opcode;
	dst_len = max_t(u32, wd_deflate_bound(size), WD_SHA256_DIGEST_LEN);
	plain = vmalloc(max_t(u32, size, 1));
	dst = vmalloc(dst_len);
	if (opcode == WD_OP_INFLATE)
		packed = vmalloc(dst_len);
	if (!plain || !dst || (opcode == WD_OP_INFLATE && !packed) ||
	    wd_dummy_scratch_alloc(&s, NUMA_NO_NODE)) {
		ret = -ENOMEM;
		goto out;
	}
	get_random_bytes(plain, size / 2);
	memset(plain + size / 2, 'w', size - size / 2);
	in = plain;
	in_len = size;
	if (packed) {
		if (wd_dummy_run_kernel(&s, WD_OP_DEFLATE, plain, size, packed,
					dst_len, &in_len)) {
			ret = -EIO;
			goto out;
		}
		in = packed;
	}

	t0 = ktime_get_ns();
	for (i = 0; i < count; i++) {
		if (wd_dummy_run_kernel(&s, opcode, in, in_len, dst, dst_len,
					&out_len)) {
			ret = fatal_signal_pending(current) ? -EINTR : -EIO;
			goto out;
		}
	}
	*nsec = ktime_get_ns() - t0;
	if (packed && (out_len != size || memcmp(dst, plain, size)))
		ret = -EIO;
out:
	wd_dummy_scratch_free(&s);
	vfree(packed);
	vfree(plain);
	vfree(dst);
	return ret;
}

static const struct wd_accel_ops wd_dummy_ops = {
	.queue_open = wd_dummy_queue_open,
	.queue_close = wd_dummy_queue_close,
	.kick = wd_dummy_kick,
};

/* ---------------------------------------------------------------------- */
/* debugfs, in the accelerator's directory (docs/ABI/debugfs-wrapdrive) */

/* selfbench: write "ALGO SIZE COUNT" to run, read "ALGO SIZE COUNT NSEC". */
static ssize_t wd_dummy_selfbench_read(struct file *file, char __user *ubuf,
				       size_t count, loff_t *ppos)
{
	struct wd_dummy_dev *d = file->private_data;
	char buf[sizeof(d->bench_result)];

	mutex_lock(&d->bench_lock);
	strscpy(buf, d->bench_result, sizeof(buf));
	mutex_unlock(&d->bench_lock);
	return simple_read_from_buffer(ubuf, count, ppos, buf, strlen(buf));
}

static ssize_t wd_dummy_selfbench_write(struct file *file,
					const char __user *ubuf, size_t count,
					loff_t *ppos)
{
	struct wd_dummy_dev *d = file->private_data;
	char buf[64], algo[16];
	u32 size, cnt;
	u64 nsec = 0;
	int ret;

	if (*ppos || count >= sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, count))
		return -EFAULT;
	buf[count] = '\0';
	if (sscanf(buf, "%15s %u %u", algo, &size, &cnt) != 3)
		return -EINVAL;
	if (size > WD_MAX_LEN || !cnt || cnt > 1000000)
		return -EINVAL;

	mutex_lock(&d->bench_lock);
	ret = wd_dummy_selfbench(algo, size, cnt, &nsec);
	if (!ret)
		snprintf(d->bench_result, sizeof(d->bench_result),
			 "%s %u %u %llu\n", algo, size, cnt, nsec);
	mutex_unlock(&d->bench_lock);
	return ret ? ret : count;
}

static const struct file_operations wd_dummy_selfbench_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.read = wd_dummy_selfbench_read,
	.write = wd_dummy_selfbench_write,
	.llseek = default_llseek,
};

static int wd_dummy_engines_get(void *data, u64 *val)
{
	struct wd_dummy_dev *d = data;

	spin_lock(&d->lock);
	*val = d->nr_engines;
	spin_unlock(&d->lock);
	return 0;
}
DEFINE_DEBUGFS_ATTRIBUTE(wd_dummy_engines_fops, wd_dummy_engines_get, NULL,
			 "%llu\n");

static int wd_dummy_streams_get(void *data, u64 *val)
{
	*val = atomic_read(data);
	return 0;
}
DEFINE_DEBUGFS_ATTRIBUTE(wd_dummy_streams_fops, wd_dummy_streams_get, NULL,
			 "%llu\n");

static int wd_dummy_stream_bytes_get(void *data, u64 *val)
{
	*val = atomic_long_read(data);
	return 0;
}
DEFINE_DEBUGFS_ATTRIBUTE(wd_dummy_stream_bytes_fops, wd_dummy_stream_bytes_get,
			 NULL, "%llu\n");

/* Removed with the directory, by wd_accel_remove(). */
static void wd_dummy_debugfs_init(struct wd_dummy_dev *d)
{
	struct dentry *dir = wd_accel_debugfs(d->accel);

	debugfs_create_file("selfbench", 0600, dir, d,
			    &wd_dummy_selfbench_fops);
	debugfs_create_file_unsafe("engines", 0444, dir, d,
				   &wd_dummy_engines_fops);
	debugfs_create_file_unsafe("streams", 0444, dir, &d->nr_streams,
				   &wd_dummy_streams_fops);
	debugfs_create_file_unsafe("stream_bytes", 0444, dir, &d->stream_bytes,
				   &wd_dummy_stream_bytes_fops);
}

/* ---------------------------------------------------------------------- */
/* Platform driver */

/*
 * Where device @idx on NUMA node @node runs its engine threads; -1: where
 * the scheduler likes.  A hardware engine is beside the CPUs, not on one of
 * them; the software one should at least not sit on its callers' CPU.  The
 * userlib opens the device nearest its caller, so this device's callers run
 * on its node: the engine takes the node's last CPU when the node has more
 * than one, else (one CPU per node, as in the test guests) the last CPU of
 * the nearest other node.
 */
static int wd_dummy_engine_cpu(unsigned int idx, int node)
{
	int cpu = engine_cpus[idx], n, near = NUMA_NO_NODE;

	if (cpu == WD_DUMMY_CPU_ANY)
		return -1;
	if (cpu >= 0)
		return cpu;
	if (node != NUMA_NO_NODE && nr_cpus_node(node) == 1) {
		for_each_node_with_cpus(n)
			if (n != node && (near == NUMA_NO_NODE ||
					  node_distance(node, n) <
					  node_distance(node, near)))
				near = n;
	}
	if (near == NUMA_NO_NODE)
		near = node;
	cpu = near == NUMA_NO_NODE ? -1 : cpumask_last(cpumask_of_node(near));
	if (cpu < 0 || cpu >= nr_cpu_ids || !cpu_online(cpu))
		cpu = cpumask_last(cpu_online_mask);
	return cpu;
}

static int wd_dummy_probe(struct platform_device *pdev)
{
	unsigned int idx = pdev->id;
	struct wd_capa capas[ARRAY_SIZE(wd_dummy_capas)];
	struct wd_accel_info info = {
		.name = WD_DUMMY_NAME,
		.owner = THIS_MODULE,
		.max_queues = max_queues,
		.ring_entries = ring_entries,
		.capas = capas,
		.nr_capas = ARRAY_SIZE(capas),
	};
	struct wd_dummy_dev *d;
	unsigned int i;
	int ret;

	if (idx >= WD_DUMMY_MAX_DEVS)
		return -EINVAL;
	info.numa_zone = idx < max(nr_numa_zones, 2U) ? numa_zones[idx] : 0;
	info.priority = idx < max(nr_priorities, 2U) ? priorities[idx] :
		10 * (idx + 1);
	/* Each capability needs an algorithm of ours; zlib has streams. */
	for (i = 0; i < ARRAY_SIZE(capas); i++) {
		capas[i] = wd_dummy_capas[i];
		ret = wd_dummy_algo_of(capas[i].algo_type);
		if (ret < 0) {
			dev_err(&pdev->dev, "no algorithm for algo_type %s\n",
				capas[i].algo_type);
			return ret;
		}
		if (ret == WD_ALGO_ZLIB)
			capas[i].max_streams = max_streams;
	}

	d = devm_kzalloc(&pdev->dev, sizeof(*d), GFP_KERNEL);
	if (!d)
		return -ENOMEM;
	d->pdev = pdev;
	d->idx = idx;
	d->node = NUMA_NO_NODE;
	if (info.numa_zone >= 0 && info.numa_zone < MAX_NUMNODES &&
	    node_online(info.numa_zone)) {
		d->node = info.numa_zone;
		set_dev_node(&pdev->dev, d->node);
	}
	d->cpu = wd_dummy_engine_cpu(idx, d->node);
	atomic_set(&d->nr_streams, 0);
	atomic_long_set(&d->stream_bytes, 0);
	mutex_init(&d->bench_lock);
	if (wd_dummy_dma_api) {
		/* The engine turns DMA addresses back into pages: no IOMMU. */
		if (device_iommu_mapped(&pdev->dev) || pdev->dev.dma_range_map)
			return -EOPNOTSUPP;
		ret = dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(64));
		if (ret)
			return ret;
	}

	/*
	 * Two steps: everything ready (engine asleep, debugfs) before anyone
	 * can see the device, since a queue may open as soon as it is.
	 */
	d->accel = wd_accel_alloc(&pdev->dev, &info, &wd_dummy_ops, d);
	if (IS_ERR(d->accel))
		return PTR_ERR(d->accel);
	ret = wd_dummy_engine_init(d);
	if (ret)
		goto err_accel;
	wd_dummy_debugfs_init(d);
	ret = wd_accel_register(d->accel);
	if (ret)
		goto err_engine;
	platform_set_drvdata(pdev, d);
	dev_info(&pdev->dev, "engine on %s%d\n", d->cpu < 0 ? "node " : "CPU ",
		 d->cpu < 0 ? d->node : d->cpu);
	return 0;

err_engine:
	wd_dummy_engine_fini(d);
err_accel:
	wd_accel_remove(d->accel);
	return ret;
}

static void wd_dummy_remove(struct platform_device *pdev)
{
	struct wd_dummy_dev *d = platform_get_drvdata(pdev);

	/* Kills open queues (queue_close), waits for their users. */
	wd_accel_remove(d->accel);
	wd_dummy_engine_fini(d);
	mutex_destroy(&d->bench_lock);
}

static struct platform_driver wd_dummy_driver = {
	.driver = {
		.name = WD_DUMMY_NAME,
	},
	.probe = wd_dummy_probe,
	.remove_new = wd_dummy_remove,
};

static void wd_dummy_del_devices(void)
{
	int i;

	for (i = WD_DUMMY_MAX_DEVS - 1; i >= 0; i--) {
		platform_device_unregister(wd_dummy_pdevs[i]);
		wd_dummy_pdevs[i] = NULL;
	}
}

static int __init wd_dummy_check_params(void)
{
	unsigned int i;

	if (!nr_devices || nr_devices > WD_DUMMY_MAX_DEVS) {
		pr_err("nr_devices must be 1..%d\n", WD_DUMMY_MAX_DEVS);
		return -EINVAL;
	}
	if (!max_queues || max_queues > WD_DUMMY_MAX_QUEUES) {
		pr_err("max_queues must be 1..%d\n", WD_DUMMY_MAX_QUEUES);
		return -EINVAL;
	}
	if (ring_entries < 2 || ring_entries > 65536 ||
	    !is_power_of_2(ring_entries)) {
		pr_err("ring_entries must be a power of two in 2..65536\n");
		return -EINVAL;
	}
	if (!max_streams || max_streams > WD_DUMMY_MAX_STREAMS) {
		pr_err("max_streams must be 1..%d\n", WD_DUMMY_MAX_STREAMS);
		return -EINVAL;
	}
	for (i = 0; i < nr_engine_cpus; i++) {
		int cpu = engine_cpus[i];

		if (cpu == WD_DUMMY_CPU_AUTO || cpu == WD_DUMMY_CPU_ANY)
			continue;
		if (cpu < 0 || cpu >= nr_cpu_ids || !cpu_online(cpu)) {
			pr_err("engine_cpus: %d is not an online CPU (-1: default, -2: not pinned)\n",
			       cpu);
			return -EINVAL;
		}
	}
	return 0;
}

static int __init wd_dummy_init(void)
{
	unsigned int i;
	int ret;

	ret = wd_dummy_check_params();
	if (ret)
		return ret;
	ret = platform_driver_register(&wd_dummy_driver);
	if (ret)
		return ret;
	for (i = 0; i < nr_devices; i++) {
		wd_dummy_pdevs[i] = platform_device_register_simple(WD_DUMMY_NAME,
								    i, NULL, 0);
		if (IS_ERR(wd_dummy_pdevs[i])) {
			ret = PTR_ERR(wd_dummy_pdevs[i]);
			wd_dummy_pdevs[i] = NULL;
			goto err_devices;
		}
	}
	return 0;

err_devices:
	wd_dummy_del_devices();
	platform_driver_unregister(&wd_dummy_driver);
	return ret;
}

static void __exit wd_dummy_exit(void)
{
	wd_dummy_del_devices();
	platform_driver_unregister(&wd_dummy_driver);
}

module_init(wd_dummy_init);
module_exit(wd_dummy_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("WrapDrive sample driver: a software accelerator");
MODULE_SOFTDEP("pre: wrapdrive");
