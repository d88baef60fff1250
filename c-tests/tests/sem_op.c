/* semop/semtimedop without blocking: sem_op > 0, < 0 and == 0, IPC_NOWAIT (EAGAIN, judged
 * by the flag of the operation that would block), atomicity of multi-operation calls (a
 * call that fails changes nothing), the same semaphore named several times in one call
 * (operations apply in order), SEMVMX (ERANGE), and the errors with their order:
 * E2BIG (nsops > SEMOPM, checked first), EINVAL (nsops 0, bad or removed id), EFAULT
 * (NULL sops, checked before the id), EFBIG (sem_num >= nsems, before blocking),
 * semtimedop's EINVAL for a bad timespec (after EFAULT, before EFBIG) and EAGAIN for a
 * zero timeout; semtimedop with a NULL timeout behaves as semop. */
#include "../common.h"
#include "../sem_common.h"

#include <sys/ipc.h>
#include <sys/sem.h>

/* 1 if the set's first n values are exactly want. */
static int values_are(int id, int n, const unsigned short *want) {
    unsigned short got[16];
    union semun u;
    u.array = got;
    if (semctl(id, 0, GETALL, u) != 0)
        return 0;
    for (int i = 0; i < n; i++)
        if (got[i] != want[i]) {
            fprintf(stderr, "  value[%d] = %u, want %u\n", i, got[i], want[i]);
            return 0;
        }
    return 1;
}

static void test_single(void) {
    int id = new_set(1);
    CHECK(op1(id, 0, 3, 0) == 0);
    CHECK(getval(id, 0) == 3);
    CHECK(op1(id, 0, -2, 0) == 0);
    CHECK(getval(id, 0) == 1);
    /* Wait-for-zero on a non-zero value, decrement below zero: EAGAIN with IPC_NOWAIT. */
    EXPECT_ERR(op1(id, 0, 0, IPC_NOWAIT), EAGAIN);
    EXPECT_ERR(op1(id, 0, -2, IPC_NOWAIT), EAGAIN);
    EXPECT_ERR(op1(id, 0, -2, IPC_NOWAIT | SEM_UNDO), EAGAIN);
    CHECK(getval(id, 0) == 1);
    CHECK(op1(id, 0, -1, IPC_NOWAIT) == 0);
    CHECK(getval(id, 0) == 0);
    /* Wait-for-zero on zero proceeds at once, with or without IPC_NOWAIT. */
    CHECK(op1(id, 0, 0, 0) == 0);
    CHECK(op1(id, 0, 0, IPC_NOWAIT) == 0);
    EXPECT_ERR(op1(id, 0, -1, IPC_NOWAIT), EAGAIN);
    /* Increments never block; IPC_NOWAIT changes nothing for them. */
    CHECK(op1(id, 0, 1, IPC_NOWAIT) == 0);
    CHECK(op1(id, 0, SEMVMX - 1, 0) == 0);
    CHECK(getval(id, 0) == SEMVMX);
    /* Past SEMVMX: ERANGE at once, with or without IPC_NOWAIT; nothing changes. */
    EXPECT_ERR(op1(id, 0, 1, 0), ERANGE);
    EXPECT_ERR(op1(id, 0, 1, IPC_NOWAIT), ERANGE);
    EXPECT_ERR(op1(id, 0, SEMVMX, 0), ERANGE);
    CHECK(getval(id, 0) == SEMVMX);
    EXPECT_ERR(op1(id, 0, -32768, IPC_NOWAIT), EAGAIN);
    CHECK(op1(id, 0, -SEMVMX, 0) == 0);
    CHECK(getval(id, 0) == 0);
    CHECK(op1(id, 0, SEMVMX, 0) == 0);
    CHECK(op1(id, 0, -32767, IPC_NOWAIT) == 0);
    CHECK(getval(id, 0) == 0);
    setval(id, 0, 100);
    EXPECT_ERR(op1(id, 0, SEMVMX - 99, 0), ERANGE);
    CHECK(op1(id, 0, SEMVMX - 100, 0) == 0);
    CHECK(getval(id, 0) == SEMVMX);
}

static void test_multi(void) {
    int id = new_set(3);
    unsigned short init[3] = {1, 0, 5};
    EXPECT_OK(setall(id, init));

    /* The second operation would block: the first is not applied. */
    struct sembuf a[2] = {{0, -1, IPC_NOWAIT}, {1, -1, IPC_NOWAIT}};
    EXPECT_ERR(semop(id, a, 2), EAGAIN);
    CHECK(values_are(id, 3, init));
    /* EAGAIN comes from the flag of the operation that would block ... */
    struct sembuf b[2] = {{0, -1, 0}, {1, -1, IPC_NOWAIT}};
    EXPECT_ERR(semop(id, b, 2), EAGAIN);
    CHECK(values_are(id, 3, init));
    struct sembuf c[2] = {{0, -1, SEM_UNDO}, {1, -1, SEM_UNDO | IPC_NOWAIT}};
    EXPECT_ERR(semop(id, c, 2), EAGAIN);
    CHECK(values_are(id, 3, init));
    /* ... and a blocked wait-for-zero counts the same way. */
    struct sembuf d[3] = {{0, 1, 0}, {2, 3, 0}, {0, 0, IPC_NOWAIT}};
    EXPECT_ERR(semop(id, d, 3), EAGAIN);
    CHECK(values_are(id, 3, init));

    /* All operations succeed together. */
    struct sembuf e[3] = {{2, -5, 0}, {0, -1, 0}, {1, 2, 0}};
    CHECK(semop(id, e, 3) == 0);
    unsigned short after_e[3] = {0, 2, 0};
    CHECK(values_are(id, 3, after_e));
    struct sembuf f[3] = {{1, -1, 0}, {2, 0, 0}, {0, 0, IPC_NOWAIT}};
    CHECK(semop(id, f, 3) == 0);
    unsigned short after_f[3] = {0, 1, 0};
    CHECK(values_are(id, 3, after_f));
    struct sembuf g[3] = {{0, 1, 0}, {2, 3, 0}, {1, 0, IPC_NOWAIT}};
    EXPECT_ERR(semop(id, g, 3), EAGAIN);
    CHECK(values_are(id, 3, after_f));

    /* ERANGE anywhere in the call: nothing applied. */
    unsigned short big[3] = {5, SEMVMX, 0};
    EXPECT_OK(setall(id, big));
    struct sembuf h[2] = {{0, -1, 0}, {1, 1, 0}};
    EXPECT_ERR(semop(id, h, 2), ERANGE);
    CHECK(values_are(id, 3, big));
    struct sembuf h2[2] = {{0, -1, SEM_UNDO}, {1, 1, SEM_UNDO}};
    EXPECT_ERR(semop(id, h2, 2), ERANGE);
    CHECK(values_are(id, 3, big));
    /* Operations are judged in order: a block before the overflow wins, and an
     * overflow before a block wins. */
    struct sembuf i1[2] = {{2, -1, IPC_NOWAIT}, {1, 1, 0}};
    EXPECT_ERR(semop(id, i1, 2), EAGAIN);
    struct sembuf i2[2] = {{1, 1, 0}, {2, -1, IPC_NOWAIT}};
    EXPECT_ERR(semop(id, i2, 2), ERANGE);
    struct sembuf i3[2] = {{1, 1, 0}, {2, -1, 0}};
    EXPECT_ERR(semop(id, i3, 2), ERANGE);
    CHECK(values_are(id, 3, big));
}

/* The same semaphore several times in one call: applied in order, all or nothing. */
static void test_duplicates(void) {
    int id = new_set(2);
    unsigned short one = 1, zero = 0;
    setval(id, 0, 1);
    struct sembuf a[2] = {{0, 2, 0}, {0, -3, 0}};
    CHECK(semop(id, a, 2) == 0);
    CHECK(getval(id, 0) == 0);

    setval(id, 0, 1);
    struct sembuf b[2] = {{0, -3, IPC_NOWAIT}, {0, 2, 0}};
    EXPECT_ERR(semop(id, b, 2), EAGAIN);
    CHECK(values_are(id, 1, &one));

    struct sembuf c[2] = {{0, -1, 0}, {0, 0, 0}};
    CHECK(semop(id, c, 2) == 0);
    CHECK(values_are(id, 1, &zero));

    struct sembuf d[2] = {{0, 0, 0}, {0, 1, 0}};
    CHECK(semop(id, d, 2) == 0);
    CHECK(values_are(id, 1, &one));

    struct sembuf e[2] = {{0, 1, 0}, {0, 0, IPC_NOWAIT}};
    EXPECT_ERR(semop(id, e, 2), EAGAIN);
    CHECK(values_are(id, 1, &one));

    struct sembuf f[2] = {{0, -1, 0}, {0, -1, IPC_NOWAIT}};
    EXPECT_ERR(semop(id, f, 2), EAGAIN);
    CHECK(values_are(id, 1, &one));

    /* An intermediate value past SEMVMX is ERANGE even if the end value is fine. */
    struct sembuf g[2] = {{0, SEMVMX, 0}, {0, -5, 0}};
    EXPECT_ERR(semop(id, g, 2), ERANGE);
    CHECK(values_are(id, 1, &one));
    struct sembuf h[3] = {{0, SEMVMX - 1, 0}, {0, -SEMVMX, 0}, {1, 1, 0}};
    CHECK(semop(id, h, 3) == 0);
    CHECK(getval(id, 0) == 0 && getval(id, 1) == 1);

    /* A failing later operation on another semaphore undoes both earlier ones. */
    struct sembuf k[4] = {{0, 4, 0}, {0, -1, 0}, {1, -1, 0}, {1, -1, IPC_NOWAIT}};
    EXPECT_ERR(semop(id, k, 4), EAGAIN);
    CHECK(getval(id, 0) == 0 && getval(id, 1) == 1);
}

static void test_e2big(void) {
    int id = new_set(2);
    int n = (int)lim_semopm;
    struct sembuf *ops = calloc((size_t)n + 1, sizeof(*ops));
    if (!ops)
        exit(2);
    /* SEMOPM wait-for-zero operations are allowed ... */
    CHECK(semop(id, ops, (size_t)n) == 0);
    /* ... one more is E2BIG. */
    EXPECT_ERR(semop(id, ops, (size_t)n + 1), E2BIG);
    struct timespec ts = {1, 0};
    EXPECT_ERR(semtimedop(id, ops, (size_t)n + 1, &ts), E2BIG);
    /* E2BIG is checked before the id, the pointer and the timeout. */
    EXPECT_ERR(semop(-1, ops, (size_t)n + 1), E2BIG);
    EXPECT_ERR(semop(id, NULL, (size_t)n + 1), E2BIG);
    EXPECT_ERR(semop(-1, NULL, (size_t)n + 1), E2BIG);
    struct timespec bad = {0, 1000000000L};
    EXPECT_ERR(semtimedop(id, ops, (size_t)n + 1, &bad), E2BIG);

    /* SEMOPM operations with effects, on both semaphores, in order. */
    for (int i = 0; i < n; i++) {
        ops[i].sem_num = (unsigned short)(i % 2);
        ops[i].sem_op = (short)((i % 4) < 2 ? 1 : -1);
        ops[i].sem_flg = 0;
    }
    CHECK(semop(id, ops, (size_t)n) == 0);
    CHECK(getval(id, 0) == 0 && getval(id, 1) == 0);
    for (int i = 0; i < n; i++) {
        ops[i].sem_num = 1;
        ops[i].sem_op = 1;
    }
    CHECK(semop(id, ops, (size_t)n) == 0);
    CHECK(getval(id, 1) == n);
    free(ops);
}

static void test_einval(void) {
    int id = new_set(1);
    struct sembuf b = {0, 1, 0};
    /* nsops 0: EINVAL, whatever the pointer. */
    EXPECT_ERR(semop(id, &b, 0), EINVAL);
    EXPECT_ERR(semop(id, NULL, 0), EINVAL);
    struct timespec ts = {1, 0};
    EXPECT_ERR(semtimedop(id, &b, 0, &ts), EINVAL);
    /* Negative id. */
    EXPECT_ERR(semop(-1, &b, 1), EINVAL);
    EXPECT_ERR(semtimedop(-1, &b, 1, &ts), EINVAL);
    EXPECT_ERR(semtimedop(-1, &b, 1, NULL), EINVAL);
    CHECK(getval(id, 0) == 0);

    /* A removed set: EINVAL, also with SEM_UNDO or IPC_NOWAIT. */
    int dead = semget(IPC_PRIVATE, 1, 0600);
    CHECK(dead >= 0);
    EXPECT_OK(semctl(dead, 0, IPC_RMID));
    EXPECT_ERR(semop(dead, &b, 1), EINVAL);
    struct sembuf u = {0, 1, SEM_UNDO};
    EXPECT_ERR(semop(dead, &u, 1), EINVAL);
    struct sembuf w = {0, -1, IPC_NOWAIT};
    EXPECT_ERR(semop(dead, &w, 1), EINVAL);
    EXPECT_ERR(semtimedop(dead, &b, 1, &ts), EINVAL);
}

static void test_efbig(void) {
    int id = new_set(2);
    struct sembuf a = {2, 1, 0};
    EXPECT_ERR(semop(id, &a, 1), EFBIG);
    struct sembuf b = {65535, 1, 0};
    EXPECT_ERR(semop(id, &b, 1), EFBIG);
    struct sembuf c = {2, 0, IPC_NOWAIT | SEM_UNDO};
    EXPECT_ERR(semop(id, &c, 1), EFBIG);
    struct timespec ts = {1, 0};
    EXPECT_ERR(semtimedop(id, &a, 1, &ts), EFBIG);
    /* One bad sem_num fails the whole call before anything is applied, and before a
     * blocking operation in the same call could block. */
    struct sembuf d[2] = {{0, 1, 0}, {7, 1, 0}};
    EXPECT_ERR(semop(id, d, 2), EFBIG);
    struct sembuf e[2] = {{0, -1, 0}, {2, -1, SEM_UNDO}};
    EXPECT_ERR(semop(id, e, 2), EFBIG);
    struct sembuf f[2] = {{1, 0, 0}, {3, 0, 0}};
    setval(id, 1, 1);
    EXPECT_ERR(semop(id, f, 2), EFBIG);
    CHECK(getval(id, 0) == 0 && getval(id, 1) == 1);
}

static void test_efault(void) {
    int id = new_set(1);
    struct timespec ts = {1, 0};
    struct timespec bad = {0, 1000000000L};
    EXPECT_ERR(semop(id, NULL, 1), EFAULT);
    EXPECT_ERR(semop(id, NULL, 3), EFAULT);
    EXPECT_ERR(semtimedop(id, NULL, 1, &ts), EFAULT);
    EXPECT_ERR(semtimedop(id, NULL, 1, NULL), EFAULT);
    /* The operations are copied in before the id and the timeout are looked at. */
    EXPECT_ERR(semop(-1, NULL, 1), EFAULT);
    EXPECT_ERR(semtimedop(id, NULL, 1, &bad), EFAULT);
    CHECK(getval(id, 0) == 0);
}

static void test_semtimedop(void) {
    int id = new_set(2);
    struct sembuf up = {0, 1, 0};
    struct sembuf down = {0, -1, 0};
    struct sembuf zero = {1, 0, 0};
    /* NULL timeout: same as semop. */
    CHECK(semtimedop(id, &up, 1, NULL) == 0);
    CHECK(getval(id, 0) == 1);
    /* An operation that can proceed does so at once, whatever the timeout. */
    struct timespec ts = {5, 0};
    CHECK(semtimedop(id, &down, 1, &ts) == 0);
    CHECK(getval(id, 0) == 0);
    struct timespec ts0 = {0, 0};
    CHECK(semtimedop(id, &up, 1, &ts0) == 0);
    CHECK(getval(id, 0) == 1);
    struct timespec edge = {0, 999999999L};
    CHECK(semtimedop(id, &down, 1, &edge) == 0);
    CHECK(getval(id, 0) == 0);

    /* A bad timespec is EINVAL even if the operation could proceed. */
    struct timespec bad_nsec = {0, 1000000000L};
    struct timespec neg_nsec = {0, -1};
    struct timespec neg_sec = {-1, 0};
    EXPECT_ERR(semtimedop(id, &up, 1, &bad_nsec), EINVAL);
    EXPECT_ERR(semtimedop(id, &up, 1, &neg_nsec), EINVAL);
    EXPECT_ERR(semtimedop(id, &up, 1, &neg_sec), EINVAL);
    EXPECT_ERR(semtimedop(id, &zero, 1, &bad_nsec), EINVAL);
    CHECK(getval(id, 0) == 0);
    /* ... and it is checked before sem_num (EFBIG). */
    struct sembuf far = {9, 1, 0};
    EXPECT_ERR(semtimedop(id, &far, 1, &bad_nsec), EINVAL);

    /* A zero or tiny timeout on an operation that must wait: EAGAIN, nothing changed. */
    EXPECT_ERR(semtimedop(id, &down, 1, &ts0), EAGAIN);
    setval(id, 1, 3);
    EXPECT_ERR(semtimedop(id, &zero, 1, &ts0), EAGAIN);
    struct timespec ms1 = {0, 1000000L};
    EXPECT_ERR(semtimedop(id, &down, 1, &ms1), EAGAIN);
    struct sembuf pair[2] = {{1, -1, 0}, {0, -1, 0}};
    EXPECT_ERR(semtimedop(id, pair, 2, &ms1), EAGAIN);
    CHECK(getval(id, 0) == 0 && getval(id, 1) == 3);
    CHECK(semctl(id, 0, GETNCNT) == 0 && semctl(id, 1, GETZCNT) == 0);
    /* IPC_NOWAIT with a timeout: EAGAIN at once. */
    struct sembuf nw = {0, -1, IPC_NOWAIT};
    EXPECT_ERR(semtimedop(id, &nw, 1, &ts), EAGAIN);
    /* ERANGE through semtimedop. */
    setval(id, 0, SEMVMX);
    EXPECT_ERR(semtimedop(id, &up, 1, &ts), ERANGE);
    CHECK(getval(id, 0) == SEMVMX);
}

int main(void) {
    read_sem_limits();
    sem_watchdog(14); /* none of these calls may block */

    test_single();
    test_multi();
    test_duplicates();
    test_e2big();
    test_einval();
    test_efbig();
    test_efault();
    test_semtimedop();

    remove_all();
    return TEST_DONE();
}
