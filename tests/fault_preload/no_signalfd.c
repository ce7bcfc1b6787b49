/*
 * An LD_PRELOAD library for the launcher tests: signalfd(2) fails as it does in a process out of
 * file descriptors (EMFILE) or under a seccomp policy that denies it. The runtime reads every
 * signal from a signalfd, so it must stop at once with its own exit status and start nothing.
 * The tests compile it with `cc -shared -fPIC`; the runtime keeps an existing LD_PRELOAD across
 * its tcmalloc re-exec, so the failure reaches the code that sets up signal handling.
 */
#include <errno.h>
#include <signal.h>

int signalfd(int fd, const sigset_t *mask, int flags)
{
    (void)fd;
    (void)mask;
    (void)flags;
    errno = EMFILE;
    return -1;
}
