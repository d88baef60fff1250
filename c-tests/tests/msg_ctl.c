/* msgctl: IPC_STAT fields (qnum, cbytes, qbytes, lspid, lrpid, stime, rtime, ctime),
 * IPC_SET (uid, gid, mode, msg_qbytes; other fields ignored), IPC_RMID, IPC_INFO and
 * MSG_INFO (limits vs /proc/sys/kernel/msg*, in-use counters), MSG_STAT / MSG_STAT_ANY by
 * index, bad command, EFAULT, bad and removed ids.  Permission errors are in msg_perm.c. */
#include "../common.h"
#include <limits.h>
#include <sys/ipc.h>
#include <sys/msg.h>

struct mbuf {
    long mtype;
    char mtext[512];
};

static int q;

static void child_send(void *arg) {
    struct mbuf b;
    memset(&b, 'c', sizeof b);
    b.mtype = 5;
    EXPECT_OK(msgsnd(q, &b, (size_t)(long)arg, IPC_NOWAIT));
}

static void child_recv(void *arg) {
    struct mbuf b;
    CHECK(msgrcv(q, &b, sizeof b.mtext, 0, IPC_NOWAIT) == (long)arg);
}

static void wait_next_second(void) {
    time_t t = time(NULL);
    long long end = now_ms() + 3000;
    while (time(NULL) == t && now_ms() < end)
        sleep_ms(10);
}

static void test_stat_set(void) {
    struct msqid_ds ds, ds2;
    long mnb = read_kernel_long("msgmnb");
    time_t t0 = time(NULL);
    q = EXPECT_OK(msgget(IPC_PRIVATE, 0640));
    time_t t1 = time(NULL);
    memset(&ds, 0, sizeof ds);
    EXPECT_OK(msgctl(q, IPC_STAT, &ds));
    CHECK((long)ds.msg_qbytes == mnb);
    CHECK(ds.msg_qnum == 0 && ds.msg_cbytes == 0);
    CHECK(ds.msg_lspid == 0 && ds.msg_lrpid == 0 && ds.msg_stime == 0 && ds.msg_rtime == 0);
    CHECK(ds.msg_ctime >= t0 && ds.msg_ctime <= t1);
    time_t ctime0 = ds.msg_ctime;

    wait_next_second();
    /* a send from one child and a receive from another */
    t0 = time(NULL);
    pid_t self = getpid();
    run_in_child(child_send, (void *)100L);
    run_in_child(child_send, (void *)23L);
    struct mbuf b;
    b.mtype = 9;
    EXPECT_OK(msgsnd(q, &b, 0, IPC_NOWAIT));
    t1 = time(NULL);
    EXPECT_OK(msgctl(q, IPC_STAT, &ds));
    CHECK(ds.msg_qnum == 3 && ds.msg_cbytes == 123);
    CHECK(ds.msg_lspid == self); /* the last sender */
    CHECK(ds.msg_lrpid == 0 && ds.msg_rtime == 0);
    CHECK(ds.msg_stime >= t0 && ds.msg_stime <= t1);
    CHECK(ds.msg_ctime == ctime0); /* sending is not a change */

    /* the receive happens in a child whose pid we need */
    fflush(NULL);
    pid_t rpid = fork();
    if (rpid == 0) {
        t_passed = t_failed = 0;
        child_recv((void *)100L);
        _exit(t_failed ? 1 : 0);
    }
    int st = 0;
    CHECK(waitpid(rpid, &st, 0) == rpid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    t1 = time(NULL);
    EXPECT_OK(msgctl(q, IPC_STAT, &ds));
    CHECK(ds.msg_qnum == 2 && ds.msg_cbytes == 23);
    CHECK(ds.msg_lrpid == rpid);
    CHECK(ds.msg_lspid == self);
    CHECK(ds.msg_rtime >= t0 && ds.msg_rtime <= t1);
    CHECK(ds.msg_ctime == ctime0);
    /* a failed receive / send changes nothing */
    EXPECT_ERR(msgrcv(q, &b, 1, 0, IPC_NOWAIT), E2BIG);
    b.mtype = 0;
    EXPECT_ERR(msgsnd(q, &b, 0, IPC_NOWAIT), EINVAL);
    EXPECT_OK(msgctl(q, IPC_STAT, &ds2));
    CHECK(ds2.msg_lrpid == rpid && ds2.msg_lspid == self && ds2.msg_qnum == 2);

    /* IPC_SET: uid, gid, mode (permission bits only) and msg_qbytes; everything else in
     * the buffer is ignored */
    wait_next_second();
    ds = ds2;
    ds.msg_perm.uid = 1234;
    ds.msg_perm.gid = 5678;
    ds.msg_perm.mode = 07604;
    ds.msg_perm.cuid = 4321;
    ds.msg_perm.cgid = 8765;
    ds.msg_perm.__key = 0x4242;
    ds.msg_qbytes = 1000;
    ds.msg_qnum = 77;
    ds.msg_cbytes = 88;
    ds.msg_lspid = 1;
    ds.msg_lrpid = 1;
    ds.msg_stime = 5;
    ds.msg_rtime = 6;
    ds.msg_ctime = 7;
    t0 = time(NULL);
    EXPECT_OK(msgctl(q, IPC_SET, &ds));
    t1 = time(NULL);
    memset(&ds, 0, sizeof ds);
    EXPECT_OK(msgctl(q, IPC_STAT, &ds));
    CHECK(ds.msg_perm.uid == 1234 && ds.msg_perm.gid == 5678);
    CHECK(ds.msg_perm.mode == 0604);
    CHECK(ds.msg_perm.cuid == 0 && ds.msg_perm.cgid == 0);
    CHECK(ds.msg_perm.__key == IPC_PRIVATE);
    CHECK(ds.msg_qbytes == 1000);
    CHECK(ds.msg_qnum == 2 && ds.msg_cbytes == 23);
    CHECK(ds.msg_lspid == self && ds.msg_lrpid == rpid);
    CHECK(ds.msg_stime == ds2.msg_stime && ds.msg_rtime == ds2.msg_rtime);
    CHECK(ds.msg_ctime >= t0 && ds.msg_ctime <= t1 && ds.msg_ctime > ctime0);

    /* raising msg_qbytes above msgmnb needs CAP_SYS_RESOURCE (root may lack it in a
     * container); with it, the queue then holds more than msgmnb bytes */
    msglen_t before = ds.msg_qbytes;
    ds.msg_qbytes = (msglen_t)(mnb * 4);
    if (has_cap(24 /* CAP_SYS_RESOURCE */)) {
        EXPECT_OK(msgctl(q, IPC_SET, &ds));
        EXPECT_OK(msgctl(q, IPC_STAT, &ds));
        CHECK((long)ds.msg_qbytes == mnb * 4);
        long total = 23, fails = 0;
        memset(&b, 'x', sizeof b);
        b.mtype = 1;
        while (total + 500 <= mnb * 2) {
            if (msgsnd(q, &b, 500, IPC_NOWAIT) != 0)
                fails++;
            total += 500;
        }
        CHECK(fails == 0);
        EXPECT_OK(msgctl(q, IPC_STAT, &ds));
        CHECK((long)ds.msg_cbytes == total && (long)ds.msg_cbytes > mnb);
    } else {
        EXPECT_ERR(msgctl(q, IPC_SET, &ds), EPERM);
        EXPECT_OK(msgctl(q, IPC_STAT, &ds));
        CHECK(ds.msg_qbytes == before);
        /* exactly msgmnb is allowed */
        ds.msg_qbytes = (msglen_t)mnb;
        EXPECT_OK(msgctl(q, IPC_SET, &ds));
        EXPECT_OK(msgctl(q, IPC_STAT, &ds));
        CHECK((long)ds.msg_qbytes == mnb);
    }

    /* IPC_RMID discards the messages; the id is dead for every call */
    EXPECT_OK(msgctl(q, IPC_RMID, NULL));
    EXPECT_ERR(msgctl(q, IPC_STAT, &ds), EINVAL);
    EXPECT_ERR(msgctl(q, IPC_SET, &ds), EINVAL);
    EXPECT_ERR(msgctl(q, IPC_RMID, NULL), EINVAL);
    EXPECT_ERR(msgsnd(q, &b, 1, IPC_NOWAIT), EINVAL);
    EXPECT_ERR(msgrcv(q, &b, 1, 0, IPC_NOWAIT), EINVAL);
}

static void test_errors(void) {
    struct msqid_ds ds;
    struct msginfo mi;
    int id = EXPECT_OK(msgget(IPC_PRIVATE, 0600));
    EXPECT_ERR(msgctl(id, 999, &ds), EINVAL);
    EXPECT_ERR(msgctl(id, -1, &ds), EINVAL);
    EXPECT_ERR(msgctl(id, 100, NULL), EINVAL);
    EXPECT_ERR(msgctl(-1, IPC_STAT, &ds), EINVAL);
    EXPECT_ERR(msgctl(-1, IPC_RMID, NULL), EINVAL);
    EXPECT_ERR(msgctl(INT_MIN, IPC_SET, &ds), EINVAL);
    /* a negative id is refused even for the commands that ignore the id */
    EXPECT_ERR(msgctl(-1, IPC_INFO, (struct msqid_ds *)&mi), EINVAL);
    EXPECT_ERR(msgctl(-1, MSG_INFO, (struct msqid_ds *)&mi), EINVAL);
    EXPECT_ERR(msgctl(id, IPC_STAT, NULL), EFAULT);
    EXPECT_ERR(msgctl(id, IPC_SET, NULL), EFAULT);
    EXPECT_ERR(msgctl(id, IPC_INFO, NULL), EFAULT);
    EXPECT_ERR(msgctl(id, MSG_INFO, NULL), EFAULT);
    CHECK(msgctl(id, IPC_STAT, &ds) == 0 && ds.msg_qnum == 0);
    EXPECT_OK(msgctl(id, IPC_RMID, NULL));
    EXPECT_ERR(msgctl(id, 999, &ds), EINVAL);
}

/* MSG_INFO counters for a known change; retried because other programs may create
 * queues or send messages at the same time */
static int info_delta_ok(void) {
    struct msginfo a, b, c;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    memset(&c, 0, sizeof c);
    if (msgctl(0, MSG_INFO, (struct msqid_ds *)&a) < 0)
        return 0;
    int id = msgget(IPC_PRIVATE, 0600);
    if (id < 0)
        return 0;
    struct mbuf m;
    memset(&m, 0, sizeof m);
    m.mtype = 1;
    int ok = msgsnd(id, &m, 100, IPC_NOWAIT) == 0 && msgsnd(id, &m, 0, IPC_NOWAIT) == 0 &&
             msgsnd(id, &m, 211, IPC_NOWAIT) == 0;
    ok = ok && msgctl(0, MSG_INFO, (struct msqid_ds *)&b) >= 0;
    msgctl(id, IPC_RMID, NULL);
    ok = ok && msgctl(0, MSG_INFO, (struct msqid_ds *)&c) >= 0;
    if (!ok)
        return 0;
    /* msgpool = number of queues, msgmap = messages in all queues, msgtql = their bytes */
    return b.msgpool - a.msgpool == 1 && b.msgmap - a.msgmap == 3 && b.msgtql - a.msgtql == 311 &&
           c.msgpool == a.msgpool && c.msgmap == a.msgmap && c.msgtql == a.msgtql;
}

static void test_info(void) {
    struct msginfo mi, mi2;
    long mni = read_kernel_long("msgmni"), max = read_kernel_long("msgmax"), mnb = read_kernel_long("msgmnb");
    int id = EXPECT_OK(msgget(IPC_PRIVATE, 0600));
    memset(&mi, 0x5a, sizeof mi);
    int maxidx = (int)EXPECT_OK(msgctl(id, IPC_INFO, (struct msqid_ds *)&mi));
    CHECK(maxidx >= 0);
    CHECK(mi.msgmni == mni && mi.msgmax == max && mi.msgmnb == mnb);
    /* the remaining IPC_INFO fields are fixed values in Linux (unused by it) */
    CHECK(mi.msgssz == 16);
    CHECK(mi.msgseg == 0xffff);
    CHECK(mi.msgmap == 16384);  /* MSGMAP = MSGMNB (compile-time) */
    CHECK(mi.msgtql == 16384);  /* MSGTQL = MSGMNB */
    CHECK(mi.msgpool == 512000); /* MSGPOOL = MSGMNI * MSGMNB / 1024 */
    /* the id argument does not matter for IPC_INFO (any non-negative value) */
    memset(&mi2, 0, sizeof mi2);
    CHECK(msgctl(0, IPC_INFO, (struct msqid_ds *)&mi2) >= 0 && mi2.msgmax == mi.msgmax && mi2.msgmni == mi.msgmni);
    CHECK(msgctl(123456, IPC_INFO, (struct msqid_ds *)&mi2) >= 0 && mi2.msgmnb == mi.msgmnb);

    memset(&mi2, 0x5a, sizeof mi2);
    int maxidx2 = (int)EXPECT_OK(msgctl(0, MSG_INFO, (struct msqid_ds *)&mi2));
    CHECK(maxidx2 >= 0);
    CHECK(mi2.msgmni == mni && mi2.msgmax == max && mi2.msgmnb == mnb);
    CHECK(mi2.msgssz == 16 && mi2.msgseg == 0xffff);
    CHECK(mi2.msgpool >= 1); /* at least our queue */
    CHECK(mi2.msgmap >= 0 && mi2.msgtql >= 0);
    /* other programs' traffic can spoil a measurement: retry for a while */
    int ok = 0;
    long long until = now_ms() + 10000;
    while (!(ok = info_delta_ok()) && now_ms() < until)
        sleep_ms(10);
    CHECK(ok);

    /* MSG_STAT by index: find our queue's index among 0..maxidx */
    struct mbuf m;
    memset(&m, 0, sizeof m);
    m.mtype = 3;
    EXPECT_OK(msgsnd(id, &m, 17, IPC_NOWAIT));
    maxidx = (int)msgctl(0, IPC_INFO, (struct msqid_ds *)&mi);
    int found = -1;
    struct msqid_ds ds, ref;
    for (int i = 0; i <= maxidx && found < 0; i++)
        if (msgctl(i, MSG_STAT, &ds) == id)
            found = i;
    CHECK(found >= 0);
    if (found >= 0) {
        CHECK(msgctl(id, IPC_STAT, &ref) == 0);
        memset(&ds, 0, sizeof ds);
        CHECK(msgctl(found, MSG_STAT, &ds) == id);
        CHECK(ds.msg_perm.__key == ref.msg_perm.__key && ds.msg_perm.mode == ref.msg_perm.mode &&
              ds.msg_perm.uid == ref.msg_perm.uid && ds.msg_qnum == 1 && ds.msg_cbytes == 17 &&
              ds.msg_qbytes == ref.msg_qbytes && ds.msg_lspid == getpid() && ds.msg_ctime == ref.msg_ctime);
        memset(&ds, 0, sizeof ds);
        CHECK(msgctl(found, MSG_STAT_ANY, &ds) == id);
        CHECK(ds.msg_qnum == 1 && ds.msg_cbytes == 17 && ds.msg_perm.mode == ref.msg_perm.mode);
        EXPECT_ERR(msgctl(found, MSG_STAT, NULL), EFAULT);
    }
    /* negative indexes.  (Large ones are not tested: the kernel masks the index to its
     * low bits, so 1 << 20 may name slot 0 of some other program's queue.) */
    EXPECT_ERR(msgctl(-1, MSG_STAT, &ds), EINVAL);
    EXPECT_ERR(msgctl(-1, MSG_STAT_ANY, &ds), EINVAL);
    EXPECT_ERR(msgctl(INT_MIN, MSG_STAT, &ds), EINVAL);
    /* the highest index reported by IPC_INFO covers our queue */
    CHECK(found <= maxidx);

    EXPECT_OK(msgctl(id, IPC_RMID, NULL));
    if (found >= 0) {
        /* the slot is free now (or reused by a new queue of another program) */
        errno = 0;
        int r = msgctl(found, MSG_STAT, &ds);
        CHECK((r == -1 && errno == EINVAL) || (r >= 0 && r != id));
    }
}

/* IPC_SET on a queue that never held a message: its msg_qbytes limits the first sends
 * (ipcshim makes a queue's memory at its first use). */
static void test_set_before_use(void) {
    struct msqid_ds ds;
    struct mbuf b;
    memset(&b, 'f', sizeof b);
    b.mtype = 1;
    int fresh = EXPECT_OK(msgget(IPC_PRIVATE, 0600));
    EXPECT_OK(msgctl(fresh, IPC_STAT, &ds));
    ds.msg_qbytes = 100;
    EXPECT_OK(msgctl(fresh, IPC_SET, &ds));
    EXPECT_OK(msgsnd(fresh, &b, 60, IPC_NOWAIT));
    EXPECT_ERR(msgsnd(fresh, &b, 60, IPC_NOWAIT), EAGAIN);
    memset(&ds, 0, sizeof ds);
    EXPECT_OK(msgctl(fresh, IPC_STAT, &ds));
    CHECK(ds.msg_qbytes == 100 && ds.msg_qnum == 1 && ds.msg_cbytes == 60 && ds.msg_lspid == getpid());
    /* and once in use, IPC_SET still changes the limit the senders see */
    ds.msg_qbytes = 200;
    EXPECT_OK(msgctl(fresh, IPC_SET, &ds));
    EXPECT_OK(msgsnd(fresh, &b, 60, IPC_NOWAIT));
    EXPECT_ERR(msgsnd(fresh, &b, 100, IPC_NOWAIT), EAGAIN);
    EXPECT_OK(msgctl(fresh, IPC_RMID, NULL));
}

int main(void) {
    alarm(20);
    test_stat_set();
    test_set_before_use();
    test_errors();
    test_info();
    return TEST_DONE();
}
