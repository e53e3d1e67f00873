// SPDX-License-Identifier: GPL-2.0
/*
 * libwd: choosing the mdev type a queue is created from, and reclaiming
 * the queues of dead processes.
 *
 * Ranking (the seed's rules, then ours):
 *   1. the type's algo_type equals the request's;
 *   2. the type's flags cover the requested ones; a WD_WEAK_ORDER type is
 *      taken only when the request allows weak order;
 *   3. the device's priority is in 1..100 (others are never chosen),
 *      smaller first;
 *   4. smaller NUMA distance from the calling CPU's node first;
 *   5. more free instances first;
 *   6. fewer flag bits differing from the request's, then the names.
 * Creating falls back to the next candidate when one has no free instance
 * or its create fails with ENOSPC, EDQUOT or EUSERS.
 *
 * Our mdevs are named 57447276-xxxx-4xxx-8xxx-<creator pid, 12 hex digits>;
 * one whose creator is dead and whose VFIO group nobody holds open (the
 * open fails with EBUSY while someone does) is removed before creating.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "wd_priv.h"

#define UUID_PREFIX		"57447276-"
#define UNKNOWN_DISTANCE	255
#define MAX_NODES		64
#define MAX_CANDS		256

/* snprintf for paths and names: truncation is checked by the reads that follow. */
static void fmt(char *buf, size_t len, const char *f, ...) __attribute__((format(printf, 3, 4)));

static void fmt(char *buf, size_t len, const char *f, ...)
{
	va_list ap;

	va_start(ap, f);
	vsnprintf(buf, len, f, ap);
	va_end(ap);
}

static const char *root_or_sys(const char *root)
{
	return root && *root ? root : "/sys";
}

static int read_text(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "r");
	size_t n;

	if (!f)
		return -errno;
	n = fread(buf, 1, len - 1, f);
	fclose(f);
	buf[n] = 0;
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = 0;
	return (int)n;
}

/* The integer in a sysfs file (base 0: hex with 0x); 0 when read, -1 if not. */
static int read_long(const char *path, int base, long *out)
{
	char buf[64], *end;

	if (read_text(path, buf, sizeof(buf)) <= 0)
		return -1;
	errno = 0;
	*out = strtol(buf, &end, base);
	return (errno || end == buf || *end) ? -1 : 0;
}

struct wd_node_info {
	int n;
	int node[MAX_NODES];
	cpu_set_t cpus[MAX_NODES];
	int ndist[MAX_NODES];
	int dist[MAX_NODES][MAX_NODES];
};

static void parse_cpulist(const char *s, cpu_set_t *set)
{
	CPU_ZERO(set);
	while (*s) {
		char *end;
		long lo = strtol(s, &end, 10), hi = lo;

		if (end == s)
			break;
		s = end;
		if (*s == '-') {
			hi = strtol(s + 1, &end, 10);
			s = end;
		}
		for (; lo <= hi && lo < CPU_SETSIZE; lo++)
			if (lo >= 0)
				CPU_SET(lo, set);
		while (*s == ',' || *s == ' ')
			s++;
	}
}

static void read_nodes(const char *root, struct wd_node_info *ni)
{
	char path[PATH_MAX], buf[4096];
	struct dirent *e;
	DIR *d;

	ni->n = 0;
	fmt(path, sizeof(path), "%s/devices/system/node", root);
	d = opendir(path);
	if (!d)
		return;
	while ((e = readdir(d)) && ni->n < MAX_NODES) {
		char *end;
		long node;
		int k = ni->n;

		if (strncmp(e->d_name, "node", 4) || !e->d_name[4])
			continue;
		node = strtol(e->d_name + 4, &end, 10);
		if (*end || node < 0)
			continue;
		ni->node[k] = (int)node;
		fmt(path, sizeof(path), "%s/devices/system/node/%s/cpulist", root, e->d_name);
		if (read_text(path, buf, sizeof(buf)) < 0)
			buf[0] = 0;
		parse_cpulist(buf, &ni->cpus[k]);
		ni->ndist[k] = -1;	/* no distance row */
		fmt(path, sizeof(path), "%s/devices/system/node/%s/distance", root, e->d_name);
		if (read_text(path, buf, sizeof(buf)) >= 0) {
			char *s = buf;
			int m = 0;

			for (;;) {
				long v = strtol(s, &end, 10);

				if (end == s || m >= MAX_NODES)
					break;
				ni->dist[k][m++] = (int)v;
				s = end;
			}
			/* a row that does not parse to the end is no row */
			while (*s == ' ')
				s++;
			ni->ndist[k] = *s ? -1 : m;
		}
		ni->n++;
	}
	closedir(d);
}

static int node_distance(const struct wd_node_info *ni, int node, int zone)
{
	int k;

	if (node < 0 || zone < 0)
		return node < 0 ? 0 : UNKNOWN_DISTANCE;
	for (k = 0; k < ni->n; k++) {
		if (ni->node[k] != node)
			continue;
		if (ni->ndist[k] < 0 || zone >= ni->ndist[k])
			break;
		return ni->dist[k][zone];
	}
	return zone == node ? 10 : UNKNOWN_DISTANCE;
}

/*
 * The caller's node: the one node holding every CPU it may run on, else
 * the node of the CPU it runs on now; -1 without NUMA information.
 */
int wd_sel_node(const char *root)
{
	struct wd_node_info *ni = calloc(1, sizeof(*ni));
	cpu_set_t mine, both;
	int k, node = -1, cpu;

	if (!ni)
		return -1;
	read_nodes(root_or_sys(root), ni);
	if (sched_getaffinity(0, sizeof(mine), &mine))
		CPU_ZERO(&mine);
	for (k = 0; k < ni->n && node < 0; k++) {
		CPU_AND(&both, &mine, &ni->cpus[k]);
		if (CPU_COUNT(&mine) && CPU_EQUAL(&both, &mine))
			node = ni->node[k];
	}
	cpu = sched_getcpu();
	for (k = 0; k < ni->n && node < 0 && cpu >= 0; k++)
		if (CPU_ISSET(cpu, &ni->cpus[k]))
			node = ni->node[k];
	free(ni);
	return node;
}

static int flags_match(__u32 type_flags, __u32 wanted)
{
	__u32 required = wanted & ~WD_WEAK_ORDER;

	if ((type_flags & required) != required)
		return 0;
	return !((type_flags & WD_WEAK_ORDER) && !(wanted & WD_WEAK_ORDER));
}

static int entry_names(const char *path, char ***names)
{
	struct dirent **list;
	int n, i, k = 0;

	n = scandir(path, &list, NULL, alphasort);
	if (n < 0)
		return 0;
	*names = calloc((size_t)n + 1, sizeof(char *));
	for (i = 0; i < n; i++) {
		if (*names && list[i]->d_name[0] != '.')
			(*names)[k++] = strdup(list[i]->d_name);
		free(list[i]);
	}
	free(list);
	return *names ? k : 0;
}

static void free_names(char **names, int n)
{
	int i;

	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* Call fn for every WrapDrive type of every selectable-or-not device. */
typedef int (*type_fn)(const char *dev_path, const char *dev, const char *type, void *arg);

static int for_each_type(const char *root, type_fn fn, void *arg)
{
	char bus[PATH_MAX], path[PATH_MAX], tpath[PATH_MAX];
	char **devs = NULL, **types = NULL;
	int nd, nt, i, j, ret = 0;

	fmt(bus, sizeof(bus), "%s/class/mdev_bus", root);
	nd = entry_names(bus, &devs);
	for (i = 0; i < nd && !ret; i++) {
		fmt(path, sizeof(path), "%s/%s", bus, devs[i]);
		fmt(tpath, sizeof(tpath), "%s/mdev_supported_types", path);
		types = NULL;
		nt = entry_names(tpath, &types);
		for (j = 0; j < nt && !ret; j++)
			ret = fn(path, devs[i], types[j], arg);
		free_names(types, nt);
	}
	free_names(devs, nd);
	return ret;
}

struct rank_ctx {
	const struct wd_capa *capa;
	int node;
	struct wd_node_info *ni;
	struct wd_sel_cand *c;
	int n, max;
};

/*
 * Fill *c from the type `type` of device dev (at dev_path) when it matches
 * capa (any WrapDrive type when capa is NULL): 0, or 1 when it does not
 * match or its device is out of 1..100.
 */
static int describe_type(const char *dev_path, const char *dev, const char *type,
			 const struct wd_capa *capa, const struct wd_node_info *ni, int node,
			 struct wd_sel_cand *c)
{
	char path[PATH_MAX], alg[64];
	long v;

	fmt(path, sizeof(path), "%s/mdev_supported_types/%s/capabilities/algo_type",
		 dev_path, type);
	if (read_text(path, alg, sizeof(alg)) < 0 || (capa && strcmp(alg, capa->alg)))
		return 1;
	memset(c, 0, sizeof(*c));
	fmt(path, sizeof(path), "%s/priority", dev_path);
	if (read_long(path, 10, &v) || v < 1 || v > 100)
		return 1;	/* out of 1..100: never selected */
	c->priority = (int)v;
	fmt(path, sizeof(path), "%s/mdev_supported_types/%s/capabilities/flags",
		 dev_path, type);
	c->flags = read_long(path, 0, &v) ? 0 : (__u32)v;
	if (capa && !flags_match(c->flags, capa->flags))
		return 1;
	fmt(path, sizeof(path), "%s/numa_zone", dev_path);
	c->numa_zone = read_long(path, 10, &v) ? -1 : (int)v;
	fmt(path, sizeof(path), "%s/mdev_supported_types/%s/available_instances",
		 dev_path, type);
	c->available = read_long(path, 10, &v) ? 0 : (int)v;
	c->distance = ni ? node_distance(ni, node, c->numa_zone) : 0;
	fmt(c->parent, sizeof(c->parent), "%s", dev);
	fmt(c->mdev_type, sizeof(c->mdev_type), "%s", type);
	fmt(c->alg, sizeof(c->alg), "%s", alg);
	fmt(c->type_path, sizeof(c->type_path), "%s/mdev_supported_types/%s",
		 dev_path, type);
	return 0;
}

static int rank_one(const char *dev_path, const char *dev, const char *type, void *arg)
{
	struct rank_ctx *rc = arg;

	if (rc->n >= rc->max)
		return 0;
	if (!describe_type(dev_path, dev, type, rc->capa, rc->ni, rc->node, &rc->c[rc->n]))
		rc->n++;
	return 0;
}

static __u32 wanted_flags;

static int cand_cmp(const void *a, const void *b)
{
	const struct wd_sel_cand *x = a, *y = b;
	int d;

	if (x->priority != y->priority)
		return x->priority - y->priority;
	if (x->distance != y->distance)
		return x->distance - y->distance;
	if (x->available != y->available)
		return y->available - x->available;
	d = __builtin_popcount(x->flags ^ wanted_flags) -
	    __builtin_popcount(y->flags ^ wanted_flags);
	if (d)
		return d;
	d = strcmp(x->parent, y->parent);
	return d ? d : strcmp(x->mdev_type, y->mdev_type);
}

static pthread_mutex_t sort_lock = PTHREAD_MUTEX_INITIALIZER;

int wd_sel_rank(const char *root, const struct wd_capa *capa, int node,
		struct wd_sel_cand *out, int max)
{
	struct rank_ctx rc = { .capa = capa, .node = node, .c = out, .max = max };

	if (!capa || !capa->alg || !out || max < 0)
		return wd_fail(-EINVAL, "wd_sel_rank: bad arguments");
	rc.ni = calloc(1, sizeof(*rc.ni));
	if (!rc.ni)
		return wd_err(ENOMEM, "wd_sel_rank");
	root = root_or_sys(root);
	read_nodes(root, rc.ni);
	for_each_type(root, rank_one, &rc);
	free(rc.ni);
	pthread_mutex_lock(&sort_lock);	/* qsort has no context argument */
	wanted_flags = capa->flags;
	qsort(out, (size_t)rc.n, sizeof(*out), cand_cmp);
	pthread_mutex_unlock(&sort_lock);
	return rc.n;
}

void wd_sel_new_uuid(int pid, char *uuid)
{
	unsigned char r[8] = { 0 };

	if (getrandom(r, sizeof(r), 0) != sizeof(r)) {
		unsigned long x = (unsigned long)time(NULL) ^ ((unsigned long)getpid() << 16) ^
				  (unsigned long)(uintptr_t)uuid;

		memcpy(r, &x, sizeof(r));
	}
	fmt(uuid, 37, UUID_PREFIX "%02x%02x-4%01x%02x-8%01x%02x-%012llx",
		 r[0], r[1], r[2] & 0xf, r[3], r[4] & 0xf, r[5],
		 (unsigned long long)pid & 0xffffffffffffULL);
}

int wd_sel_is_ours(const char *name)
{
	return name && strlen(name) == 36 &&
	       !strncasecmp(name, UUID_PREFIX, strlen(UUID_PREFIX));
}

int wd_sel_group(const char *root, const char *uuid)
{
	char path[PATH_MAX], link[PATH_MAX], *base, *end;
	ssize_t n;
	long g;

	fmt(path, sizeof(path), "%s/bus/mdev/devices/%s/iommu_group",
		 root_or_sys(root), uuid);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return wd_err(errno, "mdev %s has no iommu_group (is vfio_iommu_type1 loaded?)",
			      uuid);
	link[n] = 0;
	base = strrchr(link, '/');
	base = base ? base + 1 : link;
	g = strtol(base, &end, 10);
	if (*end || end == base || g < 0 || g > INT_MAX)
		return wd_fail(-EINVAL, "mdev %s: iommu_group link %s", uuid, link);
	return (int)g;
}

int wd_sel_remove(const char *root, const char *uuid)
{
	char path[PATH_MAX];
	int fd, ret = 0;

	fmt(path, sizeof(path), "%s/bus/mdev/devices/%s/remove", root_or_sys(root), uuid);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : wd_err(errno, "remove mdev %s", uuid);
	if (write(fd, "1", 1) != 1)
		ret = wd_err(errno, "remove mdev %s", uuid);
	close(fd);
	return ret;
}

static int real_alive(int pid)
{
	return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

static int real_busy(int group)
{
	char path[64];
	int fd;

	fmt(path, sizeof(path), "/dev/vfio/%d", group);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return errno == EBUSY;
	close(fd);
	return 0;
}

struct reclaim_ctx {
	const char *root;
	const struct wd_sel_hooks *h;
	char *removed;
	size_t len;
	int n;
};

static int reclaim_one(const char *dev_path, const char *dev, const char *type, void *arg)
{
	struct reclaim_ctx *rc = arg;
	const struct wd_sel_hooks *h = rc->h;
	char path[PATH_MAX], **names = NULL;
	int n, i;

	(void)dev;
	fmt(path, sizeof(path), "%s/mdev_supported_types/%s/devices", dev_path, type);
	n = entry_names(path, &names);
	for (i = 0; i < n; i++) {
		long long pid;
		int group, alive, busy;

		if (!wd_sel_is_ours(names[i]))
			continue;
		pid = strtoll(names[i] + 24, NULL, 16);
		if (pid <= 0 || pid > INT_MAX)
			continue;
		alive = h && h->alive ? h->alive((int)pid, h->arg) : real_alive((int)pid);
		if (alive)
			continue;
		group = wd_sel_group(rc->root, names[i]);
		if (group < 0)
			continue;
		busy = h && h->busy ? h->busy(group, h->arg) : real_busy(group);
		if (busy || wd_sel_remove(rc->root, names[i]))
			continue;
		rc->n++;
		if (rc->removed && strlen(rc->removed) + 38 < rc->len) {
			strcat(rc->removed, names[i]);
			strcat(rc->removed, "\n");
		}
	}
	free_names(names, n);
	return 0;
}

int wd_sel_reclaim(const char *root, const struct wd_sel_hooks *hooks,
		   char *removed, size_t removed_len)
{
	struct reclaim_ctx rc = { root_or_sys(root), hooks, removed, removed_len, 0 };

	if (removed && removed_len)
		removed[0] = 0;
	for_each_type(rc.root, reclaim_one, &rc);
	return rc.n;
}

static int real_create(const char *path, const char *uuid)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, uuid, strlen(uuid));
	n = n < 0 ? -errno : 0;
	close(fd);
	return (int)n;
}

int wd_sel_create(const char *root, const struct wd_capa *capa, int node,
		  const struct wd_sel_hooks *hooks, struct wd_sel_cand *cand, char *uuid)
{
	struct wd_sel_cand *c;
	char tried[1024] = "";
	int n, i, ret;

	root = root_or_sys(root);
	if (!capa || !capa->alg || !cand || !uuid)
		return wd_fail(-EINVAL, "wd_sel_create: bad arguments");
	c = calloc(MAX_CANDS, sizeof(*c));
	if (!c)
		return wd_err(ENOMEM, "wd_sel_create");
	wd_sel_reclaim(root, hooks, NULL, 0);
	n = wd_sel_rank(root, capa, node, c, MAX_CANDS);
	if (n <= 0) {
		free(c);
		return n < 0 ? n : (wd_fail(-ENODEV, "no device offers algo_type '%s' with flags %#x",
					   capa->alg, capa->flags));
	}
	for (i = 0; i < n; i++) {
		char path[PATH_MAX];

		fmt(tried + strlen(tried), sizeof(tried) - strlen(tried), "%s%s/%s",
			 i ? ", " : "", c[i].parent, c[i].mdev_type);
		if (c[i].available <= 0)
			continue;
		wd_sel_new_uuid(getpid(), uuid);
		fmt(path, sizeof(path), "%s/create", c[i].type_path);
		ret = hooks && hooks->create ? hooks->create(path, uuid, hooks->arg)
					     : real_create(path, uuid);
		if (ret == -ENOSPC || ret == -EDQUOT || ret == -EUSERS)
			continue;
		if (ret) {
			free(c);
			return wd_err(-ret, "create mdev on %s", c[i].type_path);
		}
		*cand = c[i];
		free(c);
		return 0;
	}
	free(c);
	uuid[0] = 0;
	return wd_fail(-ENOSPC, "every device offering '%s' is out of queues (tried %s)",
		      capa->alg, tried);
}

/* A UUID as the mdev core takes it: 8-4-4-4-12 hex digits. */
static int uuid_valid(const char *u)
{
	static const int dash[] = { 8, 13, 18, 23 };
	int i, k = 0;

	if (!u || strlen(u) != 36)
		return 0;
	for (i = 0; i < 36; i++) {
		if (k < 4 && i == dash[k]) {
			if (u[i] != '-')
				return 0;
			k++;
		} else if (!strchr("0123456789abcdefABCDEF", u[i])) {
			return 0;
		}
	}
	return 1;
}

int wd_sel_lookup(const char *root, const struct wd_capa *capa, const char *uuid,
		  struct wd_sel_cand *cand)
{
	char path[PATH_MAX], type_path[PATH_MAX], dev_path[PATH_MAX], *type, *dev, *slash;

	root = root_or_sys(root);
	if (!uuid_valid(uuid) || !cand)
		return wd_fail(-EINVAL, "'%s' is not a UUID (8-4-4-4-12 hex digits)",
			       uuid ? uuid : "(null)");
	fmt(path, sizeof(path), "%s/bus/mdev/devices/%s/mdev_type", root, uuid);
	if (!realpath(path, type_path))
		return wd_err(errno == ENOENT ? ENOENT : errno, "no mdev %s (%s)", uuid, path);
	/* .../<device>/mdev_supported_types/<type> */
	slash = strrchr(type_path, '/');
	if (!slash)
		return wd_fail(-EINVAL, "mdev %s: odd type path %s", uuid, type_path);
	type = slash + 1;
	fmt(dev_path, sizeof(dev_path), "%.*s", (int)(slash - type_path), type_path);
	slash = strrchr(dev_path, '/');
	if (!slash || strcmp(slash + 1, "mdev_supported_types"))
		return wd_fail(-EINVAL, "mdev %s: odd type path %s", uuid, type_path);
	*slash = 0;
	dev = strrchr(dev_path, '/');
	dev = dev ? dev + 1 : dev_path;
	if (describe_type(dev_path, dev, type, NULL, NULL, -1, cand))
		return wd_fail(-EINVAL, "mdev %s (type %s) is not a WrapDrive queue, or its "
			       "device is out of priority 1..100", uuid, type);
	if (capa && capa->alg && strcmp(cand->alg, capa->alg))
		return wd_fail(-EINVAL, "queue %s is a '%s' queue, not '%s'", uuid, cand->alg,
			       capa->alg);
	if (capa && !flags_match(cand->flags, capa->flags))
		return wd_fail(-EINVAL, "queue %s has flags %#x, which do not cover %#x", uuid,
			       cand->flags, capa->flags);
	return 0;
}

static int real_open_group(int group)
{
	char path[64];
	int fd;

	fmt(path, sizeof(path), "/dev/vfio/%d", group);
	fd = open(path, O_RDWR | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

int wd_sel_provisioned(const char *root, const struct wd_capa *capa, int node,
		       const struct wd_sel_hooks *hooks, struct wd_sel_cand *cand,
		       char *uuid)
{
	struct wd_sel_cand *c;
	int n, i, j, fd = -ENOENT;

	root = root_or_sys(root);
	if (!capa || !capa->alg || !cand || !uuid)
		return wd_fail(-EINVAL, "wd_sel_provisioned: bad arguments");
	c = calloc(MAX_CANDS, sizeof(*c));
	if (!c)
		return wd_err(ENOMEM, "wd_sel_provisioned");
	n = wd_sel_rank(root, capa, node, c, MAX_CANDS);
	for (i = 0; i < n && fd < 0; i++) {
		char path[PATH_MAX], **names = NULL;
		int nn;

		fmt(path, sizeof(path), "%s/devices", c[i].type_path);
		nn = entry_names(path, &names);
		for (j = 0; j < nn && fd < 0; j++) {
			int group;

			if (wd_sel_is_ours(names[j]) || !uuid_valid(names[j]))
				continue;
			group = wd_sel_group(root, names[j]);
			if (group < 0)
				continue;
			/* EBUSY: someone holds it; EACCES: not given to us */
			fd = hooks && hooks->open_group ? hooks->open_group(group, hooks->arg)
						       : real_open_group(group);
			if (fd >= 0) {
				*cand = c[i];
				fmt(uuid, 37, "%s", names[j]);
			}
		}
		free_names(names, nn);
	}
	free(c);
	if (fd < 0) {
		uuid[0] = 0;
		return wd_fail(-ENOENT, "no free provisioned queue for '%s'", capa->alg);
	}
	return fd;
}
