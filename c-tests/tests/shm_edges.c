/* Corners of shmat and shmctl the other shm tests leave out: shmctl with IPC_64 (0x100)
 * or other unknown bits in cmd is EINVAL on a 64-bit kernel (no version parsing there);
 * shmat's range checks at the top of the address space (a wrapping range is EINVAL
 * without SHM_REMAP, ENOMEM from the mapping with it; a range beyond user space is
 * ENOMEM either way); shmdt after the program changed an attachment's mappings by hand,
 * which the kernel handles by looking at the mappings themselves: after munmap of the
 * whole attachment shmdt is EINVAL (and leaves alone what was mapped there since); after
 * munmap of its first or a middle page, or mprotect of part of it, shmdt of its start
 * unmaps all that is left; after mremap moved it, shmdt of the new address detaches it
 * and of the old one is EINVAL; a SHM_REMAP attach over part of another attachment
 * leaves the rest of that one attached and detachable; SHM_LOCK without CAP_IPC_LOCK
 * within the locker's RLIMIT_MEMLOCK (ENOMEM beyond it); two threads detaching the same
 * attachment at once: one succeeds, the other gets EINVAL. */
#include "../common.h"
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/shm.h>

static long page;

static int mapped(const void *p) {
    unsigned char v;
    return mincore((void *)p, page, &v) == 0;
}

static unsigned long nattch(int id) {
    struct shmid_ds ds;
    if (shmctl(id, IPC_STAT, &ds) != 0)
        return (unsigned long)-1;
    return ds.shm_nattch;
}

/* A free, page-aligned range of n pages. */
static char *free_area(long n) {
    char *p = mmap(NULL, n * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    munmap(p, n * page);
    return p;
}

static void shmdt_after_changes(int id, int id2) {
    /* munmap of the whole attachment: nothing left to detach. */
    char *a = shmat(id, NULL, 0);
    CHECK(a != (void *)-1);
    EXPECT_OK(munmap(a, 3 * page));
    EXPECT_ERR(shmdt(a), EINVAL);
    CHECK(nattch(id) == 0);

    /* ... and something else mapped there since stays. */
    a = shmat(id, NULL, 0);
    CHECK(a != (void *)-1);
    EXPECT_OK(munmap(a, 3 * page));
    char *anon = mmap(a, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    CHECK(anon == a);
    anon[page] = 'x';
    EXPECT_ERR(shmdt(a), EINVAL);
    CHECK(mapped(anon) && mapped(anon + page) && anon[page] == 'x');
    munmap(anon, 2 * page);
    CHECK(nattch(id) == 0);

    /* munmap of the first page: shmdt of the start detaches the rest; the address of
     * the rest is not a start. */
    a = shmat(id, NULL, 0);
    CHECK(a != (void *)-1);
    EXPECT_OK(munmap(a, page));
    EXPECT_ERR(shmdt(a + page), EINVAL);
    CHECK(mapped(a + page));
    EXPECT_OK(shmdt(a));
    CHECK(!mapped(a + page) && !mapped(a + 2 * page));
    CHECK(nattch(id) == 0);

    /* munmap of a middle page. */
    a = shmat(id, NULL, 0);
    CHECK(a != (void *)-1);
    EXPECT_OK(munmap(a + page, page));
    EXPECT_OK(shmdt(a));
    CHECK(!mapped(a) && !mapped(a + 2 * page));
    CHECK(nattch(id) == 0);

    /* mprotect of part of it. */
    a = shmat(id, NULL, 0);
    CHECK(a != (void *)-1);
    EXPECT_OK(mprotect(a + page, page, PROT_READ));
    EXPECT_OK(shmdt(a));
    CHECK(!mapped(a) && !mapped(a + page) && !mapped(a + 2 * page));
    CHECK(nattch(id) == 0);

    /* mremap moving it: detached at its new address, not at its old one. */
    a = shmat(id, NULL, 0);
    CHECK(a != (void *)-1);
    a[5] = 'm';
    char *to = free_area(3);
    char *moved = mremap(a, 3 * page, 3 * page, MREMAP_MAYMOVE | MREMAP_FIXED, to);
    CHECK(moved == to && moved[5] == 'm');
    CHECK(nattch(id) == 1);
    EXPECT_ERR(shmdt(a), EINVAL);
    CHECK(nattch(id) == 1);
    CHECK(mapped(moved));
    EXPECT_OK(shmdt(moved));
    CHECK(!mapped(moved) && !mapped(moved + 2 * page));
    CHECK(nattch(id) == 0);

    /* SHM_REMAP of another segment (2 pages) over the end of an attachment (3 pages). */
    a = shmat(id, NULL, 0);
    CHECK(a != (void *)-1);
    char *b = shmat(id2, a + page, SHM_REMAP);
    CHECK(b == a + page);
    CHECK(nattch(id) == 1 && nattch(id2) == 1);
    EXPECT_OK(shmdt(a));
    CHECK(!mapped(a));
    CHECK(mapped(b) && mapped(b + page));
    CHECK(nattch(id) == 0 && nattch(id2) == 1);
    EXPECT_OK(shmdt(b));
    CHECK(!mapped(b));
    CHECK(nattch(id2) == 0);

    /* An attachment unmapped by hand, then another segment attached at its address. */
    a = shmat(id, NULL, 0);
    CHECK(a != (void *)-1);
    EXPECT_OK(munmap(a, 3 * page));
    b = shmat(id2, a, 0);
    CHECK(b == a);
    CHECK(nattch(id) == 0 && nattch(id2) == 1);
    EXPECT_OK(shmdt(b));
    CHECK(nattch(id) == 0 && nattch(id2) == 0);
}

/* SHM_LOCK by an owner without CAP_IPC_LOCK: each segment locked is charged to the
 * locker's uid, up to its RLIMIT_MEMLOCK (ENOMEM beyond); locking a locked segment again
 * charges nothing; SHM_UNLOCK gives the pages back. */
struct lock_arg {
    int big, small, small2;
    uid_t uid;
};

static void lock_within_memlock(void *p) {
    struct lock_arg *a = p;
    struct rlimit rl = {3 * page, 3 * page};
    CHECK(setrlimit(RLIMIT_MEMLOCK, &rl) == 0);
    drop_to(a->uid, a->uid);
    struct shmid_ds ds;
    EXPECT_ERR(shmctl(a->big, SHM_LOCK, NULL), ENOMEM);
    EXPECT_OK(shmctl(a->big, IPC_STAT, &ds));
    CHECK(!(ds.shm_perm.mode & SHM_LOCKED));
    EXPECT_OK(shmctl(a->small, SHM_LOCK, NULL));
    EXPECT_OK(shmctl(a->small, SHM_LOCK, NULL));
    EXPECT_ERR(shmctl(a->small2, SHM_LOCK, NULL), ENOMEM);
    EXPECT_OK(shmctl(a->small, SHM_UNLOCK, NULL));
    EXPECT_OK(shmctl(a->small2, SHM_LOCK, NULL));
    EXPECT_OK(shmctl(a->small2, IPC_STAT, &ds));
    CHECK(ds.shm_perm.mode & SHM_LOCKED);
    /* Removing a locked segment gives its pages back too. */
    EXPECT_ERR(shmctl(a->small, SHM_LOCK, NULL), ENOMEM);
    EXPECT_OK(shmctl(a->small2, IPC_RMID, NULL));
    EXPECT_OK(shmctl(a->small, SHM_LOCK, NULL));
    EXPECT_OK(shmctl(a->small, SHM_UNLOCK, NULL));
}

static void shm_lock_charges(void) {
    /* A uid of its own, so that no other test's locks count against it (the kernel
     * counts per user, across IPC namespaces). */
    struct lock_arg a = {-1, -1, -1, 20000 + getpid() % 20000};
    a.big = EXPECT_OK(shmget(IPC_PRIVATE, 16 * page, IPC_CREAT | 0600));
    a.small = EXPECT_OK(shmget(IPC_PRIVATE, 2 * page, IPC_CREAT | 0600));
    a.small2 = EXPECT_OK(shmget(IPC_PRIVATE, 2 * page - 100, IPC_CREAT | 0600));
    int ids[3] = {a.big, a.small, a.small2};
    for (int i = 0; i < 3; i++) {
        struct shmid_ds ds;
        if (ids[i] < 0)
            return;
        EXPECT_OK(shmctl(ids[i], IPC_STAT, &ds));
        ds.shm_perm.uid = a.uid;
        EXPECT_OK(shmctl(ids[i], IPC_SET, &ds));
    }
    run_in_child(lock_within_memlock, &a);
    shmctl(a.big, IPC_RMID, NULL);
    shmctl(a.small, IPC_RMID, NULL);
    shmctl(a.small2, IPC_RMID, NULL);
}

struct race {
    pthread_barrier_t start;
    void *addr;
    int ok[2];
};

struct racer {
    struct race *race;
    int me;
};

static void *detach_at_once(void *p) {
    struct racer *r = p;
    pthread_barrier_wait(&r->race->start);
    r->race->ok[r->me] = shmdt(r->race->addr) == 0;
    return NULL;
}

static void racing_shmdt(int id) {
    int bad = 0;
    for (int round = 0; round < 200; round++) {
        struct race r = {.ok = {-1, -1}};
        pthread_barrier_init(&r.start, NULL, 2);
        r.addr = shmat(id, NULL, 0);
        if (r.addr == (void *)-1) {
            bad++;
            break;
        }
        struct racer other = {&r, 0}, self = {&r, 1};
        pthread_t t;
        pthread_create(&t, NULL, detach_at_once, &other);
        detach_at_once(&self);
        pthread_join(t, NULL);
        pthread_barrier_destroy(&r.start);
        if (r.ok[0] + r.ok[1] != 1)
            bad++;
    }
    CHECK(bad == 0);
    CHECK(nattch(id) == 0);
}

int main(void) {
    watchdog(30, NULL);
    page = sysconf(_SC_PAGESIZE);
    struct shmid_ds ds;
    int id = EXPECT_OK(shmget(IPC_PRIVATE, 3 * page, IPC_CREAT | 0600));
    if (id < 0)
        return TEST_DONE();

    /* Unknown command bits. */
    EXPECT_OK(shmctl(id, IPC_STAT, &ds));
    EXPECT_ERR(shmctl(id, IPC_STAT | 0x100, &ds), EINVAL);
    EXPECT_ERR(shmctl(id, IPC_INFO | 0x100, &ds), EINVAL);
    EXPECT_ERR(shmctl(id, SHM_STAT | 0x100, &ds), EINVAL);
    EXPECT_ERR(shmctl(id, IPC_RMID | 0x100, NULL), EINVAL);
    EXPECT_ERR(shmctl(id, IPC_STAT | 0x10000, &ds), EINVAL);
    EXPECT_ERR(shmctl(id, 4, &ds), EINVAL);
    EXPECT_ERR(shmctl(id, 16, &ds), EINVAL);
    /* None of them removed the segment. */
    EXPECT_OK(shmctl(id, IPC_STAT, &ds));

    /* Ranges at the top of the address space. */
    void *wrap = (void *)(uintptr_t)-page;
    EXPECT_ERR(shmat(id, wrap, 0), EINVAL);
    EXPECT_ERR(shmat(id, wrap, SHM_REMAP), ENOMEM);
    EXPECT_ERR(shmat(id, (char *)wrap + 5, SHM_RND | SHM_REMAP), ENOMEM);
    void *kernel_half = (void *)(uintptr_t)0xffff800000000000ULL;
    EXPECT_ERR(shmat(id, kernel_half, 0), ENOMEM);
    EXPECT_ERR(shmat(id, kernel_half, SHM_REMAP), ENOMEM);
    EXPECT_OK(shmctl(id, IPC_STAT, &ds));
    CHECK(ds.shm_nattch == 0);

    shm_lock_charges();
    racing_shmdt(id);
    int id2 = EXPECT_OK(shmget(IPC_PRIVATE, 2 * page, IPC_CREAT | 0600));
    if (id2 >= 0) {
        shmdt_after_changes(id, id2);
        EXPECT_OK(shmctl(id2, IPC_RMID, NULL));
    }
    EXPECT_OK(shmctl(id, IPC_RMID, NULL));
    return TEST_DONE();
}
