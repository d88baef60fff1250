/* Corners of shmat and shmctl the other shm tests leave out: shmctl with IPC_64 (0x100)
 * or other unknown bits in cmd is EINVAL on a 64-bit kernel (no version parsing there);
 * shmat's range checks at the top of the address space (a wrapping range is EINVAL
 * without SHM_REMAP, ENOMEM from the mapping with it; a range beyond user space is
 * ENOMEM either way). */
#include "../common.h"
#include <stdint.h>
#include <sys/mman.h>
#include <sys/shm.h>

int main(void) {
    watchdog(30, NULL);
    long page = sysconf(_SC_PAGESIZE);
    struct shmid_ds ds;
    int id = EXPECT_OK(shmget(IPC_PRIVATE, 3 * page, IPC_CREAT | 0600));
    if (id < 0)
        return TEST_DONE();

    /* Unknown command bits. */
    EXPECT_OK(shmctl(id, IPC_STAT, &ds));
    EXPECT_ERR(shmctl(id, IPC_STAT | 0x100, &ds), EINVAL);
    EXPECT_ERR(shmctl(id, IPC_INFO | 0x100, &ds), EINVAL);
    EXPECT_ERR(shmctl(id, SHM_STAT | 0x100, &ds), EINVAL);
    EXPECT_ERR(shmctl(id, IPC_RMID | 0x100, NULL), EINVAL);
    EXPECT_ERR(shmctl(id, IPC_STAT | 0x10000, &ds), EINVAL);
    EXPECT_ERR(shmctl(id, 4, &ds), EINVAL);
    EXPECT_ERR(shmctl(id, 16, &ds), EINVAL);
    /* None of them removed the segment. */
    EXPECT_OK(shmctl(id, IPC_STAT, &ds));

    /* Ranges at the top of the address space. */
    void *wrap = (void *)(uintptr_t)-page;
    EXPECT_ERR(shmat(id, wrap, 0), EINVAL);
    EXPECT_ERR(shmat(id, wrap, SHM_REMAP), ENOMEM);
    EXPECT_ERR(shmat(id, (char *)wrap + 5, SHM_RND | SHM_REMAP), ENOMEM);
    void *kernel_half = (void *)(uintptr_t)0xffff800000000000ULL;
    EXPECT_ERR(shmat(id, kernel_half, 0), ENOMEM);
    EXPECT_ERR(shmat(id, kernel_half, SHM_REMAP), ENOMEM);
    EXPECT_OK(shmctl(id, IPC_STAT, &ds));
    CHECK(ds.shm_nattch == 0);

    EXPECT_OK(shmctl(id, IPC_RMID, NULL));
    return TEST_DONE();
}
