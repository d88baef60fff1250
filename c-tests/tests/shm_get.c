/* shmget: creation, lookup by key, flags, stored mode and the errors of shmget(2):
 * IPC_PRIVATE, IPC_CREAT, IPC_EXCL, mode bits, ENOENT, EEXIST, EINVAL (size 0 on
 * create, size above the existing segment's, size above SHMMAX, size < SHMMIN),
 * EACCES for another uid, the check order (EEXIST before EINVAL, EINVAL before EACCES),
 * and SHM_NORESERVE. */
#include "../common.h"
#include "../shm_common.h"

#include <grp.h>
#include <stdint.h>
#include <sys/ipc.h>
#include <sys/shm.h>

static key_t key_base;

/* Child with another uid, segment key (mode 0600, root's). */
static void other_uid_lookup(void *arg) {
    key_t key = *(key_t *)arg;
    drop_to(1001, 1001);
    /* Asking for no permission bits succeeds: the kernel checks only the bits that
     * shmflg requests. */
    int id = EXPECT_OK(shmget(key, 0, 0));
    CHECK(id >= 0);
    /* Requesting read or write access that the mode does not grant: EACCES. */
    EXPECT_ERR(shmget(key, 0, 0600), EACCES);
    EXPECT_ERR(shmget(key, 0, 0400), EACCES);
    EXPECT_ERR(shmget(key, 0, 0200), EACCES);
    EXPECT_ERR(shmget(key, 0, IPC_CREAT | 0600), EACCES);
    /* The size check comes before the permission check. */
    EXPECT_ERR(shmget(key, 1 << 20, 0600), EINVAL);
    /* IPC_EXCL comes before both. */
    EXPECT_ERR(shmget(key, 1 << 20, IPC_CREAT | IPC_EXCL | 0600), EEXIST);
}

/* Child with another uid whose group matches the segment's group (mode 0640). */
static void group_lookup(void *arg) {
    key_t key = *(key_t *)arg;
    gid_t groups[1] = {0};
    drop_to_groups(1001, 2000, 1, groups);
    /* Supplementary group 0 matches the segment's gid 0: group bits (r--) apply. */
    CHECK(EXPECT_OK(shmget(key, 0, 0400)) >= 0);
    CHECK(EXPECT_OK(shmget(key, 0, 0040)) >= 0);
    EXPECT_ERR(shmget(key, 0, 0600), EACCES);
    EXPECT_ERR(shmget(key, 0, 0200), EACCES);
}

/* A segment created by a non-root process records its credentials. */
static void create_as_other(void *arg) {
    (void)arg;
    drop_to(1001, 1002);
    int id = EXPECT_OK(shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0640));
    if (id < 0)
        return;
    struct shmid_ds ds;
    EXPECT_OK(stat_seg(id, &ds));
    CHECK(ds.shm_perm.uid == 1001);
    CHECK(ds.shm_perm.cuid == 1001);
    CHECK(ds.shm_perm.gid == 1002);
    CHECK(ds.shm_perm.cgid == 1002);
    CHECK((ds.shm_perm.mode & 0777) == 0640);
    CHECK(ds.shm_cpid == getpid());
    /* The owner may always look it up again, mode bits permitting. */
    EXPECT_OK(shmctl(id, IPC_RMID, NULL));
}

int main(void) {
    key_base = (key_t)(0x5100000 ^ (getpid() << 4));
    struct shmid_ds ds;

    /* IPC_PRIVATE always creates, even without IPC_CREAT; each call a new segment. */
    int p1 = EXPECT_OK(shmget(IPC_PRIVATE, 4096, 0600));
    int p2 = EXPECT_OK(shmget(IPC_PRIVATE, 4096, IPC_CREAT | IPC_EXCL | 0600));
    CHECK(p1 >= 0 && p2 >= 0 && p1 != p2);
    EXPECT_OK(stat_seg(p1, &ds));
    CHECK(ds.shm_perm.__key == IPC_PRIVATE);
    CHECK(ds.shm_segsz == 4096);

    /* Mode bits are stored as given (low 9 bits only). */
    int m = EXPECT_OK(shmget(IPC_PRIVATE, 100, IPC_CREAT | 0751));
    EXPECT_OK(stat_seg(m, &ds));
    CHECK((ds.shm_perm.mode & 0777) == 0751);
    CHECK(ds.shm_perm.mode == 0751);
    /* The size is the requested one, not rounded to pages. */
    CHECK(ds.shm_segsz == 100);
    CHECK(ds.shm_perm.uid == geteuid() && ds.shm_perm.cuid == geteuid());
    CHECK(ds.shm_perm.gid == getegid() && ds.shm_perm.cgid == getegid());
    CHECK(ds.shm_cpid == getpid());
    CHECK(ds.shm_nattch == 0);
    int m0 = EXPECT_OK(shmget(IPC_PRIVATE, 100, IPC_CREAT | 0));
    EXPECT_OK(stat_seg(m0, &ds));
    CHECK((ds.shm_perm.mode & 0777) == 0);

    /* By key: ENOENT without IPC_CREAT, then create, then find. */
    key_t k = key_base + 1;
    EXPECT_ERR(shmget(k, 4096, 0600), ENOENT);
    EXPECT_ERR(shmget(k, 0, 0), ENOENT);
    int id = EXPECT_OK(shmget(k, 8192, IPC_CREAT | 0644));
    CHECK(id >= 0);
    EXPECT_OK(stat_seg(id, &ds));
    CHECK(ds.shm_perm.__key == k);
    CHECK(ds.shm_segsz == 8192);
    CHECK((ds.shm_perm.mode & 0777) == 0644);
    /* Lookups of the existing segment return the same id. */
    CHECK(shmget(k, 8192, 0) == id);
    CHECK(shmget(k, 0, 0) == id);
    CHECK(shmget(k, 1, 0600) == id);
    CHECK(shmget(k, 4096, IPC_CREAT | 0600) == id);
    /* IPC_CREAT on an existing key does not change its mode. */
    EXPECT_OK(stat_seg(id, &ds));
    CHECK((ds.shm_perm.mode & 0777) == 0644);
    /* IPC_EXCL: EEXIST, also with a bad size (EEXIST is checked first). */
    EXPECT_ERR(shmget(k, 8192, IPC_CREAT | IPC_EXCL | 0600), EEXIST);
    EXPECT_ERR(shmget(k, 1 << 20, IPC_CREAT | IPC_EXCL | 0600), EEXIST);
    /* IPC_EXCL without IPC_CREAT is just a lookup. */
    CHECK(shmget(k, 0, IPC_EXCL) == id);
    /* Size larger than the existing segment's: EINVAL. */
    EXPECT_ERR(shmget(k, 8193, 0), EINVAL);
    EXPECT_ERR(shmget(k, 8193, IPC_CREAT | 0600), EINVAL);

    /* Size below SHMMIN (1) on creation: EINVAL. */
    EXPECT_ERR(shmget(IPC_PRIVATE, 0, IPC_CREAT | 0600), EINVAL);
    EXPECT_ERR(shmget(key_base + 2, 0, IPC_CREAT | 0600), EINVAL);
    EXPECT_ERR(shmget(key_base + 2, 0, 0600), ENOENT);
    /* Size above SHMMAX: EINVAL (SIZE_MAX is always above it). */
    unsigned long long shmmax = read_proc_ull("/proc/sys/kernel/shmmax");
    CHECK(shmmax > 0);
    EXPECT_ERR(shmget(IPC_PRIVATE, SIZE_MAX, IPC_CREAT | 0600), EINVAL);
    if (shmmax < SIZE_MAX)
        EXPECT_ERR(shmget(IPC_PRIVATE, (size_t)shmmax + 1, IPC_CREAT | 0600), EINVAL);
    /* IPC_INFO agrees on SHMMAX and SHMMIN. */
    struct shminfo info;
    memset(&info, 0, sizeof(info));
    CHECK(shmctl(0, IPC_INFO, (struct shmid_ds *)&info) >= 0);
    CHECK(info.shmmax == shmmax);
    CHECK(info.shmmin == 1);
    /* Nothing was created by the failed calls. */
    EXPECT_ERR(shmget(key_base + 2, 0, 0), ENOENT);

    /* SHM_NORESERVE is accepted. */
    int nr = EXPECT_OK(shmget(IPC_PRIVATE, 1 << 20, IPC_CREAT | SHM_NORESERVE | 0600));
    if (nr >= 0) {
        EXPECT_OK(stat_seg(nr, &ds));
        CHECK(ds.shm_segsz == 1 << 20);
        CHECK((ds.shm_perm.mode & 0777) == 0600);
        char *p = shmat(nr, NULL, 0);
        CHECK(p != (void *)-1);
        if (p != (void *)-1) {
            p[0] = 1;
            p[(1 << 20) - 1] = 2;
            CHECK(p[0] == 1 && p[(1 << 20) - 1] == 2);
            EXPECT_OK(shmdt(p));
        }
        EXPECT_OK(shmctl(nr, IPC_RMID, NULL));
    }

    /* Permissions: another uid, mode 0600. */
    key_t kp = key_base + 3;
    int pid_ = EXPECT_OK(shmget(kp, 4096, IPC_CREAT | IPC_EXCL | 0600));
    run_in_child(other_uid_lookup, &kp);
    /* Group permission through a supplementary group. */
    if (pid_ >= 0) {
        EXPECT_OK(stat_seg(pid_, &ds));
        ds.shm_perm.mode = 0640;
        EXPECT_OK(shmctl(pid_, IPC_SET, &ds));
        run_in_child(group_lookup, &kp);
        EXPECT_OK(shmctl(pid_, IPC_RMID, NULL));
    }
    run_in_child(create_as_other, NULL);

    EXPECT_OK(shmctl(p1, IPC_RMID, NULL));
    EXPECT_OK(shmctl(p2, IPC_RMID, NULL));
    EXPECT_OK(shmctl(m, IPC_RMID, NULL));
    EXPECT_OK(shmctl(m0, IPC_RMID, NULL));
    EXPECT_OK(shmctl(id, IPC_RMID, NULL));
    EXPECT_ERR(shmget(k, 0, 0), ENOENT);
    return TEST_DONE();
}
