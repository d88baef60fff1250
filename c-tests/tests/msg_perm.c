/* Message-queue permissions, checked from children running under other uids/gids:
 *  - read permission for msgrcv / MSG_COPY / IPC_STAT / MSG_STAT, write for msgsnd;
 *    MSG_STAT_ANY, IPC_INFO and MSG_INFO need none;
 *  - the owner class (uid or cuid) is used exclusively, then group (gid or cgid, egid or a
 *    supplementary group), then other;
 *  - IPC_SET / IPC_RMID only for the owner or creator (else EPERM); an unprivileged owner
 *    may not raise msg_qbytes above msgmnb (EPERM) but may lower it and give the queue away;
 *  - root (CAP_IPC_OWNER) ignores the mode;
 *  - a queue created by an unprivileged process belongs to its euid/egid. */
#include "../common.h"
#include <grp.h>
#include <sys/ipc.h>
#include <sys/msg.h>

struct mbuf {
    long mtype;
    char mtext[64];
};

static int q;
static int qidx; /* q's index for MSG_STAT */
static long msgmnb;

static void become(uid_t uid, gid_t gid, int ngroups, const gid_t *groups) {
    if (setgroups((size_t)ngroups, groups) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
        perror("drop privileges");
        _exit(99);
    }
    alarm(5); /* nothing here may block */
}

static int snd(int id, long type, size_t len, int flg) {
    struct mbuf b;
    memset(&b, 'p', sizeof b);
    b.mtype = type;
    return msgsnd(id, &b, len, flg);
}

static long rcv(int id, int flg) {
    struct mbuf b;
    return msgrcv(id, &b, sizeof b.mtext, 0, flg);
}

static void set_perm(int id, uid_t uid, gid_t gid, mode_t mode) {
    struct msqid_ds ds;
    CHECK(msgctl(id, IPC_STAT, &ds) == 0);
    ds.msg_perm.uid = uid;
    ds.msg_perm.gid = gid;
    ds.msg_perm.mode = (unsigned short)mode;
    EXPECT_OK(msgctl(id, IPC_SET, &ds));
}

static int find_index(int id) {
    struct msginfo mi;
    struct msqid_ds ds;
    int maxidx = msgctl(0, IPC_INFO, (struct msqid_ds *)&mi);
    for (int i = 0; i <= maxidx; i++)
        if (msgctl(i, MSG_STAT_ANY, &ds) == id)
            return i;
    return -1;
}

static unsigned long qnum(int id) {
    struct msqid_ds ds;
    return msgctl(id, IPC_STAT, &ds) == 0 ? ds.msg_qnum : (unsigned long)-1;
}

/* ---- child bodies: arg encodes what access the child should have -------------------- */

enum { CAN_READ = 1, CAN_WRITE = 2 };

struct who {
    uid_t uid;
    gid_t gid;
    int ngroups;
    gid_t groups[2];
    int access; /* CAN_READ | CAN_WRITE */
};

static void check_access(void *arg) {
    struct who *w = arg;
    become(w->uid, w->gid, w->ngroups, w->groups);
    struct msqid_ds ds;
    struct msginfo mi;
    if (w->access & CAN_WRITE) {
        EXPECT_OK(snd(q, 4, 4, IPC_NOWAIT));
    } else {
        EXPECT_ERR(snd(q, 4, 4, IPC_NOWAIT), EACCES);
        EXPECT_ERR(snd(q, 4, 4, 0), EACCES); /* refused at once, not blocked */
        EXPECT_ERR(snd(q, 4, 0, IPC_NOWAIT), EACCES);
        EXPECT_ERR(snd(q, 0, 4, IPC_NOWAIT), EINVAL); /* a bad mtype is reported first */
    }
    if (w->access & CAN_READ) {
        /* the parent queued one message of type 1, length 3 */
        struct mbuf b;
        CHECK(msgrcv(q, &b, sizeof b.mtext, 0, MSG_COPY | IPC_NOWAIT) == 3 && b.mtype == 1);
        CHECK(msgrcv(q, &b, sizeof b.mtext, 1, IPC_NOWAIT) == 3 && b.mtype == 1);
        EXPECT_OK(msgctl(q, IPC_STAT, &ds));
        CHECK(msgctl(qidx, MSG_STAT, &ds) == q);
    } else {
        EXPECT_ERR(rcv(q, IPC_NOWAIT), EACCES);
        EXPECT_ERR(rcv(q, 0), EACCES);
        EXPECT_ERR(msgrcv(q, &(struct mbuf){0}, 64, 77, IPC_NOWAIT), EACCES); /* before ENOMSG */
        EXPECT_ERR(msgrcv(q, &(struct mbuf){0}, 64, 0, MSG_COPY | IPC_NOWAIT), EACCES);
        EXPECT_ERR(msgctl(q, IPC_STAT, &ds), EACCES);
        EXPECT_ERR(msgctl(qidx, MSG_STAT, &ds), EACCES);
    }
    /* no permission needed */
    memset(&ds, 0, sizeof ds);
    CHECK(msgctl(qidx, MSG_STAT_ANY, &ds) == q);
    CHECK(ds.msg_perm.uid == 0 || ds.msg_perm.uid == 1001);
    CHECK(msgctl(0, IPC_INFO, (struct msqid_ds *)&mi) >= 0);
    CHECK(msgctl(0, MSG_INFO, (struct msqid_ds *)&mi) >= 0);
}

/* run check_access for `w` with one type-1 message of 3 bytes queued; afterwards the
 * queue holds exactly what the child's rights imply */
static void expect_access(uid_t uid, gid_t gid, int ngroups, gid_t g0, gid_t g1, int access) {
    struct who w = {uid, gid, ngroups, {g0, g1}, access};
    struct mbuf b;
    while (msgrcv(q, &b, sizeof b.mtext, 0, IPC_NOWAIT | MSG_NOERROR) >= 0) {
    }
    EXPECT_OK(snd(q, 1, 3, IPC_NOWAIT));
    run_in_child(check_access, &w);
    /* read: the type-1 message was taken; write: a type-4 message was added */
    unsigned long want = (access & CAN_READ ? 0 : 1) + (access & CAN_WRITE ? 1 : 0);
    CHECK(qnum(q) == want);
}

static void owner_ops(void *arg) {
    (void)arg;
    become(1001, 1001, 0, NULL);
    struct msqid_ds ds;
    /* mode 0060: the owner has no access to the messages but may change the queue */
    EXPECT_ERR(msgctl(q, IPC_STAT, &ds), EACCES);
    EXPECT_ERR(snd(q, 1, 1, IPC_NOWAIT), EACCES);
    memset(&ds, 0, sizeof ds);
    CHECK(msgctl(qidx, MSG_STAT_ANY, &ds) == q);
    ds.msg_perm.mode = 0600;
    ds.msg_qbytes = (msglen_t)(msgmnb + 1);
    EXPECT_ERR(msgctl(q, IPC_SET, &ds), EPERM); /* above msgmnb: not without CAP_SYS_RESOURCE */
    ds.msg_qbytes = 100;
    EXPECT_OK(msgctl(q, IPC_SET, &ds));
    memset(&ds, 0, sizeof ds);
    EXPECT_OK(msgctl(q, IPC_STAT, &ds));
    CHECK(ds.msg_qbytes == 100 && ds.msg_perm.mode == 0600);
    EXPECT_OK(snd(q, 1, 1, IPC_NOWAIT));
    ds.msg_qbytes = (msglen_t)msgmnb; /* back up to msgmnb is fine */
    EXPECT_OK(msgctl(q, IPC_SET, &ds));
    CHECK(msgctl(q, IPC_STAT, &ds) == 0 && (long)ds.msg_qbytes == msgmnb);
    /* give it away: then it is no longer ours to change */
    ds.msg_perm.uid = 1002;
    ds.msg_perm.mode = 0666;
    EXPECT_OK(msgctl(q, IPC_SET, &ds));
    EXPECT_ERR(msgctl(q, IPC_SET, &ds), EPERM);
    EXPECT_ERR(msgctl(q, IPC_RMID, NULL), EPERM);
    EXPECT_OK(snd(q, 1, 1, IPC_NOWAIT)); /* as "other" with 0666 */
}

static void stranger_ctl(void *arg) {
    (void)arg;
    become(1003, 1003, 0, NULL);
    struct msqid_ds ds;
    memset(&ds, 0, sizeof ds);
    CHECK(msgctl(q, IPC_STAT, &ds) == 0); /* mode 0666 */
    EXPECT_ERR(msgctl(q, IPC_SET, &ds), EPERM);
    EXPECT_ERR(msgctl(q, IPC_RMID, NULL), EPERM);
    /* even with write access, lowering msg_qbytes is not allowed */
    ds.msg_qbytes = 10;
    EXPECT_ERR(msgctl(q, IPC_SET, &ds), EPERM);
}

static void owner_rmid(void *arg) {
    int id = *(int *)arg;
    become(1001, 1001, 0, NULL);
    EXPECT_OK(msgctl(id, IPC_RMID, NULL));
    EXPECT_ERR(msgctl(id, IPC_RMID, NULL), EINVAL);
}

static key_t ckey;
static void create_unpriv(void *arg) {
    (void)arg;
    become(1001, 1005, 1, (gid_t[]){1006});
    int id = msgget(ckey, IPC_CREAT | IPC_EXCL | 0640);
    CHECK(id >= 0);
    struct msqid_ds ds;
    CHECK(msgctl(id, IPC_STAT, &ds) == 0);
    CHECK(ds.msg_perm.uid == 1001 && ds.msg_perm.cuid == 1001);
    CHECK(ds.msg_perm.gid == 1005 && ds.msg_perm.cgid == 1005);
    CHECK(ds.msg_perm.mode == 0640);
    EXPECT_OK(snd(id, 1, 2, IPC_NOWAIT));
}

/* the creator keeps owner rights after the queue is given to someone else */
static void creator_after_chown(void *arg) {
    int id = *(int *)arg;
    become(1001, 1009, 0, NULL);
    struct msqid_ds ds;
    CHECK(msgctl(id, IPC_STAT, &ds) == 0);
    CHECK(ds.msg_perm.uid == 1002 && ds.msg_perm.cuid == 1001);
    EXPECT_OK(snd(id, 2, 2, IPC_NOWAIT)); /* owner class through cuid (mode 0600) */
    CHECK(msgrcv(id, &(struct mbuf){0}, 64, 2, IPC_NOWAIT) == 2);
    ds.msg_perm.mode = 0606;
    EXPECT_OK(msgctl(id, IPC_SET, &ds)); /* creator may IPC_SET */
}

static void new_owner(void *arg) {
    int id = *(int *)arg;
    become(1002, 1002, 0, NULL);
    struct msqid_ds ds;
    CHECK(msgctl(id, IPC_STAT, &ds) == 0 && ds.msg_perm.mode == 0606);
    ds.msg_perm.mode = 0600;
    EXPECT_OK(msgctl(id, IPC_SET, &ds));
    CHECK(msgrcv(id, &(struct mbuf){0}, 64, 1, IPC_NOWAIT) == 2);
}

static void cgid_member(void *arg) {
    int id = *(int *)arg;
    become(1003, 1005, 0, NULL); /* egid = the creator's gid, not the current gid 1002 */
    EXPECT_OK(snd(id, 3, 1, IPC_NOWAIT));
    CHECK(msgrcv(id, &(struct mbuf){0}, 64, 3, IPC_NOWAIT) == 1);
    struct msqid_ds ds;
    EXPECT_ERR(msgctl(id, IPC_SET, &ds), EPERM); /* group membership gives no control */
}

int main(void) {
    alarm(20);
    msgmnb = read_kernel_long("msgmnb");
    q = EXPECT_OK(msgget(IPC_PRIVATE, 0600));
    qidx = find_index(q);
    CHECK(qidx >= 0);

    /* root-owned queue, "other" class */
    set_perm(q, 0, 0, 0600);
    expect_access(1001, 1001, 0, 0, 0, 0);
    set_perm(q, 0, 0, 0602);
    expect_access(1001, 1001, 0, 0, 0, CAN_WRITE);
    set_perm(q, 0, 0, 0604);
    expect_access(1001, 1001, 0, 0, 0, CAN_READ);
    set_perm(q, 0, 0, 0606);
    expect_access(1001, 1001, 0, 0, 0, CAN_READ | CAN_WRITE);

    /* owner 1001, group 1002: the first matching class decides */
    set_perm(q, 1001, 1002, 0066);
    expect_access(1001, 1001, 0, 0, 0, 0);                     /* owner: --- */
    expect_access(1001, 1002, 1, 1002, 0, 0);                  /* still the owner class */
    expect_access(1003, 1002, 0, 0, 0, CAN_READ | CAN_WRITE);  /* egid */
    expect_access(1003, 1003, 2, 1004, 1002, CAN_READ | CAN_WRITE); /* supplementary group */
    expect_access(1003, 1003, 0, 0, 0, CAN_READ | CAN_WRITE);  /* other: rw */
    set_perm(q, 1001, 1002, 0460);
    expect_access(1001, 1001, 0, 0, 0, CAN_READ);
    expect_access(1003, 1003, 1, 1002, 0, CAN_READ | CAN_WRITE);
    expect_access(1003, 1003, 0, 0, 0, 0);
    set_perm(q, 1001, 1002, 0240);
    expect_access(1001, 1001, 0, 0, 0, CAN_WRITE);
    expect_access(1004, 1002, 0, 0, 0, CAN_READ);
    expect_access(1004, 1004, 0, 0, 0, 0);

    /* root (CAP_IPC_OWNER) ignores the mode */
    set_perm(q, 1001, 1002, 0);
    struct mbuf b;
    struct msqid_ds ds;
    while (msgrcv(q, &b, sizeof b.mtext, 0, IPC_NOWAIT | MSG_NOERROR) >= 0) {
    }
    EXPECT_OK(snd(q, 1, 5, IPC_NOWAIT));
    CHECK(msgrcv(q, &b, sizeof b.mtext, 0, MSG_COPY | IPC_NOWAIT) == 5);
    CHECK(msgrcv(q, &b, sizeof b.mtext, 0, IPC_NOWAIT) == 5);
    EXPECT_OK(msgctl(q, IPC_STAT, &ds));
    CHECK(msgctl(qidx, MSG_STAT, &ds) == q);

    /* owner rights: IPC_SET, msg_qbytes limit, chown */
    while (msgrcv(q, &b, sizeof b.mtext, 0, IPC_NOWAIT | MSG_NOERROR) >= 0) {
    }
    set_perm(q, 1001, 1002, 0060);
    run_in_child(owner_ops, NULL);
    CHECK(msgctl(q, IPC_STAT, &ds) == 0 && ds.msg_perm.uid == 1002 && ds.msg_perm.mode == 0666 &&
          ds.msg_perm.cuid == 0 && ds.msg_qnum == 2);
    run_in_child(stranger_ctl, NULL);
    CHECK(msgctl(q, IPC_STAT, &ds) == 0 && ds.msg_perm.uid == 1002 && ds.msg_qnum == 2);

    /* the owner (not creator) may remove */
    int r = EXPECT_OK(msgget(IPC_PRIVATE, 0600));
    set_perm(r, 1001, 0, 0000);
    run_in_child(owner_rmid, &r);
    EXPECT_ERR(msgctl(r, IPC_STAT, &ds), EINVAL);

    /* created by an unprivileged process; creator rights survive a chown */
    ckey = (key_t)(0x5100000 ^ (getpid() << 4) ^ 7);
    run_in_child(create_unpriv, NULL);
    int c = EXPECT_OK(msgget(ckey, 0));
    CHECK(msgctl(c, IPC_STAT, &ds) == 0 && ds.msg_perm.cuid == 1001 && ds.msg_qnum == 1);
    set_perm(c, 1002, 1002, 0600);
    run_in_child(creator_after_chown, &c);
    run_in_child(new_owner, &c);
    set_perm(c, 1002, 1002, 0060);
    run_in_child(cgid_member, &c);
    CHECK(msgctl(c, IPC_STAT, &ds) == 0 && ds.msg_qnum == 0 && ds.msg_perm.cgid == 1005);

    EXPECT_OK(msgctl(c, IPC_RMID, NULL));
    EXPECT_OK(msgctl(q, IPC_RMID, NULL));
    return TEST_DONE();
}
