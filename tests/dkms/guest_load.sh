#!/bin/sh
# In a guest booted with `tools/build.py run --no-modules`: load the modules
# DKMS built, the way /etc/modules-load.d/wrapdrive.conf would at boot
# (modprobe of each line, from the module tree BASE that holds the kernel's
# own modules and DKMS's updates/dkms/), check that what runs is DKMS's
# build, use it, unload it.
#   guest_load.sh BASE CONF
set -eu
BASE=$1
CONF=$2
KVER=$(uname -r)
DKMS_DIR=$BASE/lib/modules/$KVER/updates/dkms

grep -v '^#' "$CONF" | while read -r m; do
	[ -n "$m" ] || continue
	echo "modprobe $m"
	modprobe -d "$BASE" "$m"
done
# the running module is DKMS's build: the same GNU build-id note (kbuild links
# modules with --build-id) in /sys/module/<m>/notes and in the installed file
note=.note.gnu.build-id
for m in wrapdrive wd_dummy; do
	objcopy -O binary --only-section=$note "$DKMS_DIR/$m.ko" /tmp/wd-$m.note
	cmp -s /tmp/wd-$m.note /sys/module/$m/notes/$note ||
		{ echo "FAIL: the $m running is not $DKMS_DIR/$m.ko"; exit 1; }
	echo "loaded $m from DKMS: build-id $(od -An -tx1 -j16 /tmp/wd-$m.note | tr -d ' \n'), vermagic $(modinfo -F vermagic "$DKMS_DIR/$m.ko")"
done
grep -q '^vfio_iommu_type1 ' /proc/modules || { echo "FAIL: vfio_iommu_type1 not loaded"; exit 1; }
wrapdrive list
echo hello > /tmp/wd-dkms-input
got=$(wrapdrive run -q sha256 /tmp/wd-dkms-input | cut -d' ' -f1)
want=$(sha256sum /tmp/wd-dkms-input | cut -d' ' -f1)
[ "$got" = "$want" ] || { echo "FAIL: sha256 $got != $want"; exit 1; }
echo "sha256 through a DKMS-built queue: $got"
rmmod wd_dummy wrapdrive
echo "DKMS-OK"
