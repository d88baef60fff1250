/* shmctl IPC_INFO, SHM_INFO, SHM_STAT, SHM_STAT_ANY, SHM_LOCK and SHM_UNLOCK:
 * limits as in /proc, the highest used index as return value, used_ids and shm_tot
 * accounting, lookup by index returning the full id, EINVAL past the highest index,
 * EACCES for SHM_STAT (but not SHM_STAT_ANY) without read permission, and who may
 * lock a segment (SHM_LOCKED in mode). */
#include "../common.h"

#include <sys/ipc.h>
#include <sys/resource.h>
#include <sys/shm.h>

static int ipc_info(struct shminfo *info) {
    memset(info, 0, sizeof(*info));
    return shmctl(0, IPC_INFO, (struct shmid_ds *)info);
}

static int shm_info(struct shm_info *info) {
    memset(info, 0, sizeof(*info));
    return shmctl(0, SHM_INFO, (struct shmid_ds *)info);
}

/* The index (for SHM_STAT) at which segment id lives, or -1; counts the matches. */
static int find_index(int id, int cmd, int *matches) {
    int maxidx = shmctl(0, IPC_INFO, (struct shmid_ds *)&(struct shminfo){0});
    int found = -1;
    *matches = 0;
    for (int i = 0; i <= maxidx; i++) {
        struct shmid_ds ds;
        if (shmctl(i, cmd, &ds) == id) {
            found = i;
            (*matches)++;
        }
    }
    return found;
}

struct idx_arg {
    int id, idx;
};

static void stat_as_other(void *arg) {
    struct idx_arg *a = arg;
    drop_to(1001, 1001);
    struct shmid_ds ds;
    memset(&ds, 0, sizeof(ds));
    /* No read permission (mode 0600): SHM_STAT and IPC_STAT refuse, SHM_STAT_ANY not. */
    EXPECT_ERR(shmctl(a->idx, SHM_STAT, &ds), EACCES);
    EXPECT_ERR(shmctl(a->id, IPC_STAT, &ds), EACCES);
    CHECK(shmctl(a->idx, SHM_STAT_ANY, &ds) == a->id);
    CHECK(ds.shm_segsz == 3 * 4096);
    CHECK((ds.shm_perm.mode & 0777) == 0600);
    /* IPC_INFO and SHM_INFO need no permission. */
    struct shminfo info;
    CHECK(ipc_info(&info) >= a->idx);
    struct shm_info si;
    CHECK(shm_info(&si) >= a->idx);
    CHECK(si.used_ids >= 1);
    /* Not owner, no CAP_IPC_LOCK: SHM_LOCK and SHM_UNLOCK are refused. */
    EXPECT_ERR(shmctl(a->id, SHM_LOCK, NULL), EPERM);
    EXPECT_ERR(shmctl(a->id, SHM_UNLOCK, NULL), EPERM);
}

static void lock_as_owner(void *arg) {
    struct idx_arg *a = arg; /* owner uid set to 1001 */
    drop_to(1001, 1001);
    /* Owner without CAP_IPC_LOCK and with RLIMIT_MEMLOCK 0: SHM_LOCK is refused,
     * SHM_UNLOCK (of an unlocked segment) is allowed. */
    struct rlimit rl = {0, 0};
    CHECK(setrlimit(RLIMIT_MEMLOCK, &rl) == 0);
    EXPECT_ERR(shmctl(a->id, SHM_LOCK, NULL), EPERM);
    EXPECT_OK(shmctl(a->id, SHM_UNLOCK, NULL));
    struct shmid_ds ds;
    EXPECT_OK(shmctl(a->id, IPC_STAT, &ds));
    CHECK(!(ds.shm_perm.mode & SHM_LOCKED));
}

int main(void) {
    struct shminfo info;
    struct shm_info si0, si1;
    struct shmid_ds ds;
    long page = sysconf(_SC_PAGESIZE);

    /* IPC_INFO limits match /proc/sys/kernel. */
    int max0 = ipc_info(&info);
    CHECK(max0 >= 0);
    CHECK(info.shmmax == read_proc_ull("/proc/sys/kernel/shmmax"));
    CHECK(info.shmall == read_proc_ull("/proc/sys/kernel/shmall"));
    CHECK(info.shmmni == read_proc_ull("/proc/sys/kernel/shmmni"));
    CHECK(info.shmmin == 1);
    CHECK(info.shmseg == info.shmmni);

    CHECK(shm_info(&si0) >= 0);
    int id = EXPECT_OK(shmget(IPC_PRIVATE, 3 * 4096, IPC_CREAT | 0600));
    int id2 = EXPECT_OK(shmget(IPC_PRIVATE, 1, IPC_CREAT | 0644));
    if (id < 0 || id2 < 0)
        return TEST_DONE();

    /* SHM_INFO: two more ids in use, their pages counted in shm_tot. */
    int maxs = shm_info(&si1);
    CHECK(maxs >= 0);
    CHECK(si1.used_ids == si0.used_ids + 2);
    CHECK(si1.shm_tot == si0.shm_tot + (3 * 4096 + page - 1) / page + 1);
    /* Both commands return the highest used index. */
    int maxi = ipc_info(&info);
    CHECK(maxi == maxs);

    /* SHM_STAT by index returns the full id; exactly one index holds each segment. */
    int n = 0;
    int idx = find_index(id, SHM_STAT, &n);
    CHECK(idx >= 0 && n == 1);
    int idx2 = find_index(id2, SHM_STAT, &n);
    CHECK(idx2 >= 0 && n == 1 && idx2 != idx);
    CHECK(idx <= maxi && idx2 <= maxi);
    int nany = 0;
    CHECK(find_index(id, SHM_STAT_ANY, &nany) == idx && nany == 1);
    memset(&ds, 0, sizeof(ds));
    CHECK(shmctl(idx, SHM_STAT, &ds) == id);
    CHECK(ds.shm_segsz == 3 * 4096);
    CHECK(ds.shm_perm.mode == 0600);
    CHECK(ds.shm_cpid == getpid());
    memset(&ds, 0, sizeof(ds));
    CHECK(shmctl(idx2, SHM_STAT_ANY, &ds) == id2);
    CHECK(ds.shm_segsz == 1);
    CHECK(ds.shm_perm.mode == 0644);
    /* The highest index is in use; the one after it is not. */
    CHECK(shmctl(maxi, SHM_STAT_ANY, &ds) >= 0);
    EXPECT_ERR(shmctl(maxi + 1, SHM_STAT, &ds), EINVAL);
    EXPECT_ERR(shmctl(maxi + 1, SHM_STAT_ANY, &ds), EINVAL);
    EXPECT_ERR(shmctl(-1, SHM_STAT, &ds), EINVAL);
    EXPECT_ERR(shmctl(idx, SHM_STAT, NULL), EFAULT);

    struct idx_arg arg = {id, idx};
    run_in_child(stat_as_other, &arg);

    /* SHM_LOCK / SHM_UNLOCK as root. */
    EXPECT_OK(shmctl(id, SHM_LOCK, NULL));
    EXPECT_OK(shmctl(id, IPC_STAT, &ds));
    CHECK(ds.shm_perm.mode == (SHM_LOCKED | 0600));
    EXPECT_OK(shmctl(id, SHM_LOCK, NULL));
    EXPECT_OK(shmctl(id, IPC_STAT, &ds));
    CHECK(ds.shm_perm.mode == (SHM_LOCKED | 0600));
    /* IPC_SET keeps SHM_LOCKED. */
    ds.shm_perm.mode = 0640;
    EXPECT_OK(shmctl(id, IPC_SET, &ds));
    EXPECT_OK(shmctl(id, IPC_STAT, &ds));
    CHECK(ds.shm_perm.mode == (SHM_LOCKED | 0640));
    EXPECT_OK(shmctl(id, SHM_UNLOCK, NULL));
    EXPECT_OK(shmctl(id, IPC_STAT, &ds));
    CHECK(ds.shm_perm.mode == 0640);
    EXPECT_OK(shmctl(id, SHM_UNLOCK, NULL));
    EXPECT_ERR(shmctl(-1, SHM_LOCK, NULL), EINVAL);
    ds.shm_perm.uid = 1001;
    ds.shm_perm.mode = 0600;
    EXPECT_OK(shmctl(id, IPC_SET, &ds));
    run_in_child(lock_as_owner, &arg);

    /* Removing the segments takes them out of the counts. */
    EXPECT_OK(shmctl(id, IPC_RMID, NULL));
    EXPECT_OK(shmctl(id2, IPC_RMID, NULL));
    CHECK(shm_info(&si1) >= 0);
    CHECK(si1.used_ids == si0.used_ids);
    CHECK(si1.shm_tot == si0.shm_tot);
    EXPECT_ERR(shmctl(idx, SHM_STAT_ANY, &ds), EINVAL);
    EXPECT_ERR(shmctl(idx2, SHM_STAT, &ds), EINVAL);
    return TEST_DONE();
}
