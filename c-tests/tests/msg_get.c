/* msgget: IPC_PRIVATE, IPC_CREAT, IPC_EXCL, mode bits, ENOENT, EEXIST, EACCES, and the
 * initial state reported by IPC_STAT for a new queue.
 *
 * Not covered: ENOSPC at MSGMNI.  It is only practical when /proc/sys/kernel/msgmni is
 * small; with the default (32000) filling the table is too slow and would disturb other
 * tests running at the same time. */
#include "../common.h"
#include <grp.h>
#include <sys/ipc.h>
#include <sys/msg.h>

static void become(uid_t uid, gid_t gid) {
    if (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
        perror("drop privileges");
        _exit(99);
    }
}

static key_t mkkey(int n) { return (key_t)(0x5100000 ^ (getpid() << 4) ^ n); }

static void check_fresh(int id, key_t key, unsigned mode, time_t t0, time_t t1) {
    struct msqid_ds ds;
    memset(&ds, 0xa5, sizeof ds);
    CHECK(msgctl(id, IPC_STAT, &ds) == 0);
    CHECK(ds.msg_perm.__key == key);
    CHECK((ds.msg_perm.mode & 0777) == mode);
    CHECK(ds.msg_perm.uid == geteuid());
    CHECK(ds.msg_perm.cuid == geteuid());
    CHECK(ds.msg_perm.gid == getegid());
    CHECK(ds.msg_perm.cgid == getegid());
    CHECK(ds.msg_qnum == 0);
    CHECK(ds.msg_cbytes == 0);
    CHECK((long)ds.msg_qbytes == read_kernel_long("msgmnb"));
    CHECK(ds.msg_lspid == 0);
    CHECK(ds.msg_lrpid == 0);
    CHECK(ds.msg_stime == 0);
    CHECK(ds.msg_rtime == 0);
    CHECK(ds.msg_ctime >= t0 && ds.msg_ctime <= t1);
}

/* A stranger (uid 1001, not in group 0) against a root-owned queue with mode 0604. */
static void stranger_get(void *arg) {
    key_t key = *(key_t *)arg;
    become(1001, 1001);
    int id = msgget(key, 0);
    CHECK(id >= 0); /* requesting no permission always succeeds */
    CHECK(msgget(key, 0400) == id); /* "other" has read */
    CHECK(msgget(key, 0004) == id);
    EXPECT_ERR(msgget(key, 0200), EACCES); /* but not write */
    EXPECT_ERR(msgget(key, 0600), EACCES);
    EXPECT_ERR(msgget(key, 0002), EACCES);
    EXPECT_ERR(msgget(key, IPC_CREAT | 0666), EACCES);
    /* IPC_EXCL is checked before permissions */
    EXPECT_ERR(msgget(key, IPC_CREAT | IPC_EXCL | 0666), EEXIST);
    /* a missing key is ENOENT for everybody */
    EXPECT_ERR(msgget(key ^ 0x77, 0400), ENOENT);
}

static void stranger_get_0600(void *arg) {
    key_t key = *(key_t *)arg;
    become(1001, 1001);
    int id = msgget(key, 0);
    CHECK(id >= 0);
    EXPECT_ERR(msgget(key, 0400), EACCES);
    EXPECT_ERR(msgget(key, 0004), EACCES);
    EXPECT_ERR(msgget(key, IPC_CREAT | 0600), EACCES);
}

int main(void) {
    long mnb = read_kernel_long("msgmnb");
    CHECK(mnb > 0);

    /* IPC_PRIVATE always creates a new queue, IPC_EXCL or not. */
    time_t t0 = time(NULL);
    int p1 = EXPECT_OK(msgget(IPC_PRIVATE, 0640));
    int p2 = EXPECT_OK(msgget(IPC_PRIVATE, IPC_CREAT | IPC_EXCL | 0600));
    int p3 = EXPECT_OK(msgget(IPC_PRIVATE, IPC_CREAT | 0600));
    time_t t1 = time(NULL);
    CHECK(p1 >= 0 && p2 >= 0 && p3 >= 0);
    CHECK(p1 != p2 && p2 != p3 && p1 != p3);
    check_fresh(p1, IPC_PRIVATE, 0640, t0, t1);
    check_fresh(p2, IPC_PRIVATE, 0600, t0, t1);
    /* only the permission bits of the flags are kept */
    int p4 = EXPECT_OK(msgget(IPC_PRIVATE, 07777));
    check_fresh(p4, IPC_PRIVATE, 0777, t0, time(NULL));
    struct msqid_ds ds;
    CHECK(msgctl(p4, IPC_STAT, &ds) == 0 && ds.msg_perm.mode == 0777);
    int p5 = EXPECT_OK(msgget(IPC_PRIVATE, 0));
    CHECK(msgctl(p5, IPC_STAT, &ds) == 0 && ds.msg_perm.mode == 0);

    /* Keyed queues. */
    key_t k = mkkey(1);
    EXPECT_ERR(msgget(k, 0600), ENOENT);
    EXPECT_ERR(msgget(k, 0), ENOENT);
    EXPECT_ERR(msgget(k, IPC_EXCL | 0600), ENOENT); /* IPC_EXCL alone does not create */
    t0 = time(NULL);
    int q = EXPECT_OK(msgget(k, IPC_CREAT | 0604));
    t1 = time(NULL);
    check_fresh(q, k, 0604, t0, t1);
    CHECK(msgget(k, 0) == q);
    CHECK(msgget(k, 0604) == q);
    CHECK(msgget(k, IPC_EXCL) == q); /* IPC_EXCL without IPC_CREAT: just a lookup */
    CHECK(msgget(k, IPC_CREAT | 0666) == q);
    /* IPC_CREAT on an existing key does not change the mode */
    CHECK(msgctl(q, IPC_STAT, &ds) == 0 && (ds.msg_perm.mode & 0777) == 0604);
    EXPECT_ERR(msgget(k, IPC_CREAT | IPC_EXCL | 0600), EEXIST);
    EXPECT_ERR(msgget(k, IPC_CREAT | IPC_EXCL), EEXIST);
    /* a different key is a different queue */
    key_t k2 = mkkey(2);
    int q2 = EXPECT_OK(msgget(k2, IPC_CREAT | IPC_EXCL | 0600));
    CHECK(q2 != q);
    CHECK(msgget(k2, 0) == q2);
    CHECK(msgget(k, 0) == q);

    /* EACCES for a process of another uid */
    run_in_child(stranger_get, &k);
    run_in_child(stranger_get_0600, &k2);

    /* Removal makes the key free again; the old id stays invalid after re-creation. */
    EXPECT_OK(msgctl(q, IPC_RMID, NULL));
    EXPECT_ERR(msgget(k, 0), ENOENT);
    EXPECT_ERR(msgctl(q, IPC_STAT, &ds), EINVAL);
    int q3 = EXPECT_OK(msgget(k, IPC_CREAT | IPC_EXCL | 0600));
    CHECK(q3 >= 0 && q3 != q);
    EXPECT_ERR(msgctl(q, IPC_STAT, &ds), EINVAL);
    CHECK(msgctl(q3, IPC_STAT, &ds) == 0 && ds.msg_perm.__key == k && (ds.msg_perm.mode & 0777) == 0600);

    EXPECT_OK(msgctl(q3, IPC_RMID, NULL));
    EXPECT_OK(msgctl(q2, IPC_RMID, NULL));
    EXPECT_OK(msgctl(p1, IPC_RMID, NULL));
    EXPECT_OK(msgctl(p2, IPC_RMID, NULL));
    EXPECT_OK(msgctl(p3, IPC_RMID, NULL));
    EXPECT_OK(msgctl(p4, IPC_RMID, NULL));
    EXPECT_OK(msgctl(p5, IPC_RMID, NULL));
    return TEST_DONE();
}
