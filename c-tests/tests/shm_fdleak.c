/* The MIT-SHM pattern (X11 clients do it per image): create, attach, remove, detach, many
 * times. Nothing may accumulate in the process: no descriptors, no mappings. */
#include "../common.h"
#include <dirent.h>
#include <sys/shm.h>

static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static int count_lines(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int n = 0, c;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

static void cycle(int rounds) {
    for (int i = 0; i < rounds; i++) {
        int id = shmget(IPC_PRIVATE, 1 << 20, IPC_CREAT | 0600);
        CHECK(id >= 0);
        char *p = shmat(id, NULL, 0);
        CHECK(p != (void *)-1);
        CHECK(shmctl(id, IPC_RMID, NULL) == 0);
        if (p != (void *)-1) {
            p[0] = 1;
            CHECK(shmdt(p) == 0);
        }
    }
}

int main(void) {
    /* Warm up (a library may open what it needs once), then measure. */
    cycle(5);
    int fds = count_entries("/proc/self/fd");
    int maps = count_lines("/proc/self/maps");
    cycle(200);
    int fds_after = count_entries("/proc/self/fd");
    int maps_after = count_lines("/proc/self/maps");
    CHECK(fds_after <= fds + 2);
    CHECK(maps_after <= maps + 4);
    if (fds_after > fds + 2 || maps_after > maps + 4)
        fprintf(stderr, "fds %d -> %d, maps %d -> %d\n", fds, fds_after, maps, maps_after);
    return TEST_DONE();
}
