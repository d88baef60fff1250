/* SHMMNI: creating segments until the system-wide limit fails with ENOSPC; at the limit
 * lookups of existing keys still work and creation by key fails with ENOSPC too;
 * removing one segment frees a slot. The limit is read from /proc/sys/kernel/shmmni and
 * IPC_INFO, not assumed. (Other programs must not create or remove shared memory
 * segments while this runs.) */
#include "../common.h"

#include <sys/ipc.h>
#include <sys/shm.h>

static int used_ids(void) {
    struct shm_info si;
    memset(&si, 0, sizeof(si));
    if (shmctl(0, SHM_INFO, (struct shmid_ds *)&si) < 0)
        return -1;
    return si.used_ids;
}

int main(void) {
    key_t key = (key_t)(0x5600000 ^ (getpid() << 4));
    unsigned long long shmmni = read_proc_ull("/proc/sys/kernel/shmmni");
    struct shminfo info;
    memset(&info, 0, sizeof(info));
    CHECK(shmctl(0, IPC_INFO, (struct shmid_ds *)&info) >= 0);
    CHECK(info.shmmni == shmmni);
    CHECK(shmmni >= 1 && shmmni <= 1 << 24);
    if (shmmni < 1 || shmmni > 1 << 24)
        return TEST_DONE();

    int keyed = EXPECT_OK(shmget(key, 4096, IPC_CREAT | IPC_EXCL | 0600));
    int u0 = used_ids();
    CHECK(u0 >= 1 && (unsigned long long)u0 <= shmmni);

    size_t cap = shmmni + 16;
    int *ids = calloc(cap, sizeof(int));
    CHECK(ids != NULL);
    if (!ids)
        return TEST_DONE();
    size_t n = 0;
    int err = 0;
    while (n < cap) {
        int id = shmget(IPC_PRIVATE, 1, IPC_CREAT | 0600);
        if (id < 0) {
            err = errno;
            break;
        }
        ids[n++] = id;
    }
    CHECK(err == ENOSPC);
    CHECK(n == shmmni - (unsigned long long)u0);
    CHECK((unsigned long long)used_ids() == shmmni);

    /* At the limit: every kind of creation fails with ENOSPC ... */
    EXPECT_ERR(shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600), ENOSPC);
    EXPECT_ERR(shmget(key + 1, 4096, IPC_CREAT | 0600), ENOSPC);
    EXPECT_ERR(shmget(key + 1, 4096, IPC_CREAT | IPC_EXCL | 0600), ENOSPC);
    /* ... an invalid size is still EINVAL, a missing key without IPC_CREAT ENOENT ... */
    EXPECT_ERR(shmget(IPC_PRIVATE, 0, IPC_CREAT | 0600), EINVAL);
    EXPECT_ERR(shmget(key + 1, 4096, 0600), ENOENT);
    /* ... but existing segments are still found, attached and inspected. */
    CHECK(shmget(key, 0, 0) == keyed);
    CHECK(shmget(key, 4096, IPC_CREAT | 0600) == keyed);
    EXPECT_ERR(shmget(key, 4096, IPC_CREAT | IPC_EXCL | 0600), EEXIST);
    char *p = shmat(keyed, NULL, 0);
    CHECK(p != (void *)-1);
    if (p != (void *)-1) {
        p[0] = 'k';
        EXPECT_OK(shmdt(p));
    }

    /* Removing one frees one slot. */
    if (n > 0) {
        EXPECT_OK(shmctl(ids[--n], IPC_RMID, NULL));
        int again = EXPECT_OK(shmget(key + 1, 4096, IPC_CREAT | IPC_EXCL | 0600));
        EXPECT_ERR(shmget(IPC_PRIVATE, 1, IPC_CREAT | 0600), ENOSPC);
        if (again >= 0)
            EXPECT_OK(shmctl(again, IPC_RMID, NULL));
    }

    /* Clean up; the counts return to where they were. */
    int rm_failed = 0;
    for (size_t i = 0; i < n; i++)
        if (shmctl(ids[i], IPC_RMID, NULL) != 0)
            rm_failed++;
    CHECK(rm_failed == 0);
    free(ids);
    CHECK(used_ids() == u0);
    EXPECT_OK(shmctl(keyed, IPC_RMID, NULL));
    CHECK(used_ids() == u0 - 1);
    return TEST_DONE();
}
