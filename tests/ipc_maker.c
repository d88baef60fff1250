/* Makes the same objects wherever it runs (against the kernel, or preloaded under ipcshim)
 * for the `ipcshim ls` / `rm` tests: with keys BASE+1..3,
 *   a queue (mode 0640) holding two messages of 10 bytes,
 *   a segment of 5000 bytes (mode 0600), attached once and detached,
 *   a set of 3 semaphores (mode 0600) set to 1 2 3, then one semop (+1 on #0).
 * Prints "msg ID shm ID sem ID". Exit status 1 (and the failing call) on any error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>

static void die(const char *what) {
    perror(what);
    exit(1);
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    key_t base = (key_t)strtol(argv[1], NULL, 0);
    int q = msgget(base + 1, IPC_CREAT | IPC_EXCL | 0640);
    if (q < 0)
        die("msgget");
    struct { long type; char text[10]; } m = { 1, "123456789" };
    for (int i = 0; i < 2; i++)
        if (msgsnd(q, &m, sizeof m.text, 0) < 0)
            die("msgsnd");
    int s = shmget(base + 2, 5000, IPC_CREAT | IPC_EXCL | 0600);
    if (s < 0)
        die("shmget");
    char *p = shmat(s, NULL, 0);
    if (p == (void *)-1)
        die("shmat");
    memset(p, 1, 5000);
    if (shmdt(p) < 0)
        die("shmdt");
    int sem = semget(base + 3, 3, IPC_CREAT | IPC_EXCL | 0600);
    if (sem < 0)
        die("semget");
    unsigned short values[3] = { 1, 2, 3 };
    if (semctl(sem, 0, SETALL, values) < 0)
        die("semctl");
    struct sembuf op = { 0, 1, 0 };
    if (semop(sem, &op, 1) < 0)
        die("semop");
    printf("msg %d shm %d sem %d\n", q, s, sem);
    return 0;
}
