/* Bad pointers given to semop, semtimedop and semctl fail with EFAULT, as the kernel's
 * copy_from_user/copy_to_user make them, and change nothing: the operations of a multi-
 * operation call, semtimedop's timeout, GETALL's and SETALL's arrays, IPC_STAT's and
 * IPC_SET's semid_ds, IPC_INFO's seminfo — an unmapped page and a read-only page. */
#include "../common.h"
#include "../sem_common.h"

#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/sem.h>

int main(void) {
    sem_watchdog(14);
    long page = sysconf(_SC_PAGESIZE);
    void *gone = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *ro = mmap(NULL, (size_t)page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (gone == MAP_FAILED || ro == MAP_FAILED)
        return 2;
    munmap(gone, (size_t)page);
    int id = new_set(2);
    union semun u;

    /* The operations of a call. */
    EXPECT_ERR(semop(id, (struct sembuf *)gone, 2), EFAULT);
    EXPECT_ERR(semtimedop(id, (struct sembuf *)gone, 3, NULL), EFAULT);
    /* A read-only page of operations is fine to read: zeros are two wait-for-zero ops. */
    CHECK(semop(id, (struct sembuf *)ro, 2) == 0);
    /* The timeout. */
    struct sembuf down = {0, -1, 0};
    EXPECT_ERR(semtimedop(id, &down, 1, (struct timespec *)gone), EFAULT);
    CHECK(semctl(id, 0, GETNCNT) == 0);

    /* GETALL into memory it cannot write; SETALL from memory it cannot read. */
    u.array = (unsigned short *)gone;
    EXPECT_ERR(semctl(id, 0, GETALL, u), EFAULT);
    u.array = (unsigned short *)ro;
    EXPECT_ERR(semctl(id, 0, GETALL, u), EFAULT);
    u.array = (unsigned short *)gone;
    EXPECT_ERR(semctl(id, 0, SETALL, u), EFAULT);
    CHECK(semctl(id, 0, GETVAL) == 0 && semctl(id, 1, GETVAL) == 0);

    /* semid_ds and seminfo. */
    u.buf = (struct semid_ds *)gone;
    EXPECT_ERR(semctl(id, 0, IPC_STAT, u), EFAULT);
    EXPECT_ERR(semctl(id, 0, IPC_SET, u), EFAULT);
    u.buf = (struct semid_ds *)ro;
    EXPECT_ERR(semctl(id, 0, IPC_STAT, u), EFAULT);
    u.__buf = (struct seminfo *)gone;
    EXPECT_ERR(semctl(0, 0, IPC_INFO, u), EFAULT);
    EXPECT_ERR(semctl(0, 0, SEM_INFO, u), EFAULT);
    struct semid_ds ds;
    u.buf = &ds;
    CHECK(semctl(id, 0, IPC_STAT, u) == 0 && ds.sem_perm.mode == 0600);

    EXPECT_OK(semctl(id, 0, IPC_RMID));
    return TEST_DONE();
}
