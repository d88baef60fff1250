/* Helpers shared by the shared memory tests (c-tests/tests/shm_*.c); include after
 * "../common.h" (which this includes too). */
#ifndef IPCSHIM_TEST_SHM_COMMON_H
#define IPCSHIM_TEST_SHM_COMMON_H
#include "common.h"

#include <sys/ipc.h>
#include <sys/shm.h>

/* IPC_STAT into a zeroed ds. */
static inline int stat_seg(int id, struct shmid_ds *ds) {
    memset(ds, 0, sizeof(*ds));
    return shmctl(id, IPC_STAT, ds);
}

#endif
