/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The check counter libwd's C tests share: CHECK() counts, and on failure
 * names the place, the condition and libwd's last error message; a test's
 * main() ends with CHECK_REPORT(), whose line the VM suite reads.
 */
#ifndef WD_TESTS_CHECK_H
#define WD_TESTS_CHECK_H

#include <stdio.h>

#include "wd.h"

static int failures, checks;

#define CHECK(cond) do { \
	checks++; \
	if (!(cond)) { \
		failures++; \
		fprintf(stderr, "%s:%d: %s: CHECK(%s) failed (%s)\n", __FILE__, __LINE__, \
			__func__, #cond, wd_errmsg()); \
	} \
} while (0)

#define CHECK_REPORT() printf("%d checks, %d failed\n", checks, failures)

#endif /* WD_TESTS_CHECK_H */
