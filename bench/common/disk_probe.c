/* disk_probe.c — see disk_probe.h. */
#include "disk_probe.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_util.h"
#include "herald/clock.h"

int bench_fsync_probe(const char *dir, int n, double *p50_ms, double *max_ms, double *seconds)
{
    if (n <= 0)
        return -1;
    char path[4200];
    snprintf(path, sizeof path, "%s/fsync-probe", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return -1;
    char block[4096];
    memset(block, 'f', sizeof block);
    double *v = malloc((size_t)n * sizeof *v);
    int rc = v == NULL ? -1 : 0;
    int64_t start = hd_clock_ns();
    for (int i = 0; rc == 0 && i < n; i++) {
        int64_t t0 = hd_clock_ns();
        if (pwrite(fd, block, sizeof block, (off_t)(i % 16) * 4096) != (ssize_t)sizeof block ||
            fdatasync(fd) < 0)
            rc = -1;
        else
            v[i] = (double)(hd_clock_ns() - t0) / 1e6;
    }
    double all = (double)(hd_clock_ns() - start) / 1e9;
    close(fd);
    unlink(path);
    if (rc == 0) {
        qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
        *p50_ms = v[n / 2];
        *max_ms = v[n - 1];
        if (seconds != NULL)
            *seconds = all;
    }
    free(v);
    return rc;
}
