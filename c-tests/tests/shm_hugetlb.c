/* SHM_HUGETLB as the kernel handles it, from what /proc and /sys say about huge pages:
 * an unknown huge page size (SHM_HUGE_SHIFT bits) is EINVAL (checked first); a caller
 * without CAP_IPC_LOCK outside vm.hugetlb_shm_group gets EPERM; root gets ENOMEM when
 * no huge page can be had, unless SHM_NORESERVE is given (then the segment is made and
 * can be attached); with free huge pages the segment is made and usable. A kernel
 * without hugetlb support refuses SHM_HUGETLB with EINVAL. SHM_LOCK and SHM_UNLOCK of a
 * hugetlb segment succeed and do nothing (no SHM_LOCKED). */
#include "../common.h"

#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/stat.h>

#ifndef SHM_HUGE_SHIFT
#define SHM_HUGE_SHIFT 26
#endif

static long long read_num(const char *path) {
    FILE *f = fopen(path, "r");
    long long v = -1;
    if (f) {
        if (fscanf(f, "%lld", &v) != 1)
            v = -1;
        fclose(f);
    }
    return v;
}

/* A field of /proc/meminfo ("HugePages_Free:"), or -1 if absent. */
static long long meminfo(const char *field) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    long long v = -1;
    size_t n = strlen(field);
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, field, n) == 0) {
            v = atoll(line + n);
            break;
        }
    fclose(f);
    return v;
}

/* A log2 huge page size that this kernel does not support. */
static int unsupported_log(void) {
    for (int lg = 25; lg < 40; lg++) {
        char p[96];
        struct stat st;
        snprintf(p, sizeof(p), "/sys/kernel/mm/hugepages/hugepages-%llukB",
                 (1ULL << lg) / 1024);
        if (stat(p, &st) != 0)
            return lg;
    }
    return 25;
}

struct args {
    gid_t group; /* vm.hugetlb_shm_group */
    int badlog;
};

static void not_in_group(void *arg) {
    struct args *a = arg;
    gid_t g = a->group + 1;
    drop_to(1001, g);
    EXPECT_ERR(shmget(IPC_PRIVATE, 4096, IPC_CREAT | SHM_HUGETLB | 0600), EPERM);
    EXPECT_ERR(shmget(IPC_PRIVATE, 4096, IPC_CREAT | SHM_HUGETLB | SHM_NORESERVE | 0600), EPERM);
    /* The size check comes before the permission check. */
    EXPECT_ERR(shmget(IPC_PRIVATE, 4096, IPC_CREAT | SHM_HUGETLB | (a->badlog << SHM_HUGE_SHIFT) | 0600),
               EINVAL);
    /* Ordinary segments are fine. */
    int id = EXPECT_OK(shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600));
    if (id >= 0)
        EXPECT_OK(shmctl(id, IPC_RMID, NULL));
}

/* SHM_LOCK and SHM_UNLOCK succeed on a hugetlb segment and change nothing. */
static void lock_does_nothing(int id) {
    struct shmid_ds ds;
    EXPECT_OK(shmctl(id, SHM_LOCK, NULL));
    EXPECT_OK(shmctl(id, IPC_STAT, &ds));
    CHECK(!(ds.shm_perm.mode & SHM_LOCKED));
    EXPECT_OK(shmctl(id, SHM_UNLOCK, NULL));
}

int main(void) {
    long long total = meminfo("HugePages_Total:");
    long long freep = meminfo("HugePages_Free:");
    long long hpsize_kb = meminfo("Hugepagesize:");
    long long overcommit = read_num("/proc/sys/vm/nr_overcommit_hugepages");
    long long group = read_num("/proc/sys/vm/hugetlb_shm_group");
    if (total < 0) {
        /* A kernel without hugetlb support knows no huge page size at all. */
        EXPECT_ERR(shmget(IPC_PRIVATE, 4096, IPC_CREAT | SHM_HUGETLB | 0600), EINVAL);
        return TEST_DONE();
    }
    CHECK(freep >= 0 && hpsize_kb > 0 && group >= 0);
    if (freep < 0 || hpsize_kb <= 0 || group < 0)
        return TEST_DONE();
    struct args a = {(gid_t)group, unsupported_log()};

    /* Unknown huge page size: EINVAL. */
    EXPECT_ERR(shmget(IPC_PRIVATE, 4096, IPC_CREAT | SHM_HUGETLB | (a.badlog << SHM_HUGE_SHIFT) | 0600),
               EINVAL);
    run_in_child(not_in_group, &a);

    size_t hp = (size_t)hpsize_kb * 1024;
    if (freep == 0 && overcommit == 0) {
        /* No huge page can be had: the reservation fails ... */
        EXPECT_ERR(shmget(IPC_PRIVATE, 4096, IPC_CREAT | SHM_HUGETLB | 0600), ENOMEM);
        EXPECT_ERR(shmget(IPC_PRIVATE, hp, IPC_CREAT | SHM_HUGETLB | 0600), ENOMEM);
        /* ... unless no reservation is asked for. */
        int id = EXPECT_OK(shmget(IPC_PRIVATE, 4096, IPC_CREAT | SHM_HUGETLB | SHM_NORESERVE | 0600));
        if (id >= 0) {
            struct shmid_ds ds;
            EXPECT_OK(shmctl(id, IPC_STAT, &ds));
            CHECK(ds.shm_segsz == 4096);
            CHECK(ds.shm_perm.mode == 0600);
            void *p = shmat(id, NULL, 0);
            CHECK(p != (void *)-1);
            if (p != (void *)-1) {
                CHECK(((unsigned long)p & (hp - 1)) == 0);
                EXPECT_OK(shmdt(p));
            }
            lock_does_nothing(id);
            EXPECT_OK(shmctl(id, IPC_RMID, NULL));
        }
    } else if (freep >= 1) {
        /* A free huge page: the segment is made, huge-page aligned and usable. */
        int id = EXPECT_OK(shmget(IPC_PRIVATE, hp, IPC_CREAT | SHM_HUGETLB | 0600));
        if (id >= 0) {
            char *p = shmat(id, NULL, 0);
            CHECK(p != (void *)-1);
            if (p != (void *)-1) {
                CHECK(((unsigned long)p & (hp - 1)) == 0);
                p[0] = 'h';
                p[hp - 1] = 't';
                CHECK(p[0] == 'h' && p[hp - 1] == 't');
                EXPECT_OK(shmdt(p));
            }
            lock_does_nothing(id);
            EXPECT_OK(shmctl(id, IPC_RMID, NULL));
        }
    }
    return TEST_DONE();
}
