/* store_sqlite_turns.c — SQLite's write lock handed to the writer that waits; see
 * store_sqlite_turns.h.
 *
 * The file is a header and HD_TURNS_SLOTS slots, all C11 atomics in a MAP_SHARED mapping, so
 * threads of one process and other processes see the same words. A slot is taken by a
 * compare-and-swap of its pid from 0; `waiting` counts the taken slots, so that a connection
 * finds "nobody waits" with one load, which is every transaction's cost when the lock is not
 * contended. Two futex words, each bumped before a wake-up so that a sleeper that looked
 * just before cannot miss it: `freed`, which a commit bumps to wake ONE waiter (waking them
 * all made every waiter try SQLite's lock at each commit, and only one can have it: eight
 * writers' POST /notifications cost three times the CPU), and `left`, which a waiter leaving
 * its slot bumps to wake every writer standing aside (they are few, and each looks again). */
#include "herald/store_sqlite_turns.h"

#include "herald/clock.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

/* "HDT2" in the file's first four bytes (little endian). The number is the layout's version:
 * a program with another one finds a magic it does not know and polls, rather than sleep on
 * words the other never wakes. */
#define TURNS_MAGIC 0x32544448u
#define TURNS_SIZE  4096
#define SUFFIX      HD_TURNS_SUFFIX

typedef struct turn_slot {
    _Atomic int32_t pid; /* 0: free */
    _Atomic int32_t pad;
    _Atomic int64_t since_ns; /* hd_clock_ns, one clock for every process; 0 while written */
} turn_slot;

typedef struct turns_file {
    _Atomic uint32_t magic;
    _Atomic uint32_t freed;  /* futex word: the lock was freed (wakes one waiter) */
    _Atomic int32_t waiting; /* slots taken (a hint: a slot is the truth) */
    _Atomic uint32_t left;   /* futex word: a waiter left its slot (wakes those standing aside) */
    turn_slot slots[HD_TURNS_SLOTS];
} turns_file;

_Static_assert(sizeof(turns_file) <= TURNS_SIZE, "the turns file is one page");
_Static_assert(sizeof(_Atomic uint32_t) == 4, "a futex word is 32 bits");

struct hd_turns {
    turns_file *f;
    int slot;         /* the slot this connection holds, -1 none */
    int32_t slot_pid; /* the pid written into it */
    int in_line;      /* hd_turns_set_in_line: its waits take a slot */
    int waited;       /* this connection waited for the lock since it last started a write */
    uint64_t yields, wakes;
    int64_t aside_ns; /* time stood aside, in all */
};

/* ---- sleeping and waking ---------------------------------------------------------------- */

static void sleep_ns(int64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000), .tv_nsec = (long)(ns % 1000000000)};
    nanosleep(&ts, NULL);
}

/* Sleep until *word is no longer seen, a wake-up, or ns: a spurious return is harmless,
 * every caller looks again. */
static void word_wait(_Atomic uint32_t *word, uint32_t seen, int64_t ns)
{
#ifdef __linux__
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000), .tv_nsec = (long)(ns % 1000000000)};
    /* Not FUTEX_PRIVATE_FLAG: the word is in a file mapping shared between processes. */
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, seen, &ts, NULL, 0);
#else
    (void)word;
    (void)seen;
    sleep_ns(ns);
#endif
}

static void bump_and_wake(_Atomic uint32_t *word, int how_many)
{
    atomic_fetch_add(word, 1);
#ifdef __linux__
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, how_many, NULL, NULL, 0);
#else
    (void)how_many;
#endif
}

/* ---- open and close --------------------------------------------------------------------- */

int hd_turns_open(const char *db_path, hd_turns **out, hd_error *err)
{
    *out = NULL;
    if (db_path == NULL || db_path[0] == '\0' || strcmp(db_path, ":memory:") == 0 ||
        strncmp(db_path, "file:", 5) == 0)
        return HD_OK;
    size_t n = strlen(db_path);
    char *path = malloc(n + sizeof SUFFIX);
    hd_turns *t = calloc(1, sizeof *t);
    if (path == NULL || t == NULL) {
        free(path);
        free(t);
        return hd_error_set(err, HD_ENOMEM, NULL);
    }
    memcpy(path, db_path, n);
    memcpy(path + n, SUFFIX, sizeof SUFFIX);
    /* The database's own permissions, as SQLite gives its -wal and -shm files: whoever may
     * write the database may take turns on it. O_NOFOLLOW: never a file a link points to. */
    struct stat st;
    mode_t mode = stat(db_path, &st) == 0 ? (st.st_mode & 0666) : 0600;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, mode);
    free(path);
    void *map = MAP_FAILED;
    if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
        (st.st_size >= TURNS_SIZE || ftruncate(fd, TURNS_SIZE) == 0))
        map = mmap(NULL, TURNS_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (fd >= 0)
        close(fd);
    if (map == MAP_FAILED) {
        free(t);
        return HD_OK; /* no turns: the busy handler polls */
    }
    t->f = map;
    /* A new file is all zeros: the first opener writes the magic. Anything else was not
     * written by herald (or by another version of it): leave it alone. */
    uint32_t magic = 0;
    if (!atomic_compare_exchange_strong(&t->f->magic, &magic, TURNS_MAGIC) &&
        magic != TURNS_MAGIC) {
        munmap(map, TURNS_SIZE);
        free(t);
        return HD_OK;
    }
    t->slot = -1;
    *out = t;
    return HD_OK;
}

void hd_turns_close(hd_turns *t)
{
    if (t == NULL)
        return;
    hd_turns_done(t);
    munmap(t->f, TURNS_SIZE);
    free(t);
}

/* ---- slots ------------------------------------------------------------------------------- */

static int take_slot(hd_turns *t, int32_t pid, int64_t since_ns)
{
    for (int i = 0; i < HD_TURNS_SLOTS; i++) {
        turn_slot *s = &t->f->slots[i];
        int32_t free_pid = 0;
        if (atomic_load_explicit(&s->pid, memory_order_relaxed) != 0 ||
            !atomic_compare_exchange_strong(&s->pid, &free_pid, pid))
            continue;
        atomic_store(&s->since_ns, since_ns ? since_ns : hd_clock_ns());
        atomic_fetch_add(&t->f->waiting, 1);
        t->slot = i;
        t->slot_pid = pid;
        return HD_OK;
    }
    return HD_EBUSY;
}

/* Free slot i if it still holds pid (its owner leaving, or a dead owner's slot found). The
 * pid is looked at first, so that a slot taken by someone else meanwhile keeps its start. */
static int free_slot(turns_file *f, int i, int32_t pid)
{
    turn_slot *s = &f->slots[i];
    if (atomic_load(&s->pid) != pid)
        return 0;
    atomic_store(&s->since_ns, 0);
    if (!atomic_compare_exchange_strong(&s->pid, &pid, 0))
        return 0;
    atomic_fetch_sub(&f->waiting, 1);
    return 1;
}

static int alive(int32_t pid)
{
    return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

/* Whether a writer other than t waits now, and has waited for HD_TURNS_PATIENCE_US but not
 * yet HD_TURNS_STALE_MS: one to stand aside for. Slots of dead processes are freed on the
 * way. */
static int others_waiting(hd_turns *t)
{
    int64_t now = hd_clock_ns();
    int found = 0;
    for (int i = 0; i < HD_TURNS_SLOTS && !found; i++) {
        if (i == t->slot)
            continue;
        turn_slot *s = &t->f->slots[i];
        int32_t pid = atomic_load(&s->pid);
        if (pid == 0)
            continue;
        if (!alive(pid)) {
            if (free_slot(t->f, i, pid))
                bump_and_wake(&t->f->left, INT_MAX);
            continue;
        }
        int64_t since = atomic_load(&s->since_ns), waited = now - since;
        found = since != 0 && waited >= (int64_t)HD_TURNS_PATIENCE_US * 1000 &&
                waited < (int64_t)HD_TURNS_STALE_MS * 1000000;
    }
    return found;
}

/* Whether a slot other than t's own is taken: one atomic load, the cost of every write
 * transaction and every commit when nobody waits. */
static int others_in_slots(const hd_turns *t)
{
    return atomic_load_explicit(&t->f->waiting, memory_order_acquire) > (t->slot >= 0 ? 1 : 0);
}

/* ---- the four moments ------------------------------------------------------------------- */

void hd_turns_wait(hd_turns *t, int n, int64_t since_ns)
{
    /* Growing sleeps, 50 us to 1 ms, as herald's busy handler always slept. */
    int64_t ns = (int64_t)(n < 5 ? 50 << n : HD_TURNS_POLL_US) * 1000;
    if (t == NULL) {
        sleep_ns(ns);
        return;
    }
    t->waited = 1;
    /* A writer that does not wait in line only polls. Slots for every writer made eight
     * writers committing at once hand the lock round with a wake-up each time: twice the CPU
     * a transaction (docs/bench.md, tenth pass). One that waits in line (a relay) takes a
     * slot at once: the next commit wakes it, and it takes the gap the writer ahead leaves
     * on its own, if any; only after the patience does that writer stand aside for it. */
    if (!t->in_line || (t->slot < 0 && take_slot(t, (int32_t)getpid(), since_ns) < 0)) {
        sleep_ns(ns); /* or every slot taken: poll */
        return;
    }
    word_wait(&t->f->freed, atomic_load(&t->f->freed), ns);
}

void hd_turns_set_in_line(hd_turns *t, int on)
{
    if (t != NULL)
        t->in_line = on != 0;
}

void hd_turns_done(hd_turns *t)
{
    if (t == NULL || t->slot < 0)
        return;
    free_slot(t->f, t->slot, t->slot_pid);
    t->slot = -1;
    bump_and_wake(&t->f->left, INT_MAX); /* the writers standing aside for this one may go */
}

void hd_turns_yield(hd_turns *t)
{
    if (t == NULL)
        return;
    /* A writer that waited for its last write is not the one starving the others: when
     * every writer waits (more writers than the lock can serve), standing aside would only
     * hand the lock round with a wake-up each time (eight writers committing at once: half
     * the throughput, twice the CPU a transaction, docs/bench.md). The one that stands aside
     * got its last lock without waiting: a writer in a burst. */
    int waited = t->waited;
    t->waited = 0;
    if (waited || !others_in_slots(t))
        return;
    int64_t start = hd_clock_ns(), end = start + (int64_t)HD_TURNS_YIELD_MAX_MS * 1000000;
    int counted = 0;
    for (;;) {
        /* The word first: a waiter that leaves after the look below changes it, and the
         * sleep returns at once instead of missing the wake-up. */
        uint32_t seen = atomic_load(&t->f->left);
        int64_t now = hd_clock_ns();
        if (!others_waiting(t) || now >= end) {
            if (counted)
                t->aside_ns += now - start;
            return;
        }
        if (!counted) {
            t->yields++;
            counted = 1;
        }
        int64_t left = end - now;
        word_wait(&t->f->left, seen,
                  left < (int64_t)HD_TURNS_POLL_US * 1000 ? left : HD_TURNS_POLL_US * 1000);
    }
}

void hd_turns_released(hd_turns *t)
{
    if (t == NULL || !others_in_slots(t))
        return;
    t->wakes++;
    bump_and_wake(&t->f->freed, 1);
}

/* ---- for tests ---------------------------------------------------------------------------- */

int hd_turns_waiting(const hd_turns *t)
{
    return t == NULL ? 0 : (int)atomic_load(&t->f->waiting);
}

uint64_t hd_turns_yields(const hd_turns *t)
{
    return t == NULL ? 0 : t->yields;
}

int64_t hd_turns_aside_ns(const hd_turns *t)
{
    return t == NULL ? 0 : t->aside_ns;
}

uint64_t hd_turns_wakes(const hd_turns *t)
{
    return t == NULL ? 0 : t->wakes;
}

int hd_turns_enter_as(hd_turns *t, int pid, int64_t since_ns)
{
    if (t == NULL || t->slot >= 0)
        return HD_EBUSY;
    return take_slot(t, (int32_t)pid, since_ns);
}
