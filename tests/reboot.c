/* For the Rust test of a killed broker (tests/broker_lifecycle.rs): a client with a segment
 * attached, a queue and a set, and two children blocked on them. It prints "ready", waits
 * for a line on stdin (the broker has been SIGKILLed meanwhile), then prints one
 * "name result errno" line per check. */
/* asleep_in_call: /proc says a task sleeps in its IPC call (the C suite's helpers). */
#include "../c-tests/common.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct msg {
    long type;
    char text[8];
};

static void report(const char *name, long r) { printf("%s %ld %d\n", name, r, r == -1 ? errno : 0); }

/* How a blocked child ended within 5 s: "errno N", or "blocked" if it did not. */
static void report_child(const char *name, pid_t kid) {
    for (int i = 0; i < 500; i++) {
        int st;
        if (waitpid(kid, &st, WNOHANG) == kid) {
            printf("%s ended %d\n", name, WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
            return;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    kill(kid, SIGKILL);
    printf("%s blocked\n", name);
}

int main(void) {
    int shm = shmget(IPC_PRIVATE, 4096, 0600);
    char *p = shmat(shm, NULL, 0);
    if (p == (void *)-1)
        return 1;
    strcpy(p, "kept");
    int q = msgget(IPC_PRIVATE, 0600), s = semget(IPC_PRIVATE, 1, 0600);
    fflush(stdout);
    /* Each blocked child exits with the errno its call failed with. */
    pid_t receiver = fork();
    if (receiver == 0) {
        struct msg m;
        _exit(msgrcv(q, &m, sizeof m.text, 0, 0) == -1 ? errno : 0);
    }
    pid_t waiter = fork();
    if (waiter == 0) {
        struct sembuf op = {0, -1, 0};
        _exit(semop(s, &op, 1) == -1 ? errno : 0);
    }
    /* Ready once both sleep in their calls: the waiter counts in GETNCNT; the receiver
     * is seen in its futex wait (a fixed pause is no proof on a loaded machine: a receiver
     * that began its call only after the broker's death met the new broker's queue of the
     * same id, and took the message sent to it). */
    for (int ms = 0; semctl(s, 0, GETNCNT) != 1 || !asleep_in_call(receiver, receiver); ms++) {
        if (ms == 30000) {
            printf("not asleep after 30 s\n");
            kill(receiver, SIGKILL);
            kill(waiter, SIGKILL);
            return 1;
        }
        usleep(1000);
    }
    printf("ready\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        return 1;
    printf("segment %s\n", p);
    struct shmid_ds ds;
    report("old_shmctl", shmctl(shm, IPC_STAT, &ds));
    struct msg m = {1, "x"};
    report("old_msgsnd", msgsnd(q, &m, 2, IPC_NOWAIT));
    struct sembuf v = {0, 1, 0};
    report("old_semop", semop(s, &v, 1));
    int nq = msgget(IPC_PRIVATE, 0600);
    report("new_msgget", nq >= 0 ? 0 : -1);
    report("new_msgsnd", msgsnd(nq, &m, 2, IPC_NOWAIT));
    report_child("receiver", receiver);
    report_child("waiter", waiter);
    return 0;
}
