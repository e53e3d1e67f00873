/* SPDX-License-Identifier: GPL-2.0 */
/*
 * WrapDrive: the differences between the kernels it supports (6.1, 6.12).
 *
 * Kbuild probes the headers of the target kernel and defines:
 *   HAVE_VM_FLAGS_SET            vm_flags_set()/_clear() exist; vma->vm_flags is
 *                                read-only (6.3+)
 *   HAVE_VFIO_FREE_DEVICE        vfio_device_ops.release must call
 *                                vfio_free_device() (6.1)
 *   HAVE_EVENTFD_SIGNAL_NOCOUNT  eventfd_signal() takes no count (6.8+)
 *   HAVE_VFIO_IOMMUFD_EMULATED   the emulated iommufd ops exist (6.2+),
 *                                needed when CONFIG_IOMMUFD is set
 */
#ifndef _WD_COMPAT_H
#define _WD_COMPAT_H

#include <linux/eventfd.h>
#include <linux/mm.h>
#include <linux/mdev.h>
#include <linux/sysfs.h>
#include <linux/vfio.h>

static inline void wd_vm_flags_set(struct vm_area_struct *vma,
				   vm_flags_t flags)
{
#ifdef HAVE_VM_FLAGS_SET
	vm_flags_set(vma, flags);
#else
	vma->vm_flags |= flags;
#endif
}

static inline void wd_vm_flags_clear(struct vm_area_struct *vma,
				     vm_flags_t flags)
{
#ifdef HAVE_VM_FLAGS_SET
	vm_flags_clear(vma, flags);
#else
	vma->vm_flags &= ~flags;
#endif
}

static inline void wd_eventfd_signal(struct eventfd_ctx *ctx)
{
#ifdef HAVE_EVENTFD_SIGNAL_NOCOUNT
	eventfd_signal(ctx);
#else
	eventfd_signal(ctx, 1);
#endif
}

/* The end of vfio_device_ops.release. */
static inline void wd_vfio_free_device(struct vfio_device *vdev)
{
#ifdef HAVE_VFIO_FREE_DEVICE
	vfio_free_device(vdev);
#endif
}

#if defined(HAVE_VFIO_IOMMUFD_EMULATED) && IS_ENABLED(CONFIG_IOMMUFD)
#define WD_VFIO_IOMMUFD_OPS					\
	.bind_iommufd = vfio_iommufd_emulated_bind,		\
	.unbind_iommufd = vfio_iommufd_emulated_unbind,		\
	.attach_ioas = vfio_iommufd_emulated_attach_ioas,	\
	.detach_ioas = vfio_iommufd_emulated_detach_ioas,
#else
#define WD_VFIO_IOMMUFD_OPS
#endif

/*
 * Attributes on an mdev type kobject are dispatched by the mdev core's own
 * sysfs_ops, which expect its private struct mdev_type_attribute
 * (drivers/vfio/mdev/mdev_private.h).  Same layout in 6.1 and 6.12.
 */
struct wd_mdev_type_attribute {
	struct attribute attr;
	ssize_t (*show)(struct mdev_type *mtype,
			struct wd_mdev_type_attribute *attr, char *buf);
	ssize_t (*store)(struct mdev_type *mtype,
			 struct wd_mdev_type_attribute *attr, const char *buf,
			 size_t count);
};

#define WD_MDEV_TYPE_ATTR_RO(_name) \
	struct wd_mdev_type_attribute wd_mdev_type_attr_##_name = __ATTR_RO(_name)

#endif /* _WD_COMPAT_H */
