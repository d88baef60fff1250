/* SEM_UNDO from several threads of one process: the threads share the process's
 * adjustments (the kernel keeps one undo list per process), so the units every thread
 * still holds when the process ends come back at its exit, whichever thread took them.
 * Four threads take and give back units of two semaphores with single operations (under
 * ipcshim, through the lock: a process with several threads does not become resident on a
 * word, see docs/architecture.md) and with two-operation calls; each ends holding
 * one unit of semaphore 0 and two of semaphore 1. While the child lives the values show
 * exactly what it holds; once it has exited (and, in a second round, been SIGKILLed
 * instead) they are back at their start. */
#include "../common.h"
#include "../sem_common.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/wait.h>

#define NT 4
#define ROUNDS 20000
#define START 100

static int set_id;

static void *thread_main(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg;
    int bad = 0;
    for (int i = 0; i < ROUNDS; i++) {
        unsigned short a = (unsigned short)(rand_r(&seed) % 2);
        short k = (short)(1 + rand_r(&seed) % 3);
        if (rand_r(&seed) % 4) {
            struct sembuf p = {a, (short)-k, SEM_UNDO}, v = {a, k, SEM_UNDO};
            bad |= semop(set_id, &p, 1) != 0;
            bad |= semop(set_id, &v, 1) != 0;
        } else {
            struct sembuf p[2] = {{0, -1, SEM_UNDO}, {1, (short)-k, SEM_UNDO}};
            struct sembuf v[2] = {{1, k, SEM_UNDO}, {0, 1, SEM_UNDO}};
            bad |= semop(set_id, p, 2) != 0;
            bad |= semop(set_id, v, 2) != 0;
        }
    }
    struct sembuf keep[2] = {{0, -1, SEM_UNDO}, {1, -2, SEM_UNDO}};
    bad |= semop(set_id, &keep[0], 1) != 0;
    bad |= semop(set_id, &keep[1], 1) != 0;
    return (void *)(uintptr_t)bad;
}

/* The child: NT threads, then reports over `fd` and waits to be told to go. */
static void child(int done_fd, int go_fd, int killed) {
    pthread_t t[NT];
    for (int i = 0; i < NT; i++)
        if (pthread_create(&t[i], NULL, thread_main, (void *)(uintptr_t)(i * 7919 + 1)) != 0)
            _exit(2);
    int bad = 0;
    for (int i = 0; i < NT; i++) {
        void *r;
        pthread_join(t[i], &r);
        bad |= (int)(uintptr_t)r;
    }
    char c = bad ? 'x' : 'k';
    if (write(done_fd, &c, 1) != 1)
        _exit(3);
    if (read(go_fd, &c, 1) != 1)
        _exit(4);
    if (killed)
        raise(SIGKILL);
    _exit(0);
}

static void one_round(int killed) {
    int done[2], go[2];
    CHECK(pipe(done) == 0 && pipe(go) == 0);
    pid_t pid = fork_child();
    if (pid == 0)
        child(done[1], go[0], killed);
    char c = 0;
    CHECK(read(done[0], &c, 1) == 1);
    CHECK(c == 'k');
    CHECK(getval(set_id, 0) == START - NT);
    CHECK(getval(set_id, 1) == START - 2 * NT);
    CHECK(write(go[1], "g", 1) == 1);
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECK(killed ? WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL : EXITED_OK(st));
    CHECK(getval(set_id, 0) == START);
    CHECK(getval(set_id, 1) == START);
    close(done[0]);
    close(done[1]);
    close(go[0]);
    close(go[1]);
}

int main(void) {
    sem_watchdog(60);
    set_id = new_set(2);
    union semun u;
    u.val = START;
    EXPECT_OK(semctl(set_id, 0, SETVAL, u));
    EXPECT_OK(semctl(set_id, 1, SETVAL, u));
    one_round(0);
    one_round(1);
    rm_set(set_id);
    return TEST_DONE();
}
