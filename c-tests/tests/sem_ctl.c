/* semctl, every command but the *_INFO/SEM_STAT ones (see sem_info.c), with the fourth
 * argument passed as a union semun: GETVAL, SETVAL (ERANGE checked before the id and
 * semnum), GETALL, SETALL (ERANGE leaves every value unchanged), GETPID (pid of the last
 * operation on each semaphore, also set by SETVAL/SETALL), GETNCNT, GETZCNT, IPC_STAT
 * (fields; sem_otime only set by a successful semop; sem_ctime set at creation and by
 * SETVAL, SETALL and IPC_SET, not by semop), IPC_SET (uid, gid, permission bits only;
 * EINVAL for an invalid uid/gid), IPC_RMID, EINVAL for bad semnum, bad cmd, negative or
 * removed id, EFAULT for a NULL buffer. */
#include "../common.h"
#include "../sem_common.h"

#include <sys/ipc.h>
#include <sys/sem.h>

/* Run fn in a child (non-blocking work only); returns the child's pid once it exited
 * with status 0, or -1. */
static pid_t child_run(void (*fn)(void *), void *arg) {
    pid_t pid = spawn_child(fn, arg);
    return EXITED_OK(reap_child(pid, 15000)) ? pid : -1;
}

static void test_getval_setval(void) {
    int id = new_set(3);
    int dead = new_set(1);
    rm_set(dead);

    CHECK(getval(id, 0) == 0);
    CHECK(setval(id, 0, 5) == 0);
    CHECK(getval(id, 0) == 5);
    CHECK(setval(id, 2, SEMVMX) == 0);
    CHECK(getval(id, 2) == SEMVMX);
    CHECK(getval(id, 1) == 0);
    CHECK(setval(id, 2, 0) == 0);
    CHECK(getval(id, 2) == 0);

    /* Out of range values. */
    EXPECT_ERR(setval(id, 0, SEMVMX + 1), ERANGE);
    EXPECT_ERR(setval(id, 0, -1), ERANGE);
    EXPECT_ERR(setval(id, 0, -2147483647 - 1), ERANGE);
    EXPECT_ERR(setval(id, 0, 65536), ERANGE);
    CHECK(getval(id, 0) == 5);

    /* Bad semnum. */
    EXPECT_ERR(setval(id, 3, 1), EINVAL);
    EXPECT_ERR(setval(id, -1, 1), EINVAL);
    EXPECT_ERR(getval(id, 3), EINVAL);
    EXPECT_ERR(getval(id, -1), EINVAL);
    EXPECT_ERR(cmd_no_arg(id, 3, GETPID), EINVAL);
    EXPECT_ERR(cmd_no_arg(id, 3, GETNCNT), EINVAL);
    EXPECT_ERR(cmd_no_arg(id, -1, GETZCNT), EINVAL);
    EXPECT_ERR(cmd_no_arg(id, 65536, GETVAL), EINVAL);

    /* SETVAL checks the value first, then the id, then semnum. */
    EXPECT_ERR(setval(dead, 0, SEMVMX + 1), ERANGE);
    EXPECT_ERR(setval(id, 99, SEMVMX + 1), ERANGE);
    EXPECT_ERR(setval(dead, 99, -1), ERANGE);
    EXPECT_ERR(setval(dead, 99, 1), EINVAL);
    EXPECT_ERR(setval(dead, 0, 1), EINVAL);
    /* ... except that a negative id is rejected before anything. */
    EXPECT_ERR(setval(-1, 0, SEMVMX + 1), EINVAL);
    EXPECT_ERR(getval(dead, 0), EINVAL);
    EXPECT_ERR(getval(-1, 0), EINVAL);
    rm_set(id);
}

static void test_getall_setall(void) {
    int id = new_set(3);
    unsigned short in[3] = {1, 2, 3};
    unsigned short out[5] = {7, 7, 7, 7, 7};
    CHECK(setall(id, in) == 0);
    CHECK(getall(id, out) == 0);
    CHECK(out[0] == 1 && out[1] == 2 && out[2] == 3);
    /* Only nsems entries are written. */
    CHECK(out[3] == 7 && out[4] == 7);
    CHECK(getval(id, 1) == 2);

    /* semnum is ignored by GETALL and SETALL. */
    union semun u;
    unsigned short in2[3] = {SEMVMX, 0, 9};
    u.array = in2;
    CHECK(semctl(id, 77, SETALL, u) == 0);
    u.array = out;
    CHECK(semctl(id, -5, GETALL, u) == 0);
    CHECK(out[0] == SEMVMX && out[1] == 0 && out[2] == 9);

    /* One value out of range: ERANGE and nothing changes. */
    unsigned short bad[3] = {4, SEMVMX + 1, 4};
    EXPECT_ERR(setall(id, bad), ERANGE);
    unsigned short bad2[3] = {4, 4, 65535};
    EXPECT_ERR(setall(id, bad2), ERANGE);
    CHECK(getall(id, out) == 0);
    CHECK(out[0] == SEMVMX && out[1] == 0 && out[2] == 9);

    /* NULL array. */
    EXPECT_ERR(setall(id, NULL), EFAULT);
    EXPECT_ERR(getall(id, NULL), EFAULT);
    CHECK(getval(id, 2) == 9);

    int dead = new_set(1);
    rm_set(dead);
    EXPECT_ERR(setall(dead, in), EINVAL);
    EXPECT_ERR(getall(dead, out), EINVAL);
    rm_set(id);

    /* A larger set. */
    int big = new_set(300);
    unsigned short *vals = calloc(300, sizeof(*vals));
    unsigned short *back = calloc(301, sizeof(*back));
    if (!vals || !back)
        exit(2);
    for (int i = 0; i < 300; i++)
        vals[i] = (unsigned short)(i * 100);
    back[300] = 4242;
    CHECK(setall(big, vals) == 0);
    CHECK(getall(big, back) == 0);
    CHECK(memcmp(vals, back, 300 * sizeof(*vals)) == 0);
    CHECK(back[300] == 4242);
    CHECK(getval(big, 299) == 29900);
    free(vals);
    free(back);
    rm_set(big);
}

struct pidctx {
    int id;
};

static void child_multi_op(void *arg) {
    struct pidctx *c = arg;
    struct sembuf ops[2] = {{1, 1, 0}, {2, 0, 0}};
    CHECK(semop(c->id, ops, 2) == 0);
}

static void child_failed_op(void *arg) {
    struct pidctx *c = arg;
    EXPECT_ERR(op1(c->id, 0, -100, IPC_NOWAIT), EAGAIN);
    EXPECT_ERR(op1(c->id, 0, SEMVMX, 0), ERANGE);
}

static void child_setall(void *arg) {
    struct pidctx *c = arg;
    unsigned short v[3] = {1, 1, 1};
    CHECK(setall(c->id, v) == 0);
}

static void child_setval(void *arg) {
    struct pidctx *c = arg;
    CHECK(setval(c->id, 2, 4) == 0);
}

static void test_getpid(void) {
    struct pidctx c = {new_set(3)};
    int id = c.id;
    for (int i = 0; i < 3; i++)
        CHECK(cmd_no_arg(id, i, GETPID) == 0);
    CHECK(op1(id, 0, 1, 0) == 0);
    CHECK(cmd_no_arg(id, 0, GETPID) == getpid());
    CHECK(cmd_no_arg(id, 1, GETPID) == 0);

    /* Every semaphore a successful call names gets the caller's pid, also a
     * wait-for-zero. */
    pid_t a = child_run(child_multi_op, &c);
    CHECK(a > 0);
    CHECK(cmd_no_arg(id, 0, GETPID) == getpid());
    CHECK(cmd_no_arg(id, 1, GETPID) == a);
    CHECK(cmd_no_arg(id, 2, GETPID) == a);

    /* A failed call changes nothing. */
    CHECK(child_run(child_failed_op, &c) > 0);
    CHECK(cmd_no_arg(id, 0, GETPID) == getpid());
    CHECK(cmd_no_arg(id, 1, GETPID) == a);

    /* SETVAL sets the pid of its semaphore, SETALL of all. */
    CHECK(setval(id, 1, 3) == 0);
    CHECK(cmd_no_arg(id, 1, GETPID) == getpid());
    CHECK(cmd_no_arg(id, 2, GETPID) == a);
    pid_t b = child_run(child_setall, &c);
    CHECK(b > 0);
    for (int i = 0; i < 3; i++)
        CHECK(cmd_no_arg(id, i, GETPID) == b);
    pid_t d = child_run(child_setval, &c);
    CHECK(d > 0);
    CHECK(cmd_no_arg(id, 2, GETPID) == d);
    CHECK(cmd_no_arg(id, 1, GETPID) == b);
    /* Reading does not change it. */
    CHECK(getval(id, 2) == 4);
    unsigned short v[3];
    CHECK(getall(id, v) == 0);
    CHECK(cmd_no_arg(id, 2, GETPID) == d);
    rm_set(id);
}

static void test_counts_idle(void) {
    int id = new_set(2);
    for (int i = 0; i < 2; i++) {
        CHECK(cmd_no_arg(id, i, GETNCNT) == 0);
        CHECK(cmd_no_arg(id, i, GETZCNT) == 0);
    }
    /* Failed non-blocking calls leave no waiter behind. */
    EXPECT_ERR(op1(id, 0, -1, IPC_NOWAIT), EAGAIN);
    setval(id, 1, 1);
    EXPECT_ERR(op1(id, 1, 0, IPC_NOWAIT), EAGAIN);
    CHECK(cmd_no_arg(id, 0, GETNCNT) == 0);
    CHECK(cmd_no_arg(id, 1, GETZCNT) == 0);
    rm_set(id);
}

static void test_ipc_stat(void) {
    time_t t0 = time(NULL);
    int id = new_set_mode(4, 0640);
    key_t key = (key_t)(0x5E10000 ^ (getpid() << 4));
    int kid = semget(key, 2, IPC_CREAT | IPC_EXCL | 0604);
    time_t t1 = time(NULL);
    CHECK(kid >= 0);
    track(kid);

    struct semid_ds ds;
    CHECK(stat_set(id, &ds) == 0);
    CHECK(ds.sem_nsems == 4);
    CHECK(ds.sem_perm.__key == IPC_PRIVATE);
    CHECK(ds.sem_perm.uid == geteuid() && ds.sem_perm.cuid == geteuid());
    CHECK(ds.sem_perm.gid == getegid() && ds.sem_perm.cgid == getegid());
    CHECK(ds.sem_perm.mode == 0640);
    CHECK(ds.sem_otime == 0);
    CHECK(ds.sem_ctime >= t0 && ds.sem_ctime <= t1);
    CHECK(stat_set(kid, &ds) == 0);
    CHECK(ds.sem_perm.__key == key);
    CHECK(ds.sem_nsems == 2);
    CHECK(ds.sem_perm.mode == 0604);

    /* Reads, SETVAL, SETALL and failed operations leave sem_otime at 0. */
    getval(id, 0);
    setval(id, 1, 1);
    unsigned short v[4] = {0, 1, 0, 0};
    setall(id, v);
    EXPECT_ERR(op1(id, 0, -1, IPC_NOWAIT), EAGAIN);
    EXPECT_ERR(op1(id, 1, 0, IPC_NOWAIT), EAGAIN);
    EXPECT_ERR(op1(id, 9, 1, 0), EFBIG);
    CHECK(stat_set(id, &ds) == 0);
    CHECK(ds.sem_otime == 0);

    /* A successful semop sets it. */
    time_t t2 = time(NULL);
    CHECK(op1(id, 3, 1, 0) == 0);
    time_t t3 = time(NULL);
    CHECK(stat_set(id, &ds) == 0);
    CHECK(ds.sem_otime >= t2 && ds.sem_otime <= t3);

    /* ... also a wait-for-zero that alters nothing. */
    t2 = time(NULL);
    CHECK(op1(kid, 1, 0, 0) == 0);
    t3 = time(NULL);
    CHECK(stat_set(kid, &ds) == 0);
    CHECK(ds.sem_otime >= t2 && ds.sem_otime <= t3);

    /* NULL buffer, removed set, negative id. */
    union semun u;
    u.buf = NULL;
    EXPECT_ERR(semctl(id, 0, IPC_STAT, u), EFAULT);
    rm_set(kid);
    EXPECT_ERR(stat_set(kid, &ds), EINVAL);
    EXPECT_ERR(stat_set(-1, &ds), EINVAL);
    rm_set(id);
}

/* sem_ctime moves with SETVAL, SETALL and IPC_SET, not with semop. */
static void test_ctime(void) {
    int a = new_set(2), b = new_set(2), c = new_set(2), d = new_set(2);
    struct semid_ds ds;
    time_t ct[4];
    int ids[4] = {a, b, c, d};
    time_t newest = 0;
    for (int i = 0; i < 4; i++) {
        CHECK(stat_set(ids[i], &ds) == 0);
        ct[i] = ds.sem_ctime;
        if (ct[i] > newest)
            newest = ct[i];
    }
    /* Let the clock pass the creation second. */
    long long end = now_ms() + 3000;
    while (time(NULL) <= newest && now_ms() < end)
        sleep_ms(10);
    sleep_ms(20);
    time_t t0 = time(NULL);
    CHECK(t0 > newest);

    CHECK(setval(a, 1, 3) == 0);
    unsigned short v[2] = {2, 2};
    CHECK(setall(b, v) == 0);
    CHECK(stat_set(c, &ds) == 0);
    union semun u;
    u.buf = &ds;
    CHECK(semctl(c, 0, IPC_SET, u) == 0);
    CHECK(op1(d, 0, 1, 0) == 0);
    CHECK(op1(d, 0, -1, 0) == 0);
    getval(d, 0);
    time_t t1 = time(NULL);

    for (int i = 0; i < 3; i++) {
        CHECK(stat_set(ids[i], &ds) == 0);
        CHECK(ds.sem_ctime > ct[i]);
        CHECK(ds.sem_ctime >= t0 && ds.sem_ctime <= t1);
    }
    CHECK(stat_set(d, &ds) == 0);
    CHECK(ds.sem_ctime == ct[3]);
    CHECK(ds.sem_otime >= t0 && ds.sem_otime <= t1);
    /* A failed SETVAL or SETALL does not touch it. */
    CHECK(stat_set(a, &ds) == 0);
    time_t before = ds.sem_ctime;
    EXPECT_ERR(setval(a, 0, SEMVMX + 1), ERANGE);
    EXPECT_ERR(setval(a, 5, 1), EINVAL);
    CHECK(stat_set(a, &ds) == 0);
    CHECK(ds.sem_ctime == before);
    for (int i = 0; i < 4; i++)
        rm_set(ids[i]);
}

static void test_ipc_set(void) {
    int id = new_set_mode(2, 0600);
    struct semid_ds ds;
    union semun u;
    CHECK(stat_set(id, &ds) == 0);
    time_t otime = ds.sem_otime;
    ds.sem_perm.uid = 1001;
    ds.sem_perm.gid = 1002;
    ds.sem_perm.mode = 01664;
    /* Everything but uid, gid and the permission bits is ignored. */
    ds.sem_perm.cuid = 1234;
    ds.sem_perm.cgid = 1234;
    ds.sem_perm.__key = 42;
    ds.sem_nsems = 99;
    ds.sem_otime = 12345;
    ds.sem_ctime = 12345;
    u.buf = &ds;
    CHECK(semctl(id, 0, IPC_SET, u) == 0);
    CHECK(stat_set(id, &ds) == 0);
    CHECK(ds.sem_perm.uid == 1001 && ds.sem_perm.gid == 1002);
    CHECK(ds.sem_perm.cuid == geteuid() && ds.sem_perm.cgid == getegid());
    CHECK(ds.sem_perm.mode == 0664);
    CHECK(ds.sem_perm.__key == IPC_PRIVATE);
    CHECK(ds.sem_nsems == 2);
    CHECK(ds.sem_otime == otime);
    CHECK(ds.sem_ctime != 12345);

    /* semnum is ignored. */
    ds.sem_perm.mode = 0400;
    CHECK(semctl(id, 55, IPC_SET, u) == 0);
    CHECK(stat_set(id, &ds) == 0);
    CHECK(ds.sem_perm.mode == 0400);

    /* An invalid uid or gid: EINVAL, nothing changed. */
    ds.sem_perm.uid = (uid_t)-1;
    ds.sem_perm.mode = 0666;
    EXPECT_ERR(semctl(id, 0, IPC_SET, u), EINVAL);
    CHECK(stat_set(id, &ds) == 0);
    ds.sem_perm.gid = (gid_t)-1;
    EXPECT_ERR(semctl(id, 0, IPC_SET, u), EINVAL);
    CHECK(stat_set(id, &ds) == 0);
    CHECK(ds.sem_perm.uid == 1001 && ds.sem_perm.gid == 1002);
    CHECK(ds.sem_perm.mode == 0400);

    /* Root may change it back (see sem_perm.c for other uids). */
    ds.sem_perm.uid = 0;
    ds.sem_perm.gid = 0;
    ds.sem_perm.mode = 0600;
    CHECK(semctl(id, 0, IPC_SET, u) == 0);
    CHECK(stat_set(id, &ds) == 0);
    CHECK(ds.sem_perm.uid == 0 && ds.sem_perm.mode == 0600);

    u.buf = NULL;
    EXPECT_ERR(semctl(id, 0, IPC_SET, u), EFAULT);
    int dead = new_set(1);
    rm_set(dead);
    u.buf = &ds;
    EXPECT_ERR(semctl(dead, 0, IPC_SET, u), EINVAL);
    rm_set(id);
}

static void test_rmid(void) {
    key_t key = (key_t)(0x5E20000 ^ (getpid() << 4));
    int id = semget(key, 2, IPC_CREAT | IPC_EXCL | 0600);
    CHECK(id >= 0);
    if (id < 0)
        return;
    /* semnum and the fourth argument are ignored. */
    CHECK(cmd_no_arg(id, 99, IPC_RMID) == 0);
    EXPECT_ERR(getval(id, 0), EINVAL);
    EXPECT_ERR(setval(id, 0, 1), EINVAL);
    struct semid_ds ds;
    EXPECT_ERR(stat_set(id, &ds), EINVAL);
    EXPECT_ERR(op1(id, 0, 1, 0), EINVAL);
    EXPECT_ERR(cmd_no_arg(id, 0, IPC_RMID), EINVAL);
    EXPECT_ERR(cmd_no_arg(id, 0, GETNCNT), EINVAL);
    EXPECT_ERR(semget(key, 0, 0), ENOENT);
    EXPECT_ERR(cmd_no_arg(-1, 0, IPC_RMID), EINVAL);
}

static void test_bad_cmd(void) {
    int id = new_set(1);
    int bad[] = {-1, 4, 5, 10, 21, 9999, 0x7fffffff};
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        EXPECT_ERR(cmd_no_arg(id, 0, bad[i]), EINVAL);
    EXPECT_ERR(cmd_no_arg(-1, 0, GETVAL), EINVAL);
    EXPECT_ERR(cmd_no_arg(-1, 0, 9999), EINVAL);
    CHECK(getval(id, 0) == 0);
    rm_set(id);
}

int main(void) {
    sem_watchdog(14);

    test_getval_setval();
    test_getall_setall();
    test_getpid();
    test_counts_idle();
    test_ipc_stat();
    test_ctime();
    test_ipc_set();
    test_rmid();
    test_bad_cmd();

    remove_all();
    return TEST_DONE();
}
