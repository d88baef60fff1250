/* A tiny preloadable client for the Rust integration tests: one System V call per run
 * (create_on_input: a lookup, then a create when told), printing its result as "ok VALUE" or "err ERRNO". */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/shm.h>

int main(int argc, char **argv) {
    if (argc < 3)
        return 2;
    long v = strtol(argv[2], NULL, 0);
    int r;
    if (!strcmp(argv[1], "create"))
        r = shmget((key_t)v, 4096, IPC_CREAT | 0666);
    else if (!strcmp(argv[1], "create_on_input")) {
        /* Connected first (a lookup), then the create once a line comes on stdin. */
        shmget((key_t)v, 0, 0);
        printf("ready\n");
        fflush(stdout);
        if (getchar() == EOF)
            return 2;
        r = shmget((key_t)v, 4096, IPC_CREAT | 0666);
    } else if (!strcmp(argv[1], "lookup"))
        r = shmget((key_t)v, 0, 0);
    else if (!strcmp(argv[1], "stat")) {
        struct shmid_ds ds;
        r = shmctl((int)v, IPC_STAT, &ds);
    } else if (!strcmp(argv[1], "rm"))
        r = shmctl((int)v, IPC_RMID, NULL);
    else
        return 2;
    if (r == -1)
        printf("err %d\n", errno);
    else
        printf("ok %d\n", r);
    return 0;
}
