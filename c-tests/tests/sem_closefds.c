/* A process that closes every descriptor (as daemons do) keeps its SEM_UNDO adjustments
 * (closing is not exiting: nothing is undone then), can go on using the set — also blocking
 * and being woken — and has all its adjustments undone when it exits. */
#include "../common.h"
#include "../sem_common.h"

#include <fcntl.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/sem.h>

struct flags {
    volatile int closed;
    volatile int go;
    volatile int bad;
};

static void child(int id, struct flags *f) {
    if (op1(id, 0, -1, SEM_UNDO) != 0)
        f->bad |= 1;
    for (int fd = 0; fd < 1024; fd++)
        close(fd);
    /* A descriptor the program opens reuses the numbers the library had. */
    int junk = open("/dev/null", 0);
    (void)junk;
    f->closed = 1;
    while (!f->go)
        usleep(1000);
    if (op1(id, 0, -1, SEM_UNDO) != 0)
        f->bad |= 2;
    /* Block, and be woken. */
    if (op1(id, 1, -1, 0) != 0)
        f->bad |= 4;
    _exit(0);
}

int main(void) {
    sem_watchdog(14);
    struct flags *f = mmap(NULL, sizeof(*f), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (f == MAP_FAILED)
        return 2;
    memset((void *)f, 0, sizeof(*f));
    int id = new_set(2);
    union semun u;
    u.val = 5;
    EXPECT_OK(semctl(id, 0, SETVAL, u));
    pid_t pid = fork_child();
    if (pid == 0) {
        child(id, f);
    }
    long long end = now_ms() + 5000;
    while (!f->closed && now_ms() < end)
        sleep_ms(1);
    CHECK(f->closed);
    sleep_ms(150);
    /* Closing its descriptors undid nothing. */
    CHECK(semctl(id, 0, GETVAL) == 4);
    f->go = 1;
    CHECK(wait_for(id, 1, GETNCNT, 1));
    CHECK(semctl(id, 0, GETVAL) == 3);
    CHECK(op1(id, 1, 1, 0) == 0);
    CHECK(EXITED_OK(reap_child(pid, 10000)));
    CHECK(f->bad == 0);
    /* Its exit undid both of its decrements. */
    CHECK(semctl(id, 0, GETVAL) == 5);
    CHECK(semctl(id, 1, GETVAL) == 0);
    CHECK(semctl(id, 0, GETPID) == pid);
    EXPECT_OK(semctl(id, 0, IPC_RMID));
    return TEST_DONE();
}
