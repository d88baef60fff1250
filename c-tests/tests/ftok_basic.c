/* ftok: the key is (st_ino & 0xffff) | ((st_dev & 0xff) << 16) | ((proj_id & 0xff) << 24)
 * from stat() of the path (following symlinks), for files, directories and devices,
 * with proj_id 0, 1..255 and above 255 (only the low 8 bits count); errors: ENOENT for
 * a missing path or "", ENOTDIR below a non-directory, EACCES below an unsearchable
 * directory. */
#include "../common.h"

#include <fcntl.h>
#include <stdint.h>
#include <sys/ipc.h>
#include <sys/stat.h>

static key_t expected(const char *path, int proj) {
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "stat %s: %s\n", path, strerror(errno));
        return (key_t)-2;
    }
    uint32_t k = (uint32_t)(st.st_ino & 0xffff) | (uint32_t)((st.st_dev & 0xff) << 16) |
                 ((uint32_t)(proj & 0xff) << 24);
    return (key_t)k;
}

static char dir[64], file[96], file2[96], link_[96], hard[96], secret[96], secretf[128];

static void unsearchable(void *arg) {
    (void)arg;
    drop_to(1001, 1001);
    EXPECT_ERR(ftok(secretf, 1), EACCES);
    /* The directory itself can still be stat'ed, so ftok works on it. */
    CHECK(ftok(secret, 1) == expected(secret, 1));
}

int main(void) {
    snprintf(dir, sizeof(dir), "/tmp/ftok_basic-%d", (int)getpid());
    snprintf(file, sizeof(file), "%s/a", dir);
    snprintf(file2, sizeof(file2), "%s/b", dir);
    snprintf(link_, sizeof(link_), "%s/link", dir);
    snprintf(hard, sizeof(hard), "%s/hard", dir);
    snprintf(secret, sizeof(secret), "%s/secret", dir);
    snprintf(secretf, sizeof(secretf), "%s/secret/f", dir);
    CHECK(mkdir(dir, 0755) == 0);
    int fd = open(file, O_CREAT | O_WRONLY, 0644);
    CHECK(fd >= 0);
    close(fd);
    fd = open(file2, O_CREAT | O_WRONLY, 0600);
    CHECK(fd >= 0);
    close(fd);
    CHECK(symlink(file, link_) == 0);
    CHECK(link(file, hard) == 0);
    CHECK(mkdir(secret, 0700) == 0);
    fd = open(secretf, O_CREAT | O_WRONLY, 0644);
    CHECK(fd >= 0);
    close(fd);

    const char *paths[] = {"/", "/tmp", "/dev/null", "/dev/zero", "/proc/self", "/proc/self/exe",
                           dir, file, file2, secretf};
    const int projs[] = {0, 1, 'A', 'z', 127, 128, 255, 256, 257, 0x1234, 0x7fffffff, -1, -255};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        for (size_t j = 0; j < sizeof(projs) / sizeof(projs[0]); j++) {
            key_t want = expected(paths[i], projs[j]);
            key_t got = ftok(paths[i], projs[j]);
            CHECK(got == want);
            if (got != want)
                fprintf(stderr, "  ftok(%s, %#x) = %#x, want %#x\n", paths[i], projs[j],
                        (unsigned)got, (unsigned)want);
        }
    }
    /* Only the low 8 bits of proj_id count. */
    CHECK(ftok(file, 1) == ftok(file, 257));
    CHECK(ftok(file, 0) == ftok(file, 256));
    CHECK(ftok(file, 1) != ftok(file, 2));
    /* Different files (on the same file system), different keys. */
    CHECK(ftok(file, 1) != ftok(file2, 1));
    /* Symbolic links are followed; hard links share the inode. */
    CHECK(ftok(link_, 7) == ftok(file, 7));
    CHECK(ftok(hard, 7) == ftok(file, 7));
    /* The key does not depend on how the path is spelled. */
    char alt[192];
    snprintf(alt, sizeof(alt), "%s/./a", dir);
    CHECK(ftok(alt, 9) == ftok(file, 9));
    snprintf(alt, sizeof(alt), "%s/../%s/b", dir, dir + 5);
    CHECK(ftok(alt, 9) == ftok(file2, 9));

    /* Errors. */
    char missing[128];
    snprintf(missing, sizeof(missing), "%s/missing", dir);
    EXPECT_ERR(ftok(missing, 1), ENOENT);
    EXPECT_ERR(ftok("", 1), ENOENT);
    char notdir[128];
    snprintf(notdir, sizeof(notdir), "%s/x", file);
    EXPECT_ERR(ftok(notdir, 1), ENOTDIR);
    /* A dangling symlink: ENOENT. */
    CHECK(unlink(file2) == 0);
    CHECK(symlink(file2, missing) == 0);
    EXPECT_ERR(ftok(missing, 1), ENOENT);
    run_in_child(unsearchable, NULL);

    unlink(missing);
    unlink(secretf);
    rmdir(secret);
    unlink(link_);
    unlink(hard);
    unlink(file);
    CHECK(rmdir(dir) == 0);
    return TEST_DONE();
}
