// SPDX-License-Identifier: GPL-2.0
/*
 * WrapDrive_k: exposes accelerator queues to user space as vfio-mdev
 * devices.  This file: the module, accelerator registration, sysfs (the
 * capabilities/ of each mdev type, numa_zone and priority of each device)
 * and the mdev driver that turns an mdev into a queue.  See
 * include/wrapdrive.h for the driver API, uapi/wrapdrive.h for what user
 * space sees, wd_internal.h for how the files of the module divide the work.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/debugfs.h>
#include <linux/kernel.h>
#include <linux/log2.h>
#include <linux/mdev.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/string.h>

#include "wd_internal.h"
#include "wd_compat.h"

/*
 * How long the memory of a removed accelerator is kept under
 * CONFIG_DEBUG_KOBJECT_RELEASE: the mdev core's type and device kobjects
 * point into it, and that option delays each release by up to 4 s (a
 * device's release drops the last reference of its type: twice that).
 */
#define WD_KOBJ_RELEASE_GRACE	(10 * HZ)

struct workqueue_struct *wd_wq;

/* All registered accelerators, for the parent device attributes. */
static LIST_HEAD(wd_accels);
static DEFINE_MUTEX(wd_accels_lock);

/* Accelerators allocated and not yet freed: module exit waits for them. */
static atomic_t wd_nr_accels = ATOMIC_INIT(0);

/* ---------------------------------------------------------------------- */
/* Accelerator lifetime */

static void wd_accel_free(struct wd_accel *accel)
{
	unsigned int i;

	if (accel->mtypes)
		for (i = 0; i < accel->info.nr_capas; i++)
			kfree(accel->mtypes[i].type.pretty_name);
	kfree(accel->types);
	kfree(accel->mtypes);
	kfree(accel->capas);
	mutex_destroy(&accel->lock);
	kfree(accel);
	if (atomic_dec_and_test(&wd_nr_accels))
		wake_up_var(&wd_nr_accels);
}

static void wd_accel_free_work(struct work_struct *work)
{
	wd_accel_free(container_of(to_delayed_work(work), struct wd_accel,
				   free_work));
}

static void wd_accel_release(struct kref *ref)
{
	struct wd_accel *accel = container_of(ref, struct wd_accel, ref);

	if (IS_ENABLED(CONFIG_DEBUG_KOBJECT_RELEASE))
		queue_delayed_work(wd_wq, &accel->free_work,
				   WD_KOBJ_RELEASE_GRACE);
	else
		wd_accel_free(accel);
}

void wd_accel_get(struct wd_accel *accel)
{
	kref_get(&accel->ref);
}

void wd_accel_put(struct wd_accel *accel)
{
	kref_put(&accel->ref, wd_accel_release);
}

/* ---------------------------------------------------------------------- */
/* capabilities/ of an mdev type: a kobject of ours under the type's */

struct wd_caps_attribute {
	struct attribute attr;
	ssize_t (*show)(struct wd_mtype *mt, char *buf);
};

static ssize_t wd_caps_attr_show(struct kobject *kobj, struct attribute *attr,
				 char *buf)
{
	struct wd_caps_attribute *a =
		container_of(attr, struct wd_caps_attribute, attr);

	return a->show(container_of(kobj, struct wd_mtype, caps), buf);
}

static const struct sysfs_ops wd_caps_sysfs_ops = {
	.show = wd_caps_attr_show,
};

static ssize_t algo_type_show(struct wd_mtype *mt, char *buf)
{
	return sysfs_emit(buf, "%s\n", mt->capa->algo_type);
}

static struct wd_caps_attribute wd_caps_attr_algo_type = __ATTR_RO(algo_type);

static ssize_t flags_show(struct wd_mtype *mt, char *buf)
{
	return sysfs_emit(buf, "0x%08x\n", mt->capa->flags);
}

static struct wd_caps_attribute wd_caps_attr_flags = __ATTR_RO(flags);

static struct attribute *wd_caps_attrs[] = {
	&wd_caps_attr_algo_type.attr,
	&wd_caps_attr_flags.attr,
	NULL,
};
ATTRIBUTE_GROUPS(wd_caps);

static void wd_caps_release(struct kobject *kobj)
{
	wd_accel_put(container_of(kobj, struct wd_mtype, caps)->accel);
}

static const struct kobj_type wd_caps_ktype = {
	.release = wd_caps_release,
	.sysfs_ops = &wd_caps_sysfs_ops,
	.default_groups = wd_caps_groups,
};

static int wd_caps_add(struct wd_mtype *mt)
{
	int ret;

	wd_accel_get(mt->accel);	/* dropped by wd_caps_release() */
	ret = kobject_init_and_add(&mt->caps, &wd_caps_ktype, &mt->type.kobj,
				   "capabilities");
	if (ret) {
		kobject_put(&mt->caps);
		return ret;
	}
	mt->caps_added = true;
	return 0;
}

static void wd_caps_remove_all(struct wd_accel *accel)
{
	unsigned int i;

	for (i = 0; i < accel->info.nr_capas; i++) {
		struct wd_mtype *mt = &accel->mtypes[i];

		if (!mt->caps_added)
			continue;
		kobject_del(&mt->caps);
		kobject_put(&mt->caps);
		mt->caps_added = false;
	}
}

/* ---------------------------------------------------------------------- */
/* Device attributes: numa_zone and priority */

/* The accelerator of a parent device; NULL if it is going away. */
static struct wd_accel *wd_accel_of(struct device *dev)
{
	struct wd_accel *accel;

	lockdep_assert_held(&wd_accels_lock);
	list_for_each_entry(accel, &wd_accels, node)
		if (accel->dev == dev)
			return accel;
	return NULL;
}

static ssize_t numa_zone_show(struct device *dev,
			      struct device_attribute *attr, char *buf)
{
	struct wd_accel *accel;
	ssize_t ret = -ENODEV;

	mutex_lock(&wd_accels_lock);
	accel = wd_accel_of(dev);
	if (accel)
		ret = sysfs_emit(buf, "%d\n", accel->info.numa_zone);
	mutex_unlock(&wd_accels_lock);
	return ret;
}
static DEVICE_ATTR_RO(numa_zone);

static ssize_t priority_show(struct device *dev,
			     struct device_attribute *attr, char *buf)
{
	struct wd_accel *accel;
	ssize_t ret = -ENODEV;

	mutex_lock(&wd_accels_lock);
	accel = wd_accel_of(dev);
	if (accel)
		ret = sysfs_emit(buf, "%d\n", READ_ONCE(accel->priority));
	mutex_unlock(&wd_accels_lock);
	return ret;
}

static ssize_t priority_store(struct device *dev,
			      struct device_attribute *attr, const char *buf,
			      size_t count)
{
	struct wd_accel *accel;
	ssize_t ret;
	int val;

	/* "5\0junk" is not 5: the number is everything that was written. */
	if (memchr(buf, '\0', count))
		return -EINVAL;
	ret = kstrtoint(buf, 10, &val);
	if (ret)
		return ret;
	mutex_lock(&wd_accels_lock);
	accel = wd_accel_of(dev);
	if (accel)
		WRITE_ONCE(accel->priority, val);
	mutex_unlock(&wd_accels_lock);
	return accel ? count : -ENODEV;
}
static DEVICE_ATTR_RW(priority);

static struct attribute *wd_parent_attrs[] = {
	&dev_attr_numa_zone.attr,
	&dev_attr_priority.attr,
	NULL,
};

static const struct attribute_group wd_parent_group = {
	.attrs = wd_parent_attrs,
};

/* ---------------------------------------------------------------------- */
/* mdev driver: an mdev is a queue */

static struct wd_mtype *to_wd_mtype(struct mdev_type *mtype)
{
	return container_of(mtype, struct wd_mtype, type);
}

static int wd_mdev_probe(struct mdev_device *mdev)
{
	struct wd_mtype *mt = to_wd_mtype(mdev->type);
	struct wd_accel *accel = mt->accel;
	struct wd_queue *q;
	int ret;

	q = vfio_alloc_device(wd_queue, vdev, &mdev->dev, &wd_vfio_ops);
	if (IS_ERR(q))
		return PTR_ERR(q);
	q->mdev = mdev;
	q->accel = accel;
	q->mtype = mt;
	wd_accel_get(accel);	/* dropped by wd_vfio_release() */

	/*
	 * Counted and listed before anyone can open it, in the same critical
	 * section as the state check: wd_accel_remove()'s kill loop sees
	 * every queue of a LIVE accelerator, none escapes it.
	 */
	mutex_lock(&accel->lock);
	if (accel->state != WD_ACCEL_LIVE)
		ret = -ENODEV;
	else if (accel->nr_queues >= accel->info.max_queues ||
		 (mt->capa->max_queues && mt->nr_queues >= mt->capa->max_queues))
		ret = -EUSERS;
	else
		ret = 0;
	if (!ret) {
		accel->nr_queues++;
		mt->nr_queues++;
		list_add_tail(&q->node, &accel->queues);
	}
	mutex_unlock(&accel->lock);
	if (ret)
		goto err_put;

	dev_set_drvdata(&mdev->dev, q);
	wd_debugfs_queue(q);
	ret = vfio_register_emulated_iommu_dev(&q->vdev);
	if (ret)
		goto err_unlist;
	return 0;

err_unlist:
	debugfs_remove_recursive(q->dbg);
	mutex_lock(&accel->lock);
	list_del(&q->node);
	accel->nr_queues--;
	mt->nr_queues--;
	mutex_unlock(&accel->lock);
err_put:
	vfio_put_device(&q->vdev);
	return ret;
}

static void wd_mdev_remove(struct mdev_device *mdev)
{
	struct wd_queue *q = dev_get_drvdata(&mdev->dev);
	struct wd_accel *accel = q->accel;

	/* Waits for every user; request() asks them to let go. */
	vfio_unregister_group_dev(&q->vdev);
	debugfs_remove_recursive(q->dbg);
	mutex_lock(&accel->lock);
	list_del(&q->node);
	accel->nr_queues--;
	q->mtype->nr_queues--;
	mutex_unlock(&accel->lock);
	vfio_put_device(&q->vdev);
}

static unsigned int wd_mdev_get_available(struct mdev_type *mtype)
{
	struct wd_mtype *mt = to_wd_mtype(mtype);
	struct wd_accel *accel = mt->accel;
	unsigned int avail;

	mutex_lock(&accel->lock);
	avail = accel->info.max_queues - accel->nr_queues;
	if (mt->capa->max_queues)
		avail = min(avail, mt->capa->max_queues - mt->nr_queues);
	if (accel->state != WD_ACCEL_LIVE)
		avail = 0;
	mutex_unlock(&accel->lock);
	return avail;
}

static ssize_t wd_mdev_show_description(struct mdev_type *mtype, char *buf)
{
	struct wd_mtype *mt = to_wd_mtype(mtype);

	return sysfs_emit(buf, "WrapDrive queue: %s, flags 0x%08x, %u entries\n",
			  mt->capa->algo_type, mt->capa->flags,
			  mt->accel->info.ring_entries);
}

static struct mdev_driver wd_mdev_driver = {
	.device_api = VFIO_DEVICE_API_PLATFORM_STRING,
	.driver = {
		.name = "wrapdrive_mdev",
		.owner = THIS_MODULE,
		.mod_name = KBUILD_MODNAME,
	},
	.probe = wd_mdev_probe,
	.remove = wd_mdev_remove,
	.get_available = wd_mdev_get_available,
	.show_description = wd_mdev_show_description,
};

/* ---------------------------------------------------------------------- */
/* Registration */

/*
 * No queue may be created or opened from now on, and every existing one
 * dies.  Returns whether the accelerator was registered.
 */
static bool wd_accel_kill(struct wd_accel *accel)
{
	struct wd_queue *q;
	bool was_live;

	mutex_lock(&accel->lock);
	was_live = accel->state == WD_ACCEL_LIVE;
	WRITE_ONCE(accel->state, WD_ACCEL_DEAD);
	list_for_each_entry(q, &accel->queues, node) {
		mutex_lock(&q->lock);
		wd_queue_kill_locked(q, 0);
		mutex_unlock(&q->lock);
	}
	mutex_unlock(&accel->lock);
	return was_live;
}

static int wd_check_info(struct device *parent,
			 const struct wd_accel_info *info,
			 const struct wd_accel_ops *ops)
{
	unsigned int i, j;

	if (!parent || !info || !ops || !info->name || !info->capas ||
	    !info->nr_capas || info->nr_capas > WD_MAX_CAPAS)
		return -EINVAL;
	if (!info->max_queues || info->max_queues > WD_MAX_QUEUES)
		return -EINVAL;
	if (info->ring_entries < 2 || info->ring_entries > 65536 ||
	    !is_power_of_2(info->ring_entries))
		return -EINVAL;
	for (i = 0; i < info->nr_capas; i++) {
		const struct wd_capa *c = &info->capas[i];

		if (!c->sysfs_name || !c->algo_type || !*c->sysfs_name ||
		    !*c->algo_type)
			return -EINVAL;
		for (j = 0; j < i; j++)
			if (!strcmp(c->sysfs_name, info->capas[j].sysfs_name))
				return -EINVAL;
	}
	return 0;
}

struct wd_accel *wd_accel_alloc(struct device *parent,
				const struct wd_accel_info *info,
				const struct wd_accel_ops *ops, void *priv)
{
	struct wd_accel *accel;
	unsigned int i;
	int ret;

	ret = wd_check_info(parent, info, ops);
	if (ret)
		return ERR_PTR(ret);
	accel = kzalloc(sizeof(*accel), GFP_KERNEL);
	if (!accel)
		return ERR_PTR(-ENOMEM);
	atomic_inc(&wd_nr_accels);
	accel->dev = parent;
	accel->ops = ops;
	accel->priv = priv;
	accel->priority = info->priority;
	accel->state = WD_ACCEL_NEW;
	mutex_init(&accel->lock);
	INIT_LIST_HEAD(&accel->queues);
	INIT_LIST_HEAD(&accel->node);
	INIT_DELAYED_WORK(&accel->free_work, wd_accel_free_work);
	kref_init(&accel->ref);
	atomic64_set(&accel->busy_ns, 0);

	/* Everything wd_accel_free() frees exists before info is copied. */
	accel->capas = kmemdup(info->capas,
			       info->nr_capas * sizeof(*info->capas),
			       GFP_KERNEL);
	accel->mtypes = kcalloc(info->nr_capas, sizeof(*accel->mtypes),
				GFP_KERNEL);
	accel->types = kcalloc(info->nr_capas, sizeof(*accel->types),
			       GFP_KERNEL);
	if (!accel->capas || !accel->mtypes || !accel->types)
		goto err_nomem;
	accel->info = *info;
	accel->info.capas = accel->capas;
	for (i = 0; i < info->nr_capas; i++) {
		struct wd_mtype *mt = &accel->mtypes[i];

		mt->accel = accel;
		mt->capa = &accel->capas[i];
		mt->type.sysfs_name = mt->capa->sysfs_name;
		mt->type.pretty_name = kasprintf(GFP_KERNEL, "%s %s", info->name,
						 mt->capa->sysfs_name);
		if (!mt->type.pretty_name)
			goto err_nomem;
		accel->types[i] = &mt->type;
	}
	wd_debugfs_accel(accel);
	return accel;

err_nomem:
	wd_accel_free(accel);
	return ERR_PTR(-ENOMEM);
}
EXPORT_SYMBOL_GPL(wd_accel_alloc);

int wd_accel_register(struct wd_accel *accel)
{
	char state[] = "MDEV_STATE=registered";
	char *envp[2];
	struct device *dev = accel->dev;
	unsigned int suppressed, i;
	int ret;

	if (accel->state != WD_ACCEL_NEW)
		return -EBUSY;
	mutex_lock(&wd_accels_lock);
	if (wd_accel_of(dev)) {
		mutex_unlock(&wd_accels_lock);
		return -EEXIST;
	}
	list_add_tail(&accel->node, &wd_accels);
	mutex_unlock(&wd_accels_lock);

	ret = device_add_group(dev, &wd_parent_group);
	if (ret)
		goto err_list;
	accel->parent_group = true;

	/*
	 * mdev_register_parent() announces MDEV_STATE=registered itself,
	 * before we could add capabilities/: hold the parent's uevents back
	 * and announce it once everything is there.
	 */
	mutex_lock(&accel->lock);
	WRITE_ONCE(accel->state, WD_ACCEL_LIVE);
	mutex_unlock(&accel->lock);
	suppressed = dev_get_uevent_suppress(dev);
	dev_set_uevent_suppress(dev, 1);
	ret = mdev_register_parent(&accel->parent, dev, &wd_mdev_driver,
				   accel->types, accel->info.nr_capas);
	if (ret)
		goto err_suppressed;
	for (i = 0; i < accel->info.nr_capas; i++) {
		ret = wd_caps_add(&accel->mtypes[i]);
		if (ret)
			goto err_parent;
	}
	dev_set_uevent_suppress(dev, suppressed);
	if (!suppressed) {
		envp[0] = state;
		envp[1] = NULL;
		kobject_uevent_env(&dev->kobj, KOBJ_CHANGE, envp);
	}
	dev_info(dev, "WrapDrive: %u capabilities, %u queues of %u entries\n",
		 accel->info.nr_capas, accel->info.max_queues,
		 accel->info.ring_entries);
	return 0;

err_parent:
	wd_accel_kill(accel);
	wd_caps_remove_all(accel);
	mdev_unregister_parent(&accel->parent);
err_suppressed:
	dev_set_uevent_suppress(dev, suppressed);
	device_remove_group(dev, &wd_parent_group);
	accel->parent_group = false;
err_list:
	wd_accel_kill(accel);
	mutex_lock(&wd_accels_lock);
	list_del_init(&accel->node);
	mutex_unlock(&wd_accels_lock);
	return ret;
}
EXPORT_SYMBOL_GPL(wd_accel_register);

void wd_accel_remove(struct wd_accel *accel)
{
	if (IS_ERR_OR_NULL(accel))
		return;
	if (wd_accel_kill(accel)) {
		wd_caps_remove_all(accel);
		/* Removes every mdev: waits for user space to close them. */
		mdev_unregister_parent(&accel->parent);
	}
	if (accel->parent_group)
		device_remove_group(accel->dev, &wd_parent_group);
	mutex_lock(&wd_accels_lock);
	list_del_init(&accel->node);
	mutex_unlock(&wd_accels_lock);
	debugfs_remove_recursive(accel->dbg);
	accel->dbg = NULL;
	wd_accel_put(accel);
}
EXPORT_SYMBOL_GPL(wd_accel_remove);

/* ---------------------------------------------------------------------- */
/* Module */

static int __init wd_init(void)
{
	int ret;

	wd_wq = alloc_workqueue("wrapdrive", WQ_UNBOUND, 0);
	if (!wd_wq)
		return -ENOMEM;
	wd_mem_set_limits();
	wd_debugfs_init();
	ret = mdev_register_driver(&wd_mdev_driver);
	if (ret)
		goto err;
	return 0;
err:
	wd_debugfs_exit();
	destroy_workqueue(wd_wq);
	return ret;
}

static void __exit wd_exit(void)
{
	mdev_unregister_driver(&wd_mdev_driver);
	/* Removed accelerators wait out their grace period first. */
	wait_var_event(&wd_nr_accels, !atomic_read(&wd_nr_accels));
	mmu_notifier_synchronize();
	destroy_workqueue(wd_wq);
	wd_debugfs_exit();
}

module_init(wd_init);
module_exit(wd_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("WrapDrive: accelerator queues for user space over vfio-mdev");
MODULE_SOFTDEP("pre: vfio mdev vfio_iommu_type1");
