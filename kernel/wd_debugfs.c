// SPDX-License-Identifier: GPL-2.0
/*
 * WrapDrive core: debugfs, under /sys/kernel/debug/wrapdrive/ (see
 * docs/ABI/debugfs-wrapdrive).  One directory per accelerator, named after
 * its parent device, which drivers may add files to (wd_accel_debugfs());
 * one directory per queue inside it, named after the mdev.
 */
#include <linux/debugfs.h>
#include <linux/seq_file.h>

#include "wd_internal.h"

struct dentry *wd_debugfs_root;

static int wd_dbg_atomic64_get(void *data, u64 *val)
{
	*val = atomic64_read(data);
	return 0;
}
DEFINE_DEBUGFS_ATTRIBUTE(wd_dbg_atomic64_fops, wd_dbg_atomic64_get, NULL,
			 "%llu\n");

static void wd_dbg_counter(const char *name, struct dentry *dir,
			   atomic64_t *val)
{
	debugfs_create_file_unsafe(name, 0444, dir, val, &wd_dbg_atomic64_fops);
}

static int wd_dbg_state_show(struct seq_file *s, void *unused)
{
	struct wd_queue *q = s->private;

	seq_printf(s, "%s\n", wd_queue_state_name(READ_ONCE(q->state)));
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(wd_dbg_state);

void wd_debugfs_init(void)
{
	wd_debugfs_root = debugfs_create_dir("wrapdrive", NULL);
	wd_dbg_counter("pinned_pages", wd_debugfs_root, &wd_total_pinned);
}

void wd_debugfs_exit(void)
{
	debugfs_remove_recursive(wd_debugfs_root);
}

void wd_debugfs_accel(struct wd_accel *accel)
{
	accel->dbg = debugfs_create_dir(dev_name(accel->dev), wd_debugfs_root);
	wd_dbg_counter("busy_ns", accel->dbg, &accel->busy_ns);
}

void wd_debugfs_queue(struct wd_queue *q)
{
	q->dbg = debugfs_create_dir(dev_name(mdev_dev(q->mdev)), q->accel->dbg);
	wd_dbg_counter("submitted", q->dbg, &q->submitted);
	wd_dbg_counter("completed", q->dbg, &q->completed);
	wd_dbg_counter("errors", q->dbg, &q->errors);
	wd_dbg_counter("pinned_pages", q->dbg, &q->nr_pinned);
	debugfs_create_file("state", 0444, q->dbg, q, &wd_dbg_state_fops);
}
