// SPDX-License-Identifier: GPL-2.0
/* libwd: the calling thread's last error, in words. */
#include <stdio.h>
#include <string.h>

#include "wd_priv.h"

static __thread char wd_errbuf[512];

/* Record a message for wd_errmsg() and return -err. */
int wd_err(int err, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	vsnprintf(wd_errbuf, sizeof(wd_errbuf), fmt, ap);
	va_end(ap);
	n = strlen(wd_errbuf);
	if (err && n + 3 < sizeof(wd_errbuf))
		snprintf(wd_errbuf + n, sizeof(wd_errbuf) - n, ": %s", strerror(err));
	return -err;
}

int wd_fail(int ret, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(wd_errbuf, sizeof(wd_errbuf), fmt, ap);
	va_end(ap);
	return ret;
}

const char *wd_errmsg(void)
{
	return wd_errbuf;
}
