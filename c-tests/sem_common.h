/* Helpers shared by the semaphore tests (c-tests/tests/sem_*.c); include after
 * "../common.h" (which this includes too). */
#ifndef IPCSHIM_TEST_SEM_COMMON_H
#define IPCSHIM_TEST_SEM_COMMON_H
#include "common.h"

#include <sys/ipc.h>
#include <sys/sem.h>

/* semctl's fourth argument: the caller defines it (semctl(2)). */
union semun {
    int val;
    struct semid_ds *buf;
    unsigned short *array;
    struct seminfo *__buf;
};

/* The largest semaphore value (SEMVMX in include/uapi/linux/sem.h). */
#define SEMVMX 32767

/* ---- Limits from /proc/sys/kernel/sem (read_sem_limits() fills them). */
static long lim_semmsl, lim_semmns, lim_semopm, lim_semmni;

static inline void read_sem_limits(void) {
    long v[4];
    read_proc_longs("/proc/sys/kernel/sem", v, 4);
    lim_semmsl = v[0];
    lim_semmns = v[1];
    lim_semopm = v[2];
    lim_semmni = v[3];
}

/* ---- Bookkeeping: every set made with new_set*() or track() is removed by
 * remove_all(), also when the watchdog fires (sem_watchdog()). A test may define
 * SEM_MAXT (default 32) before including this header. */
#ifndef SEM_MAXT
#define SEM_MAXT 32
#endif
static int w_sets[SEM_MAXT];
static int w_nsets;

static inline void remove_all(void) {
    for (int i = 0; i < w_nsets; i++)
        semctl(w_sets[i], 0, IPC_RMID);
    w_nsets = 0;
}

/* Arm the watchdog: on timeout the spawned children are killed and the sets removed. */
static inline void sem_watchdog(unsigned secs) { watchdog(secs, remove_all); }

static inline void track(int id) {
    if (id >= 0 && w_nsets < SEM_MAXT)
        w_sets[w_nsets++] = id;
}

/* A new private set (tracked); exits with status 2 if it cannot be made. */
static inline int new_set_mode(int nsems, int mode) {
    int id = semget(IPC_PRIVATE, nsems, mode);
    if (id < 0 || w_nsets == SEM_MAXT) {
        perror("semget");
        remove_all();
        exit(2);
    }
    w_sets[w_nsets++] = id;
    return id;
}

static inline int new_set(int nsems) { return new_set_mode(nsems, 0600); }

/* Remove a set (tracked or not) and forget it. */
static inline void rm_set(int id) {
    semctl(id, 0, IPC_RMID);
    for (int i = 0; i < w_nsets; i++)
        if (w_sets[i] == id)
            w_sets[i] = w_sets[--w_nsets];
}

/* ---- Thin wrappers */
static inline int op1(int id, unsigned short num, short op, short flg) {
    struct sembuf b = {num, op, flg};
    return semop(id, &b, 1);
}

static inline int getval(int id, int num) { return semctl(id, num, GETVAL); }

/* Sets in use in this IPC namespace (SEM_INFO's semusz), or -1. */
static inline int sets_in_use(void) {
    struct seminfo info;
    union semun u;
    u.__buf = &info;
    if (semctl(0, 0, SEM_INFO, u) < 0)
        return -1;
    return info.semusz;
}

static inline int setval(int id, int num, int v) {
    union semun u;
    u.val = v;
    return semctl(id, num, SETVAL, u);
}

static inline int getall(int id, unsigned short *vals) {
    union semun u;
    u.array = vals;
    return semctl(id, 0, GETALL, u);
}

static inline int setall(int id, unsigned short *vals) {
    union semun u;
    u.array = vals;
    return semctl(id, 0, SETALL, u);
}

/* IPC_STAT (or SEM_STAT / SEM_STAT_ANY with an index) into a zeroed ds. */
static inline int stat_cmd(int id, int cmd, struct semid_ds *ds) {
    union semun u;
    memset(ds, 0, sizeof(*ds));
    u.buf = ds;
    return semctl(id, 0, cmd, u);
}

static inline int stat_set(int id, struct semid_ds *ds) { return stat_cmd(id, IPC_STAT, ds); }

/* A command whose argument is unused, passed as a NULL buffer. */
static inline int cmd_no_arg(int id, int num, int cmd) {
    union semun u;
    u.buf = NULL;
    return semctl(id, num, cmd, u);
}

/* Poll semctl(id, num, cmd) until it returns want; 1 if it did within 5 s. */
static inline int wait_for(int id, int num, int cmd, int want) {
    long long end = now_ms() + 5000;
    int v = -1;
    while (now_ms() < end) {
        v = semctl(id, num, cmd);
        if (v == want)
            return 1;
        sleep_ms(1);
    }
    fprintf(stderr, "  semctl(%d, %d, %d) is %d, want %d\n", id, num, cmd, v, want);
    return 0;
}

#endif
