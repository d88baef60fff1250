/* ipcshim demo: an ordinary, unmodified System V IPC program.
 *
 * The parent makes a key file, derives three keys from it with ftok, and creates a
 * shared memory segment, a semaphore set and a message queue. It then execs an
 * unrelated process (this program again, /proc/self/exe, with the role "child"), which
 * finds all three by key, writes a greeting into the segment, posts the semaphore and
 * sends a message. The parent waits on the semaphore, receives the message, checks that
 * everything matches, prints what happened and removes everything.
 *
 * Exits 0 only if everything matched. Runs against the kernel as is, and with
 * LD_PRELOAD=libipcshim.so (also where the kernel's SysV IPC is blocked). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SHM_SIZE 4096

union semun {
    int val;
    struct semid_ds *buf;
    unsigned short *array;
};

struct demo_msg {
    long mtype;
    char mtext[128];
};

static int make_keys(const char *path, key_t *kshm, key_t *ksem, key_t *kmsg) {
    *kshm = ftok(path, 'S');
    *ksem = ftok(path, 'E');
    *kmsg = ftok(path, 'Q');
    if (*kshm == -1 || *ksem == -1 || *kmsg == -1) {
        fprintf(stderr, "ftok(%s): %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* The exec'd process: knows only the key file's path. */
static int child_role(const char *path) {
    key_t kshm, ksem, kmsg;
    if (make_keys(path, &kshm, &ksem, &kmsg) != 0)
        return 1;
    int shmid = shmget(kshm, 0, 0);
    int semid = semget(ksem, 0, 0);
    int msqid = msgget(kmsg, 0);
    if (shmid < 0 || semid < 0 || msqid < 0) {
        fprintf(stderr, "child:  lookup by key failed: shm %d sem %d msg %d: %s\n", shmid,
                semid, msqid, strerror(errno));
        return 1;
    }
    printf("child:  pid %d found shm id %d, sem id %d, msg id %d by key\n", (int)getpid(),
           shmid, semid, msqid);
    fflush(stdout);

    char *p = shmat(shmid, NULL, 0);
    if (p == (void *)-1) {
        perror("child:  shmat");
        return 1;
    }
    snprintf(p, SHM_SIZE, "hello from child pid %d", (int)getpid());
    if (shmdt(p) != 0) {
        perror("child:  shmdt");
        return 1;
    }

    /* No SEM_UNDO: the post must outlive this process. */
    struct sembuf up = {0, +1, 0};
    if (semop(semid, &up, 1) != 0) {
        perror("child:  semop");
        return 1;
    }

    struct demo_msg m = {1, ""};
    snprintf(m.mtext, sizeof(m.mtext), "child %d saw shm %d sem %d msg %d", (int)getpid(),
             shmid, semid, msqid);
    if (msgsnd(msqid, &m, strlen(m.mtext) + 1, 0) != 0) {
        perror("child:  msgsnd");
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "child") == 0)
        return child_role(argv[2]);

    int ok = 1;
    char path[] = "/tmp/ipcshim-demo-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) {
        perror("mkstemp");
        return 1;
    }
    close(fd);

    key_t kshm, ksem, kmsg;
    if (make_keys(path, &kshm, &ksem, &kmsg) != 0) {
        unlink(path);
        return 1;
    }
    printf("parent: keys from ftok(\"%s\"): shm 0x%08x, sem 0x%08x, msg 0x%08x\n", path,
           (unsigned)kshm, (unsigned)ksem, (unsigned)kmsg);

    int shmid = shmget(kshm, SHM_SIZE, IPC_CREAT | IPC_EXCL | 0600);
    int semid = semget(ksem, 1, IPC_CREAT | IPC_EXCL | 0600);
    int msqid = msgget(kmsg, IPC_CREAT | IPC_EXCL | 0600);
    char *p = (void *)-1;
    pid_t pid = -1;
    if (shmid < 0 || semid < 0 || msqid < 0) {
        fprintf(stderr, "parent: creating the objects failed: shm %d sem %d msg %d: %s\n",
                shmid, semid, msqid, strerror(errno));
        ok = 0;
        goto cleanup;
    }
    union semun arg = {.val = 0};
    if (semctl(semid, 0, SETVAL, arg) != 0) {
        perror("parent: semctl SETVAL");
        ok = 0;
        goto cleanup;
    }
    p = shmat(shmid, NULL, 0);
    if (p == (void *)-1) {
        perror("parent: shmat");
        ok = 0;
        goto cleanup;
    }
    strcpy(p, "(nothing yet)");
    printf("parent: created shm id %d (%d bytes), sem id %d (value 0), msg id %d\n", shmid,
           SHM_SIZE, semid, msqid);

    printf("parent: exec'ing an unrelated process that knows only the path \"%s\"\n", path);
    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        execl("/proc/self/exe", argv[0], "child", path, (char *)NULL);
        perror("exec /proc/self/exe");
        _exit(127);
    }
    if (pid < 0) {
        perror("fork");
        ok = 0;
        goto cleanup;
    }

    /* Wait (at most 20 s) for the child's post. */
    struct sembuf down = {0, -1, 0};
    struct timespec limit = {20, 0};
    if (semtimedop(semid, &down, 1, &limit) != 0) {
        fprintf(stderr, "parent: waiting on the semaphore: %s\n", strerror(errno));
        ok = 0;
        goto cleanup;
    }
    printf("parent: the child posted the semaphore (semop -1 returned)\n");

    char want[64];
    snprintf(want, sizeof(want), "hello from child pid %d", (int)pid);
    printf("parent: child wrote: \"%s\"\n", p);
    if (strcmp(p, want) != 0) {
        fprintf(stderr, "parent: expected \"%s\"\n", want);
        ok = 0;
    }

    /* The message was sent after the post; wait for it (at most 20 s). */
    struct demo_msg m;
    memset(&m, 0, sizeof(m));
    ssize_t n = -1;
    for (int i = 0; i < 2000; i++) {
        n = msgrcv(msqid, &m, sizeof(m.mtext), 0, IPC_NOWAIT);
        if (n >= 0 || errno != ENOMSG)
            break;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (n < 0) {
        fprintf(stderr, "parent: msgrcv: %s\n", strerror(errno));
        ok = 0;
    } else {
        printf("parent: message received (type %ld, %zd bytes): \"%s\"\n", m.mtype, n, m.mtext);
        char wantmsg[128];
        snprintf(wantmsg, sizeof(wantmsg), "child %d saw shm %d sem %d msg %d", (int)pid,
                 shmid, semid, msqid);
        if (m.mtype != 1 || strcmp(m.mtext, wantmsg) != 0 || (size_t)n != strlen(wantmsg) + 1) {
            fprintf(stderr, "parent: expected type 1 \"%s\"\n", wantmsg);
            ok = 0;
        }
    }

    pid_t child = pid;
    int st = -1;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "parent: child exited with status 0x%x\n", st);
        ok = 0;
    }
    pid = -1;

    /* The objects' bookkeeping names the child as the last to operate on them. */
    struct shmid_ds sds;
    struct msqid_ds mds;
    int sempid = semctl(semid, 0, GETPID);
    int semval = semctl(semid, 0, GETVAL);
    if (shmctl(shmid, IPC_STAT, &sds) != 0 || msgctl(msqid, IPC_STAT, &mds) != 0) {
        perror("parent: IPC_STAT");
        ok = 0;
    } else {
        printf("parent: last shmdt by pid %d, last semop by pid %d (ours; value now %d), "
               "last msgsnd by pid %d\n",
               (int)sds.shm_lpid, sempid, semval, (int)mds.msg_lspid);
        if (sds.shm_lpid != child || sempid != getpid() || mds.msg_lspid != child ||
            semval != 0 || mds.msg_qnum != 0 || sds.shm_nattch != 1) {
            fprintf(stderr, "parent: expected shm and msg pid %d, semop pid %d (ours), value 0, "
                            "no message left, one attachment (ours)\n", (int)child, (int)getpid());
            ok = 0;
        }
    }

cleanup:
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    if (p != (void *)-1)
        shmdt(p);
    int removed = 1;
    if (shmid >= 0 && shmctl(shmid, IPC_RMID, NULL) != 0)
        removed = 0;
    if (semid >= 0 && semctl(semid, 0, IPC_RMID) != 0)
        removed = 0;
    if (msqid >= 0 && msgctl(msqid, IPC_RMID, NULL) != 0)
        removed = 0;
    unlink(path);
    if (!removed) {
        perror("parent: IPC_RMID");
        ok = 0;
    } else if (shmid >= 0 && semid >= 0 && msqid >= 0) {
        printf("parent: removed the segment, the semaphore set and the queue\n");
    }
    printf("demo: %s\n", ok ? "OK" : "FAILED");
    return ok ? 0 : 1;
}
