/* The client side of tests/exhaustion.rs: a run prints one line describing what happened,
 * so that the same program's lines against the kernel and under ipcshim can be compared.
 *   shmall            fill SHMALL with 3-page segments, then the remainder, then recover
 *   create SIZE       one segment of SIZE bytes, one queue, one set, one small segment
 * Every object made is removed before the program exits. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <unistd.h>

/* "ok", or the name of errno: call it right after the call. */
static const char *result(int r) {
    static char buf[8][32];
    static int n;
    char *b = buf[n++ % 8];
    if (r < 0)
        snprintf(b, 32, "%s", strerrorname_np(errno));
    else
        snprintf(b, 32, "ok");
    return b;
}

static int used_pages(void) {
    struct shm_info si;
    memset(&si, 0, sizeof si);
    return shmctl(0, SHM_INFO, (struct shmid_ds *)&si) < 0 ? -1 : (int)si.shm_tot;
}

static int fill_shmall(void) {
    long page = sysconf(_SC_PAGESIZE);
    struct shminfo info;
    if (shmctl(0, IPC_INFO, (struct shmid_ds *)&info) < 0)
        return 2;
    unsigned long all = info.shmall;
    if (all > 1000) {
        printf("shmall %lu is too large for this test\n", all);
        return 1;
    }
    int ids[1000], n = 0, err = 0;
    for (;;) {
        int id = shmget(IPC_PRIVATE, 3 * page - 100, IPC_CREAT | 0600);
        if (id < 0) {
            err = errno;
            break;
        }
        ids[n++] = id;
    }
    printf("shmall=%lu segments=%d err=%s pages=%d", all, n, strerrorname_np(err), used_pages());
    /* What is left fits; one page more does not (nor does a segment past shmmax). */
    int left = (int)all - 3 * n;
    int rest = left > 0 ? shmget(IPC_PRIVATE, left * page, IPC_CREAT | 0600) : -1;
    if (rest >= 0)
        ids[n++] = rest;
    printf(" rest=%s", left > 0 ? result(rest) : "none");
    int one = shmget(IPC_PRIVATE, 1, IPC_CREAT | 0600);
    printf(" one=%s", result(one));
    if (one >= 0)
        ids[n++] = one;
    /* A key of an existing segment is still found; a removed one frees its pages. */
    int keyed = n > 0 ? shmctl(ids[0], IPC_RMID, NULL) : -1;
    printf(" rm=%s", result(keyed));
    int again = shmget(IPC_PRIVATE, 3 * page, IPC_CREAT | 0600);
    printf(" again=%s", result(again));
    if (again >= 0)
        ids[0] = again;
    int more = shmget(IPC_PRIVATE, 1, IPC_CREAT | 0600);
    printf(" more=%s", result(more));
    if (more >= 0)
        shmctl(more, IPC_RMID, NULL);
    /* A segment removed while attached keeps its pages until the last detach. */
    char *p = shmat(ids[0], NULL, 0);
    shmctl(ids[0], IPC_RMID, NULL);
    int pending = shmget(IPC_PRIVATE, 1, IPC_CREAT | 0600);
    printf(" attached_rm=%s", result(pending));
    if (pending >= 0)
        shmctl(pending, IPC_RMID, NULL);
    if (p != (void *)-1)
        shmdt(p);
    int after = shmget(IPC_PRIVATE, 3 * page, IPC_CREAT | 0600);
    printf(" detached=%s\n", result(after));
    if (after >= 0)
        shmctl(after, IPC_RMID, NULL);
    for (int i = 1; i < n; i++)
        shmctl(ids[i], IPC_RMID, NULL);
    return used_pages() == 0 ? 0 : 3;
}

static int create(size_t size) {
    int h = shmget(IPC_PRIVATE, size, IPC_CREAT | 0600);
    printf("big=%s", result(h));
    int q = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
    printf(" queue=%s", result(q));
    int s = semget(IPC_PRIVATE, 10, IPC_CREAT | 0600);
    printf(" set=%s", result(s));
    int small = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
    printf(" small=%s", result(small));
    struct shm_info si;
    memset(&si, 0, sizeof si);
    shmctl(0, SHM_INFO, (struct shmid_ds *)&si);
    printf(" segments=%d\n", si.used_ids);
    if (h >= 0)
        shmctl(h, IPC_RMID, NULL);
    if (small >= 0)
        shmctl(small, IPC_RMID, NULL);
    if (q >= 0)
        msgctl(q, IPC_RMID, NULL);
    if (s >= 0)
        semctl(s, 0, IPC_RMID);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "shmall"))
        return fill_shmall();
    if (argc >= 3 && !strcmp(argv[1], "create"))
        return create(strtoull(argv[2], NULL, 0));
    return 2;
}
