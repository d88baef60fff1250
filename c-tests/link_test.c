/* Linked with -lipcshim through include/ipcshim.h, no preload: the library's shmget,
 * shmat, shmdt, shmctl and ftok are the ones called, and they work. Run by `make check`. */
#include "ipcshim.h"
#include "common.h"
#include <dlfcn.h>

int main(void) {
    /* The symbol the program binds to comes from libipcshim, not from libc. */
    Dl_info info;
    CHECK(dladdr((void *)shmget, &info) != 0 && strstr(info.dli_fname, "libipcshim") != NULL);
    int id = EXPECT_OK(shmget(IPC_PRIVATE, 8192, IPC_CREAT | 0600));
    char *p = shmat(id, NULL, 0);
    CHECK(p != (void *)-1);
    if (p != (void *)-1) {
        strcpy(p, "linked");
        struct shmid_ds ds;
        EXPECT_OK(shmctl(id, IPC_STAT, &ds));
        CHECK(ds.shm_nattch == 1 && ds.shm_segsz == 8192);
        EXPECT_OK(shmdt(p));
    }
    EXPECT_OK(shmctl(id, IPC_RMID, NULL));
    CHECK(ftok("/", 1) != -1);
    return TEST_DONE();
}
