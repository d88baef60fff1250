/* Corners of semop/semtimedop/semctl arguments: nsops is the system call's unsigned int
 * (the upper half of a size_t is dropped: 2^32 + 1 operations is one, 2^32 is none);
 * semtimedop copies its timeout in before every other check (EFAULT for a bad timeout
 * pointer beats E2BIG, EINVAL and the operations' EFAULT); a timeout too long to add to
 * the clock ({LONG_MAX, 999999999}) waits as long as it takes; semctl commands with
 * IPC_64 (0x100) or other high bits set are unknown commands on 64-bit Linux (EINVAL,
 * nothing done); a process that made a SEM_UNDO call on a set sets its sem_otime when it
 * exits (exit_sem), also when no adjustment is left or the call failed with EAGAIN. */
#include "../common.h"
#include "../sem_common.h"

#include <limits.h>
#include <stdint.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/sem.h>

#ifndef IPC_64
#define IPC_64 0x100
#endif

static void test_nsops_width(void) {
#if SIZE_MAX > UINT_MAX
    int id = new_set(2);
    struct sembuf up = {0, 1, 0};
    size_t high = (size_t)1 << 32;
    CHECK(semop(id, &up, high + 1) == 0);
    CHECK(getval(id, 0) == 1);
    EXPECT_ERR(semop(id, &up, high), EINVAL);
    EXPECT_ERR(semop(id, NULL, high), EINVAL);
    struct timespec ts = {1, 0};
    CHECK(semtimedop(id, &up, high + 1, &ts) == 0);
    CHECK(semtimedop(id, &up, high + 1, NULL) == 0);
    CHECK(getval(id, 0) == 3);
    EXPECT_ERR(semtimedop(id, &up, high, &ts), EINVAL);
    /* Two operations seen as two: the second would block. */
    struct sembuf two[2] = {{0, 1, 0}, {1, -1, IPC_NOWAIT}};
    EXPECT_ERR(semop(id, two, high + 2), EAGAIN);
    CHECK(getval(id, 0) == 3);
    /* The low half alone decides E2BIG. */
    EXPECT_ERR(semop(id, &up, high + (size_t)lim_semopm + 1), E2BIG);
    EXPECT_ERR(semop(id, &up, SIZE_MAX), E2BIG);
    rm_set(id);
#endif
}

static void test_timeout_copied_first(void) {
    int id = new_set(1);
    int dead = new_set(1);
    rm_set(dead);
    /* An address that faults: a page with no access. */
    void *page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(page != MAP_FAILED);
    if (page == MAP_FAILED)
        return;
    struct timespec *bad = page;
    struct sembuf up = {0, 1, 0};
    size_t n = (size_t)lim_semopm + 1;
    struct sembuf *many = calloc(n, sizeof(*many));
    if (!many)
        exit(2);
    EXPECT_ERR(semtimedop(id, &up, 1, bad), EFAULT);
    EXPECT_ERR(semtimedop(id, many, n, bad), EFAULT);
    EXPECT_ERR(semtimedop(id, &up, 0, bad), EFAULT);
    EXPECT_ERR(semtimedop(-1, &up, 1, bad), EFAULT);
    EXPECT_ERR(semtimedop(-1, &up, 0, bad), EFAULT);
    EXPECT_ERR(semtimedop(dead, &up, 1, bad), EFAULT);
    EXPECT_ERR(semtimedop(id, NULL, 1, bad), EFAULT);
    EXPECT_ERR(semtimedop(id, (struct sembuf *)page, 1, bad), EFAULT);
    CHECK(getval(id, 0) == 0);
    /* With a readable timeout the usual order holds (see sem_op.c). */
    struct timespec ts = {1, 0};
    EXPECT_ERR(semtimedop(id, many, n, &ts), E2BIG);
    EXPECT_ERR(semtimedop(id, &up, 0, &ts), EINVAL);
    EXPECT_ERR(semtimedop(id, (struct sembuf *)page, 1, &ts), EFAULT);
    free(many);
    munmap(page, 4096);
    rm_set(id);
}

struct longwait {
    int id;
    struct sembuf op;
};

static void child_long_wait(void *arg) {
    struct longwait *w = arg;
    struct timespec forever = {LONG_MAX, 999999999L};
    CHECK(semtimedop(w->id, &w->op, 1, &forever) == 0);
}

static void test_long_timeout(void) {
    int id = new_set(2);
    struct timespec forever = {LONG_MAX, 999999999L};
    struct timespec long_s = {LONG_MAX, 0};
    struct sembuf up = {0, 1, 0};
    struct sembuf down = {0, -1, 0};
    struct sembuf down_nw = {0, -1, IPC_NOWAIT};
    struct sembuf zero_nw = {0, 0, IPC_NOWAIT};
    struct sembuf pair[2] = {{0, 1, 0}, {1, 1, SEM_UNDO}};
    /* Operations that can proceed do, at once. */
    CHECK(semtimedop(id, &up, 1, &forever) == 0);
    CHECK(semtimedop(id, &up, 1, &long_s) == 0);
    CHECK(semtimedop(id, pair, 2, &forever) == 0);
    CHECK(getval(id, 0) == 3 && getval(id, 1) == 1);
    /* IPC_NOWAIT still wins over the timeout. */
    EXPECT_ERR(semtimedop(id, &zero_nw, 1, &forever), EAGAIN);
    CHECK(semtimedop(id, &down, 1, &forever) == 0);
    CHECK(semtimedop(id, &down, 1, &forever) == 0);
    CHECK(semtimedop(id, &down, 1, &long_s) == 0);
    EXPECT_ERR(semtimedop(id, &down_nw, 1, &forever), EAGAIN);
    CHECK(getval(id, 0) == 0);

    /* A waiter with such a timeout sleeps until the value lets it through. */
    struct longwait w = {id, {0, -1, 0}};
    pid_t pid = spawn_child(child_long_wait, &w);
    CHECK(wait_for(id, 0, GETNCNT, 1));
    CHECK(op1(id, 0, 1, 0) == 0);
    CHECK(EXITED_OK(reap_child(pid, 10000)));
    CHECK(getval(id, 0) == 0);
    setval(id, 1, 1);
    struct longwait z = {id, {1, 0, 0}};
    pid = spawn_child(child_long_wait, &z);
    CHECK(wait_for(id, 1, GETZCNT, 1));
    CHECK(op1(id, 1, -1, 0) == 0);
    CHECK(EXITED_OK(reap_child(pid, 10000)));
    rm_set(id);
}

/* The child's SEM_UNDO history on the set, then it waits for the clock to pass the second
 * it noted (*mark) and exits. */
struct exitctx {
    int id;
    int variant;
    volatile long *mark;
};

static void child_undo_then_exit(void *arg) {
    struct exitctx *c = arg;
    switch (c->variant) {
    case 0: /* an adjustment left */
        CHECK(op1(c->id, 0, 1, SEM_UNDO) == 0);
        break;
    case 1: /* adjustments back to 0 */
        CHECK(op1(c->id, 0, 1, SEM_UNDO) == 0);
        CHECK(op1(c->id, 0, -1, SEM_UNDO) == 0);
        break;
    case 2: /* only a failed call */
        EXPECT_ERR(op1(c->id, 0, -1, SEM_UNDO | IPC_NOWAIT), EAGAIN);
        break;
    case 3: /* cleared by SETVAL */
        CHECK(op1(c->id, 1, 1, SEM_UNDO) == 0);
        CHECK(setval(c->id, 1, 0) == 0);
        break;
    default: /* no SEM_UNDO: exit is no operation */
        CHECK(op1(c->id, 0, 1, 0) == 0);
    }
    long t = (long)time(NULL);
    *c->mark = t;
    long long end = now_ms() + 3000;
    while ((long)time(NULL) <= t && now_ms() < end)
        sleep_ms(10);
}

static void test_exit_sets_otime(void *shared) {
    for (int variant = 0; variant <= 4; variant++) {
        int id = new_set(2);
        struct exitctx c = {id, variant, shared};
        *c.mark = -1;
        pid_t pid = spawn_child(child_undo_then_exit, &c);
        CHECK(EXITED_OK(reap_child(pid, 10000)));
        long mark = *c.mark;
        CHECK(mark > 0);
        struct semid_ds ds;
        CHECK(stat_set(id, &ds) == 0);
        if (variant < 4) {
            CHECK(ds.sem_otime > mark);
            if (ds.sem_otime <= mark)
                fprintf(stderr, "  variant %d: sem_otime %ld, not after %ld\n", variant, (long)ds.sem_otime, mark);
        } else {
            CHECK(ds.sem_otime > 0 && ds.sem_otime <= mark);
        }
        CHECK(getval(id, 0) == (variant == 4 ? 1 : 0));
        rm_set(id);
    }
}

static void test_cmd_high_bits(void) {
    int id = new_set(2);
    unsigned short vals[2] = {3, 4};
    CHECK(setall(id, vals) == 0);
    struct semid_ds ds;
    CHECK(stat_set(id, &ds) == 0);
    int cmds[] = {IPC_RMID, IPC_SET, IPC_STAT, IPC_INFO, SEM_STAT, SEM_INFO, SEM_STAT_ANY,
                  GETPID, GETVAL, GETALL, GETNCNT, GETZCNT, SETVAL, SETALL};
    int high[] = {IPC_64, 0x200, 0x1000, 0x10000, 0x40000000};
    union semun u;
    struct seminfo si;
    unsigned short in[2] = {9, 9};
    for (unsigned i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        for (unsigned h = 0; h < sizeof(high) / sizeof(high[0]); h++) {
            int cmd = cmds[i] | high[h];
            switch (cmds[i]) {
            case SETVAL:
                u.val = 7;
                break;
            case GETALL:
                u.array = vals;
                break;
            case SETALL:
                u.array = in;
                break;
            case IPC_INFO:
            case SEM_INFO:
                u.__buf = &si;
                break;
            default:
                u.buf = &ds;
            }
            errno = 0;
            int r = semctl(id, 0, cmd, u);
            CHECK(r == -1 && errno == EINVAL);
            if (r != -1 || errno != EINVAL)
                fprintf(stderr, "  semctl cmd %#x: %d errno %d\n", cmd, r, errno);
        }
    }
    /* Nothing happened: the set is there with its values. */
    CHECK(getval(id, 0) == 3 && getval(id, 1) == 4);
    CHECK(stat_set(id, &ds) == 0);
    CHECK(ds.sem_nsems == 2 && ds.sem_perm.mode == 0600);
    EXPECT_ERR(cmd_no_arg(-1, 0, GETVAL | IPC_64), EINVAL);
    rm_set(id);
}

int main(void) {
    read_sem_limits();
    sem_watchdog(40);

    test_nsops_width();
    test_timeout_copied_first();
    test_long_timeout();
    test_cmd_high_bits();
    void *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(shared != MAP_FAILED);
    if (shared != MAP_FAILED)
        test_exit_sets_otime(shared);

    remove_all();
    return TEST_DONE();
}
