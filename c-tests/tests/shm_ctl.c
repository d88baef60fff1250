/* shmctl IPC_STAT and IPC_SET: every field of shmid_ds before and after attach and
 * detach (times, pids, nattch), IPC_SET of uid/gid/mode (only the low 9 mode bits,
 * ctime updated, cuid/cgid kept, invalid uid), who may IPC_SET/IPC_RMID (owner,
 * creator, EPERM for others), EACCES for IPC_STAT without read permission, and the
 * errors EINVAL (unknown cmd, negative cmd or id, bad id) and EFAULT (NULL buffer). */
#include "../common.h"
#include "../shm_common.h"

#include <sys/ipc.h>
#include <sys/shm.h>

static int near_now(time_t t) {
    time_t now = time(NULL);
    return t >= now - 5 && t <= now + 1;
}

/* Neither owner nor creator: EPERM for IPC_SET and IPC_RMID; EACCES for IPC_STAT
 * without read permission (mode 0600). */
static void stranger(void *arg) {
    int id = *(int *)arg;
    drop_to(1003, 1003);
    struct shmid_ds ds;
    memset(&ds, 0, sizeof(ds));
    EXPECT_ERR(shmctl(id, IPC_STAT, &ds), EACCES);
    ds.shm_perm.uid = 1003;
    ds.shm_perm.gid = 1003;
    ds.shm_perm.mode = 0666;
    EXPECT_ERR(shmctl(id, IPC_SET, &ds), EPERM);
    EXPECT_ERR(shmctl(id, IPC_RMID, NULL), EPERM);
    /* A bad id is still EINVAL, not EPERM. */
    EXPECT_ERR(shmctl(-1, IPC_RMID, NULL), EINVAL);
}

/* Owner (uid set by IPC_SET) that is not the creator: may IPC_STAT and IPC_SET. */
static void owner_not_creator(void *arg) {
    int id = *(int *)arg;
    drop_to(1001, 1001);
    struct shmid_ds ds;
    EXPECT_OK(stat_seg(id, &ds));
    CHECK(ds.shm_perm.uid == 1001);
    CHECK(ds.shm_perm.cuid == 0);
    ds.shm_perm.mode = 0604;
    EXPECT_OK(shmctl(id, IPC_SET, &ds));
    EXPECT_OK(stat_seg(id, &ds));
    CHECK((ds.shm_perm.mode & 0777) == 0604);
    /* Giving the segment away to yet another uid is allowed too. */
    ds.shm_perm.uid = 1002;
    EXPECT_OK(shmctl(id, IPC_SET, &ds));
    /* Now neither owner nor creator: EPERM. */
    EXPECT_ERR(shmctl(id, IPC_SET, &ds), EPERM);
}

/* Creator that is not the owner: may still IPC_SET and IPC_RMID. */
static void creator_not_owner(void *arg) {
    (void)arg;
    drop_to(1001, 1001);
    int id = EXPECT_OK(shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600));
    if (id < 0)
        return;
    struct shmid_ds ds;
    EXPECT_OK(stat_seg(id, &ds));
    ds.shm_perm.uid = 1002;
    ds.shm_perm.gid = 1002;
    EXPECT_OK(shmctl(id, IPC_SET, &ds));
    EXPECT_OK(stat_seg(id, &ds));
    CHECK(ds.shm_perm.uid == 1002 && ds.shm_perm.gid == 1002);
    CHECK(ds.shm_perm.cuid == 1001 && ds.shm_perm.cgid == 1001);
    /* The creator's credentials count like the owner's for permissions too. */
    void *p = shmat(id, NULL, 0);
    CHECK(p != (void *)-1);
    if (p != (void *)-1)
        EXPECT_OK(shmdt(p));
    ds.shm_perm.mode = 0640;
    EXPECT_OK(shmctl(id, IPC_SET, &ds));
    EXPECT_OK(shmctl(id, IPC_RMID, NULL));
    EXPECT_ERR(stat_seg(id, &ds), EINVAL);
}

int main(void) {
    key_t key = (key_t)(0x5200000 ^ (getpid() << 4));
    struct shmid_ds ds;
    time_t t0 = time(NULL);

    int id = EXPECT_OK(shmget(key, 3 * 4096 + 7, IPC_CREAT | IPC_EXCL | 0640));
    if (id < 0)
        return TEST_DONE();

    /* Fresh segment. */
    EXPECT_OK(stat_seg(id, &ds));
    CHECK(ds.shm_perm.__key == key);
    CHECK(ds.shm_perm.uid == geteuid());
    CHECK(ds.shm_perm.gid == getegid());
    CHECK(ds.shm_perm.cuid == geteuid());
    CHECK(ds.shm_perm.cgid == getegid());
    CHECK(ds.shm_perm.mode == 0640);
    CHECK(ds.shm_segsz == 3 * 4096 + 7);
    CHECK(ds.shm_nattch == 0);
    CHECK(ds.shm_cpid == getpid());
    CHECK(ds.shm_lpid == 0);
    CHECK(ds.shm_atime == 0);
    CHECK(ds.shm_dtime == 0);
    CHECK(near_now(ds.shm_ctime));
    CHECK(ds.shm_ctime >= t0);
    time_t ctime0 = ds.shm_ctime;

    /* After attach: atime set, lpid = us, nattch 1, dtime still 0. */
    char *p = shmat(id, NULL, 0);
    CHECK(p != (void *)-1);
    EXPECT_OK(stat_seg(id, &ds));
    CHECK(ds.shm_nattch == 1);
    CHECK(ds.shm_lpid == getpid());
    CHECK(near_now(ds.shm_atime));
    CHECK(ds.shm_dtime == 0);
    CHECK(ds.shm_ctime == ctime0);
    char *q = shmat(id, NULL, SHM_RDONLY);
    CHECK(q != (void *)-1);
    EXPECT_OK(stat_seg(id, &ds));
    CHECK(ds.shm_nattch == 2);

    /* After detach: dtime set, nattch back down. */
    EXPECT_OK(shmdt(q));
    EXPECT_OK(stat_seg(id, &ds));
    CHECK(ds.shm_nattch == 1);
    CHECK(near_now(ds.shm_dtime));
    CHECK(ds.shm_lpid == getpid());
    EXPECT_OK(shmdt(p));
    EXPECT_OK(stat_seg(id, &ds));
    CHECK(ds.shm_nattch == 0);
    CHECK(ds.shm_ctime == ctime0);

    /* IPC_SET: uid, gid and the low 9 bits of mode; ctime moves on; other fields are
     * ignored. Wait for the clock's second to change so the new ctime differs. */
    sleep_ms(1100);
    EXPECT_OK(stat_seg(id, &ds));
    ds.shm_perm.uid = 1001;
    ds.shm_perm.gid = 1002;
    ds.shm_perm.cuid = 1234;
    ds.shm_perm.cgid = 1234;
    ds.shm_perm.__key = key + 1;
    ds.shm_perm.mode = SHM_DEST | SHM_LOCKED | 0100000 | 0606;
    ds.shm_segsz = 1;
    ds.shm_nattch = 77;
    ds.shm_cpid = 1;
    ds.shm_atime = 5;
    EXPECT_OK(shmctl(id, IPC_SET, &ds));
    EXPECT_OK(stat_seg(id, &ds));
    CHECK(ds.shm_perm.uid == 1001);
    CHECK(ds.shm_perm.gid == 1002);
    CHECK(ds.shm_perm.cuid == geteuid());
    CHECK(ds.shm_perm.cgid == getegid());
    CHECK(ds.shm_perm.mode == 0606);
    CHECK(ds.shm_perm.__key == key);
    CHECK(ds.shm_segsz == 3 * 4096 + 7);
    CHECK(ds.shm_nattch == 0);
    CHECK(ds.shm_cpid == getpid());
    CHECK(ds.shm_atime != 5);
    CHECK(ds.shm_ctime > ctime0);
    CHECK(near_now(ds.shm_ctime));
    /* The segment is still found by its key. */
    CHECK(shmget(key, 0, 0) == id);

    /* An invalid uid or gid: EINVAL, nothing changes. */
    EXPECT_OK(stat_seg(id, &ds));
    ds.shm_perm.uid = (uid_t)-1;
    ds.shm_perm.mode = 0600;
    EXPECT_ERR(shmctl(id, IPC_SET, &ds), EINVAL);
    EXPECT_OK(stat_seg(id, &ds));
    ds.shm_perm.gid = (gid_t)-1;
    EXPECT_ERR(shmctl(id, IPC_SET, &ds), EINVAL);
    EXPECT_OK(stat_seg(id, &ds));
    CHECK(ds.shm_perm.uid == 1001 && ds.shm_perm.gid == 1002);
    CHECK(ds.shm_perm.mode == 0606);

    /* Owner that is not the creator may IPC_SET. */
    run_in_child(owner_not_creator, &id);
    EXPECT_OK(stat_seg(id, &ds));
    CHECK(ds.shm_perm.uid == 1002);
    CHECK((ds.shm_perm.mode & 0777) == 0604);
    /* Creator that is not the owner may IPC_SET and IPC_RMID. */
    run_in_child(creator_not_owner, NULL);

    /* Neither: EPERM / EACCES. */
    ds.shm_perm.uid = 0;
    ds.shm_perm.gid = 0;
    ds.shm_perm.mode = 0600;
    EXPECT_OK(shmctl(id, IPC_SET, &ds));
    run_in_child(stranger, &id);
    EXPECT_OK(stat_seg(id, &ds));
    CHECK(ds.shm_perm.uid == 0 && ds.shm_perm.mode == 0600);

    /* EINVAL: unknown commands, negative command or id, bad ids. */
    EXPECT_ERR(shmctl(id, 99, &ds), EINVAL);
    EXPECT_ERR(shmctl(id, 16, &ds), EINVAL);
    EXPECT_ERR(shmctl(id, 1000, &ds), EINVAL);
    EXPECT_ERR(shmctl(id, -1, &ds), EINVAL);
    EXPECT_ERR(shmctl(-1, IPC_STAT, &ds), EINVAL);
    EXPECT_ERR(shmctl(-1, IPC_SET, &ds), EINVAL);
    EXPECT_ERR(shmctl(-1, IPC_RMID, NULL), EINVAL);
    /* EFAULT: NULL buffer for IPC_STAT and IPC_SET. */
    EXPECT_ERR(shmctl(id, IPC_STAT, NULL), EFAULT);
    EXPECT_ERR(shmctl(id, IPC_SET, NULL), EFAULT);
    /* The segment is unharmed. */
    EXPECT_OK(stat_seg(id, &ds));
    CHECK(ds.shm_perm.mode == 0600);

    EXPECT_OK(shmctl(id, IPC_RMID, NULL));
    /* Gone at once (no attachments): every command on the id is EINVAL. */
    EXPECT_ERR(shmctl(id, IPC_STAT, &ds), EINVAL);
    EXPECT_ERR(shmctl(id, IPC_SET, &ds), EINVAL);
    EXPECT_ERR(shmctl(id, IPC_RMID, NULL), EINVAL);
    EXPECT_ERR(shmget(key, 0, 0), ENOENT);
    return TEST_DONE();
}
