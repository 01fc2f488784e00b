/*
 * cgexec: join cgroups, then exec a program, so that program is in its cgroups from its
 * first page.
 *
 * Usage: BENCH_CGROUP_PROCS=/sys/fs/cgroup/.../cgroup.procs[:...] cgexec PROGRAM [ARG...]
 *
 * The helper writes "0" to each cgroup.procs file (moving itself), removes
 * BENCH_CGROUP_PROCS from the environment and execs PROGRAM. Memory is charged to the
 * cgroup a task is in when the page is faulted, and cgroup v2 (and v1 without
 * move_charge_at_immigrate) never moves pages already charged: a program that joins its
 * cgroup itself, after exec, leaves the pages of its own start (stack, page tables,
 * relocations, libc's setup) charged to its parent's cgroup. exec gives the program a new
 * address space, all of it faulted after the join.
 *
 * Exit codes (only when the exec did not happen): 4 a cgroup could not be joined,
 * 2 usage error, 127 the exec failed. Errors are one "ERROR ..." line on stdout, as the
 * probe writes them, so the host reads them where it reads the probe's output.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void say(const char *what, const char *detail) {
    char line[4352];
    int n = snprintf(line, sizeof line, "ERROR cgexec: %s%s%s\n", what, detail ? ": " : "",
                     detail ? detail : "");
    if (n > 0) {
        ssize_t ignored = write(STDOUT_FILENO, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
        (void)ignored;
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        say("usage: BENCH_CGROUP_PROCS=FILE[:FILE...] cgexec PROGRAM [ARG...]", NULL);
        return 2;
    }
    const char *spec = getenv("BENCH_CGROUP_PROCS");
    if (spec && *spec) {
        char paths[4096];
        if (strlen(spec) >= sizeof paths) {
            say("BENCH_CGROUP_PROCS too long", NULL);
            return 4;
        }
        strcpy(paths, spec);
        for (char *save = NULL, *path = strtok_r(paths, ":", &save); path;
             path = strtok_r(NULL, ":", &save)) {
            int fd = open(path, O_WRONLY | O_CLOEXEC);
            if (fd < 0 || write(fd, "0", 1) != 1) {
                char detail[4200];
                snprintf(detail, sizeof detail, "%s: %s", path, strerror(errno));
                say("cannot join cgroup", detail);
                if (fd >= 0) close(fd);
                return 4;
            }
            close(fd);
        }
        unsetenv("BENCH_CGROUP_PROCS");
    }
    execv(argv[1], argv + 1);
    char detail[4200];
    snprintf(detail, sizeof detail, "%s: %s", argv[1], strerror(errno));
    say("exec failed", detail);
    return 127;
}
