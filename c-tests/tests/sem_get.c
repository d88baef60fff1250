/* semget: creation, lookup by key, flags, stored mode, initial values and the errors of
 * semget(2): IPC_PRIVATE, IPC_CREAT, IPC_EXCL, mode bits, ENOENT, EEXIST, EINVAL (nsems
 * negative, above SEMMSL, 0 on create, above the existing set's), EACCES for another uid
 * (owner, group and other classes), the check order (EINVAL for nsems > SEMMSL before the
 * key lookup, EEXIST before the nsems check, the nsems check before EACCES), and ENOSPC
 * when the machine's SEMMNI or SEMMNS is small enough to reach; a new set starts at zero
 * after others were made and removed. */
#include "../common.h"
#include "../sem_common.h"

#include <grp.h>
#include <sys/ipc.h>
#include <sys/sem.h>

static key_t key_base;

static void test_private(void) {
    time_t t0 = time(NULL);
    int a = EXPECT_OK(semget(IPC_PRIVATE, 3, 0640));
    int b = EXPECT_OK(semget(IPC_PRIVATE, 3, IPC_CREAT | IPC_EXCL | 0600));
    int c = EXPECT_OK(semget(IPC_PRIVATE, 1, IPC_CREAT | IPC_EXCL | 0600));
    time_t t1 = time(NULL);
    CHECK(a >= 0 && b >= 0 && c >= 0);
    /* IPC_PRIVATE always makes a new set, even with IPC_CREAT | IPC_EXCL. */
    CHECK(a != b && b != c && a != c);

    struct semid_ds ds;
    if (EXPECT_OK(stat_set(a, &ds)) == 0) {
        CHECK(ds.sem_nsems == 3);
        CHECK(ds.sem_perm.__key == IPC_PRIVATE);
        CHECK(ds.sem_perm.mode == 0640);
        CHECK(ds.sem_perm.uid == geteuid());
        CHECK(ds.sem_perm.cuid == geteuid());
        CHECK(ds.sem_perm.gid == getegid());
        CHECK(ds.sem_perm.cgid == getegid());
        CHECK(ds.sem_otime == 0);
        CHECK(ds.sem_ctime >= t0 && ds.sem_ctime <= t1);
    }
    /* Linux initializes the values to 0. */
    unsigned short vals[4] = {9, 9, 9, 9};
    union semun u;
    u.array = vals;
    EXPECT_OK(semctl(a, 0, GETALL, u));
    CHECK(vals[0] == 0 && vals[1] == 0 && vals[2] == 0 && vals[3] == 9);
    for (int i = 0; i < 3; i++) {
        CHECK(semctl(a, i, GETVAL) == 0);
        CHECK(semctl(a, i, GETPID) == 0);
    }

    /* Only the permission bits of semflg are stored. */
    int d = EXPECT_OK(semget(IPC_PRIVATE, 1, IPC_CREAT | 07777));
    if (EXPECT_OK(stat_set(d, &ds)) == 0)
        CHECK(ds.sem_perm.mode == 0777);
    int e = EXPECT_OK(semget(IPC_PRIVATE, 1, 0));
    if (EXPECT_OK(stat_set(e, &ds)) == 0)
        CHECK(ds.sem_perm.mode == 0);

    rm_set(a);
    rm_set(b);
    rm_set(c);
    rm_set(d);
    rm_set(e);
}

static void test_nsems(void) {
    /* nsems 0 on create, negative, or above SEMMSL: EINVAL. */
    EXPECT_ERR(semget(IPC_PRIVATE, 0, 0600), EINVAL);
    EXPECT_ERR(semget(IPC_PRIVATE, -1, 0600), EINVAL);
    EXPECT_ERR(semget(IPC_PRIVATE, (int)lim_semmsl + 1, 0600), EINVAL);
    EXPECT_ERR(semget(IPC_PRIVATE, -2147483647 - 1, 0600), EINVAL);

    /* Exactly SEMMSL semaphores is allowed (if SEMMNS leaves room for them). */
    if (lim_semmsl <= lim_semmns / 2) {
        int id = EXPECT_OK(semget(IPC_PRIVATE, (int)lim_semmsl, 0600));
        struct semid_ds ds;
        if (id >= 0 && EXPECT_OK(stat_set(id, &ds)) == 0)
            CHECK(ds.sem_nsems == (unsigned long)lim_semmsl);
        union semun u;
        u.val = 7;
        EXPECT_OK(semctl(id, (int)lim_semmsl - 1, SETVAL, u));
        CHECK(semctl(id, (int)lim_semmsl - 1, GETVAL) == 7);
        EXPECT_ERR(semctl(id, (int)lim_semmsl, GETVAL), EINVAL);
        rm_set(id);
    }

    /* A failed keyed create leaves no set behind. */
    key_t k = key_base ^ 0x1;
    EXPECT_ERR(semget(k, 0, IPC_CREAT | 0600), EINVAL);
    EXPECT_ERR(semget(k, -1, IPC_CREAT | 0600), EINVAL);
    EXPECT_ERR(semget(k, (int)lim_semmsl + 1, IPC_CREAT | 0600), EINVAL);
    EXPECT_ERR(semget(k, 0, 0), ENOENT);
}

static void test_key(void) {
    key_t k = key_base ^ 0x2;

    EXPECT_ERR(semget(k, 1, 0600), ENOENT);
    EXPECT_ERR(semget(k, 0, 0), ENOENT);
    EXPECT_ERR(semget(k, 1, IPC_EXCL | 0600), ENOENT);
    /* nsems is checked against SEMMSL before the key is looked up. */
    EXPECT_ERR(semget(k, -1, 0), EINVAL);
    EXPECT_ERR(semget(k, (int)lim_semmsl + 1, 0), EINVAL);

    int id = EXPECT_OK(semget(k, 2, IPC_CREAT | 0640));
    CHECK(id >= 0);
    struct semid_ds ds;
    if (EXPECT_OK(stat_set(id, &ds)) == 0) {
        CHECK(ds.sem_perm.__key == k);
        CHECK(ds.sem_nsems == 2);
        CHECK(ds.sem_perm.mode == 0640);
    }

    /* Lookups of the existing key return the same id. */
    CHECK(semget(k, 2, IPC_CREAT | 0640) == id);
    CHECK(semget(k, 2, IPC_CREAT | 0600) == id);
    CHECK(semget(k, 2, 0) == id);
    CHECK(semget(k, 1, 0) == id);
    CHECK(semget(k, 0, 0) == id);
    CHECK(semget(k, 0, 0600) == id);
    /* IPC_EXCL without IPC_CREAT is ignored. */
    CHECK(semget(k, 0, IPC_EXCL) == id);
    /* The mode of a lookup does not change the stored mode. */
    if (EXPECT_OK(stat_set(id, &ds)) == 0)
        CHECK(ds.sem_perm.mode == 0640);

    /* More semaphores than the set has: EINVAL, with or without IPC_CREAT. */
    EXPECT_ERR(semget(k, 3, 0), EINVAL);
    EXPECT_ERR(semget(k, 3, IPC_CREAT | 0600), EINVAL);
    EXPECT_ERR(semget(k, (int)lim_semmsl, 0), EINVAL);

    /* IPC_CREAT | IPC_EXCL on an existing key: EEXIST, before the nsems check. */
    EXPECT_ERR(semget(k, 2, IPC_CREAT | IPC_EXCL | 0600), EEXIST);
    EXPECT_ERR(semget(k, 0, IPC_CREAT | IPC_EXCL), EEXIST);
    EXPECT_ERR(semget(k, 3, IPC_CREAT | IPC_EXCL | 0600), EEXIST);
    /* ... but a too large nsems is rejected before the key lookup. */
    EXPECT_ERR(semget(k, (int)lim_semmsl + 1, IPC_CREAT | IPC_EXCL | 0600), EINVAL);

    /* A different key is a different set. */
    int other = EXPECT_OK(semget(k ^ 0x8, 1, IPC_CREAT | IPC_EXCL | 0600));
    CHECK(other >= 0 && other != id);
    rm_set(other);

    /* After IPC_RMID the key is free and the old id is dead. */
    EXPECT_OK(semctl(id, 0, IPC_RMID));
    EXPECT_ERR(semget(k, 0, 0), ENOENT);
    EXPECT_ERR(stat_set(id, &ds), EINVAL);
    int id2 = EXPECT_OK(semget(k, 1, IPC_CREAT | IPC_EXCL | 0600));
    CHECK(id2 >= 0 && id2 != id);
    if (EXPECT_OK(stat_set(id2, &ds)) == 0)
        CHECK(ds.sem_nsems == 1);
    EXPECT_ERR(semctl(id, 0, GETVAL), EINVAL);
    rm_set(id2);
}

/* Another uid looks up root's set (mode 0600, 2 semaphores). */
static void stranger_lookup(void *arg) {
    key_t k = *(key_t *)arg;
    int id = semget(k, 0, 0);
    drop_to(1001, 1001);
    /* Asking for no permission bits succeeds: only the requested bits are checked. */
    CHECK(semget(k, 0, 0) == id);
    CHECK(semget(k, 2, 0) == id);
    EXPECT_ERR(semget(k, 0, 0600), EACCES);
    EXPECT_ERR(semget(k, 0, 0400), EACCES);
    EXPECT_ERR(semget(k, 0, 0200), EACCES);
    EXPECT_ERR(semget(k, 0, 0004), EACCES);
    EXPECT_ERR(semget(k, 0, 0002), EACCES);
    EXPECT_ERR(semget(k, 1, IPC_CREAT | 0600), EACCES);
    /* The nsems check comes before the permission check, EEXIST before both. */
    EXPECT_ERR(semget(k, 3, 0600), EINVAL);
    EXPECT_ERR(semget(k, 3, IPC_CREAT | IPC_EXCL | 0600), EEXIST);
    EXPECT_ERR(semget(k, 0, IPC_CREAT | IPC_EXCL | 0600), EEXIST);
    /* A key nobody uses is still ENOENT. */
    EXPECT_ERR(semget(k ^ 0x10, 1, 0600), ENOENT);
}

/* Another uid with a read-only "other" class (mode 0604). */
static void stranger_read_only(void *arg) {
    key_t k = *(key_t *)arg;
    int id = semget(k, 0, 0);
    drop_to(1001, 1001);
    CHECK(semget(k, 0, 0400) == id);
    CHECK(semget(k, 0, 0004) == id);
    CHECK(semget(k, 0, 0444) == id);
    EXPECT_ERR(semget(k, 0, 0200), EACCES);
    EXPECT_ERR(semget(k, 0, 0604), EACCES);
}

/* A uid whose group matches the set's group (mode 0640, gid 2000): group bits apply,
 * through the egid or through a supplementary group. */
static void group_member_egid(void *arg) {
    key_t k = *(key_t *)arg;
    int id = semget(k, 0, 0);
    drop_to(1001, 2000);
    CHECK(semget(k, 0, 0400) == id);
    CHECK(semget(k, 0, 0040) == id);
    EXPECT_ERR(semget(k, 0, 0600), EACCES);
    EXPECT_ERR(semget(k, 0, 0020), EACCES);
}

static void group_member_supplementary(void *arg) {
    key_t k = *(key_t *)arg;
    int id = semget(k, 0, 0);
    gid_t groups[2] = {1500, 2000};
    drop_to_groups(1001, 3000, 2, groups);
    CHECK(semget(k, 0, 0440) == id);
    EXPECT_ERR(semget(k, 0, 0200), EACCES);
}

static void group_non_member(void *arg) {
    key_t k = *(key_t *)arg;
    drop_to(1001, 3000);
    EXPECT_ERR(semget(k, 0, 0400), EACCES);
    EXPECT_ERR(semget(k, 0, 0040), EACCES);
}

/* A set created by a non-root process records its credentials. */
static void create_as_other(void *arg) {
    (void)arg;
    drop_to(1001, 1002);
    int id = EXPECT_OK(semget(IPC_PRIVATE, 2, IPC_CREAT | 0660));
    struct semid_ds ds;
    if (id >= 0 && EXPECT_OK(stat_set(id, &ds)) == 0) {
        CHECK(ds.sem_perm.uid == 1001 && ds.sem_perm.cuid == 1001);
        CHECK(ds.sem_perm.gid == 1002 && ds.sem_perm.cgid == 1002);
        CHECK(ds.sem_perm.mode == 0660);
    }
    rm_set(id);
}

static void test_permissions(void) {
    key_t k = key_base ^ 0x3;
    int id = EXPECT_OK(semget(k, 2, IPC_CREAT | IPC_EXCL | 0600));
    if (id >= 0)
        run_in_child(stranger_lookup, &k);
    rm_set(id);

    k = key_base ^ 0x4;
    id = EXPECT_OK(semget(k, 1, IPC_CREAT | IPC_EXCL | 0604));
    if (id >= 0)
        run_in_child(stranger_read_only, &k);
    rm_set(id);

    k = key_base ^ 0x5;
    id = EXPECT_OK(semget(k, 1, IPC_CREAT | IPC_EXCL | 0640));
    if (id >= 0) {
        struct semid_ds ds;
        union semun u;
        EXPECT_OK(stat_set(id, &ds));
        ds.sem_perm.gid = 2000;
        u.buf = &ds;
        EXPECT_OK(semctl(id, 0, IPC_SET, u));
        run_in_child(group_member_egid, &k);
        run_in_child(group_member_supplementary, &k);
        run_in_child(group_non_member, &k);
    }
    rm_set(id);

    run_in_child(create_as_other, NULL);
}

/* ENOSPC needs the machine's SEMMNI or SEMMNS to be reachable cheaply. */
static int test_enospc(void) {
    int ids[4200];
    int n = 0;
    int err = 0;
    long cap;
    int nsems;
    if (lim_semmni <= 4096) {
        cap = lim_semmni + 1;
        nsems = 1;
    } else if (lim_semmns <= 65536 && lim_semmsl >= 16) {
        nsems = (int)lim_semmsl;
        cap = lim_semmns / nsems + 1;
    } else {
        return 0;
    }
    if (cap > 4200)
        cap = 4200;
    while (n < cap) {
        errno = 0;
        int id = semget(IPC_PRIVATE, nsems, 0600);
        if (id < 0) {
            err = errno;
            break;
        }
        ids[n++] = id;
    }
    CHECK(err == ENOSPC);
    if (nsems == 1)
        CHECK(n <= lim_semmni);
    else
        CHECK((long)n * nsems <= lim_semmns);
    /* A keyed create fails the same way and leaves the key free. */
    key_t k = key_base ^ 0x6;
    EXPECT_ERR(semget(k, nsems, IPC_CREAT | 0600), ENOSPC);
    EXPECT_ERR(semget(k, 0, 0), ENOENT);
    for (int i = 0; i < n; i++)
        rm_set(ids[i]);
    return 1;
}

/* A new set starts at zero whatever the sets made and removed before it did: unused ones
 * (ipcshim reuses their memory) and used ones. */
static void test_new_after_removed(void) {
    enum { N = 64 };
    int ids[N];
    struct sembuf up = {0, 5, 0};
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++)
            ids[i] = EXPECT_OK(semget(IPC_PRIVATE, 1 + i % 4, 0600));
        for (int i = 0; i < N; i++) {
            if (round == 1) {
                CHECK(getval(ids[i], 0) == 0);
                CHECK(semctl(ids[i], 0, GETPID) == 0);
                struct semid_ds ds;
                if (EXPECT_OK(stat_set(ids[i], &ds)) == 0)
                    CHECK(ds.sem_otime == 0);
            }
            if (round == 2)
                EXPECT_OK(semop(ids[i], &up, 1)); /* leaves a value, a pid and an otime */
        }
        for (int i = 0; i < N; i++)
            rm_set(ids[i]);
    }
    for (int i = 0; i < N; i++) {
        int id = EXPECT_OK(semget(IPC_PRIVATE, 1 + i % 4, 0600));
        CHECK(getval(id, 0) == 0);
        CHECK(semctl(id, 0, GETPID) == 0);
        rm_set(id);
    }
}

int main(void) {
    alarm(14);
    key_base = (key_t)(0x5E00000 ^ (getpid() << 4));
    read_sem_limits();

    test_private();
    test_nsems();
    test_key();
    test_permissions();
    test_new_after_removed();
    if (!test_enospc())
        printf("sem_get: SEMMNI %ld and SEMMNS %ld too large to reach: ENOSPC not checked\n",
               lim_semmni, lim_semmns);
    return TEST_DONE();
}
