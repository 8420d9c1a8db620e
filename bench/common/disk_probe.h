/* disk_probe.h — what a durable write costs on the disk under a directory right now: every
 * SQLite commit at synchronous=FULL (and every RabbitMQ flush of persistent messages) pays at
 * least one such write + fdatasync, and on a shared machine it moves from minute to minute. */
#ifndef HERALD_BENCH_DISK_PROBE_H
#define HERALD_BENCH_DISK_PROBE_H

/* n times: a 4 KiB pwrite (cycling over 16 blocks of one file in dir) + fdatasync. Writes the
 * median and the worst of the n in ms, and the wall time of all n in seconds (seconds may be
 * NULL). The file is removed. 0, or -1 (errno) when the file cannot be written. */
int bench_fsync_probe(const char *dir, int n, double *p50_ms, double *max_ms, double *seconds);

#endif
