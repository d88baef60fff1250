/* nosysv: run a command with the kernel's System V IPC switched off.
 *
 *   nosysv CMD [ARGS...]
 *
 * Sets PR_SET_NO_NEW_PRIVS and installs a seccomp BPF filter (raw BPF, no libseccomp)
 * under which msgget msgsnd msgrcv msgctl semget semop semtimedop semctl shmget shmat
 * shmdt shmctl (and the multiplexed ipc(2) syscall on architectures that have one) fail
 * with ENOSYS, as on a kernel built without CONFIG_SYSVIPC or in a sandbox that forbids
 * it. Everything else is allowed. The filter is inherited across fork and exec, so
 * the whole process tree of CMD runs without kernel SysV IPC.
 *
 * Only the native architecture is accepted (x86_64 or aarch64): a syscall made through
 * another ABI (i386 int 0x80 on x86_64, for example) kills the process, so the filter
 * cannot be bypassed by switching ABI. On x86_64 every x32 syscall fails with ENOSYS
 * for the same reason. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define NATIVE_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NATIVE_AUDIT_ARCH AUDIT_ARCH_AARCH64
#else
#error "nosysv supports x86_64 and aarch64 only"
#endif

#ifndef __X32_SYSCALL_BIT
#define __X32_SYSCALL_BIT 0x40000000
#endif

static const int blocked[] = {
    __NR_msgget, __NR_msgsnd, __NR_msgrcv, __NR_msgctl,
    __NR_semget, __NR_semop,  __NR_semctl,
#ifdef __NR_semtimedop
    __NR_semtimedop,
#endif
#ifdef __NR_semtimedop_time64
    __NR_semtimedop_time64,
#endif
    __NR_shmget, __NR_shmat,  __NR_shmdt,  __NR_shmctl,
#ifdef __NR_ipc
    __NR_ipc,
#endif
};

#define NBLOCKED ((int)(sizeof(blocked) / sizeof(blocked[0])))

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fprintf(stderr,
                "usage: %s CMD [ARGS...]\n"
                "Runs CMD with the kernel's System V IPC syscalls failing with ENOSYS.\n",
                argv[0]);
        return argc < 2 ? 2 : 0;
    }

    /* Program layout:
     *   0: load arch
     *   1: arch == native ? next : kill
     *   2: kill
     *   3: load nr
     *   4: (x86_64) nr & X32 bit ? ENOSYS : next      [on aarch64: a no-op jump]
     *   5 .. 5+N-1: nr == blocked[i] ? ENOSYS : next
     *   5+N: allow
     *   6+N: ENOSYS */
    struct sock_filter prog[8 + NBLOCKED];
    int n = 0;
    const int enosys_at = 6 + NBLOCKED;

    prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                             offsetof(struct seccomp_data, arch));
    prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_AUDIT_ARCH, 1, 0);
    prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
    prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                             offsetof(struct seccomp_data, nr));
#if defined(__x86_64__)
    /* jt: distance from the next instruction to enosys_at. */
    prog[n] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, __X32_SYSCALL_BIT,
                                           (unsigned char)(enosys_at - n - 1), 0);
    n++;
#else
    prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JA, 0, 0, 0);
#endif
    for (int i = 0; i < NBLOCKED; i++) {
        prog[n] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)blocked[i],
                                               (unsigned char)(enosys_at - n - 1), 0);
        n++;
    }
    prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K,
                                             SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA));
    if (n != enosys_at + 1) {
        fprintf(stderr, "nosysv: internal error building the filter\n");
        return 127;
    }

    struct sock_fprog fprog = {.len = (unsigned short)n, .filter = prog};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        fprintf(stderr, "nosysv: prctl(PR_SET_NO_NEW_PRIVS): %s\n", strerror(errno));
        return 127;
    }
    if (syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) != 0 &&
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog, 0, 0) != 0) {
        fprintf(stderr, "nosysv: installing the seccomp filter: %s\n", strerror(errno));
        return 127;
    }

    execvp(argv[1], argv + 1);
    fprintf(stderr, "nosysv: %s: %s\n", argv[1], strerror(errno));
    return errno == ENOENT ? 127 : 126;
}
