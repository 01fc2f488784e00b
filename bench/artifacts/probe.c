/*
 * probe: the one payload every bench instance runs (host process, container, guest init).
 *
 * Usage: probe MODE [ARGS...]
 *   ready                 print READY and exit 0
 *   idle                  print READY, then wait for SIGTERM/SIGINT (exit 0)
 *   alloc MIB [HOLD_S]    print READY, allocate and touch MIB MiB (progress "ALLOC n"),
 *                         print "ALLOCATED MIB", hold HOLD_S seconds, exit 0
 *   burn THREADS SECONDS  print READY, spin THREADS busy threads for SECONDS, print
 *                         "BURNED THREADS SECONDS", exit 0
 *   fork N [HOLD_S]       print READY, fork up to N sleeping children; print
 *                         "FORK_FAILED k ERRNO" at the first refused fork, "FORKED k",
 *                         hold HOLD_S seconds, reap the children, exit 0
 * Every line is written with write(2), unbuffered, so the host sees it at once.
 * If BENCH_CGROUP_PROCS is set (cgroup.procs paths separated by ':'), the probe first
 * moves itself into those cgroups: a host process joins its cgroup before doing any work
 * without the host having to run code between fork and exec (which costs ~1 ms).
 * Exit codes: 0 done, 2 usage error, 3 allocation refused by malloc, 4 cgroup join failed.
 *
 * Guest init mode: when the probe is PID 1 and was started as "/init" (the kernel runs an
 * initramfs's /init that way; a container's PID-1 probe is "/probe"), it is a VM guest's
 * init. It prints "BENCH_USERSPACE" as its very first output (the host stamps its arrival
 * as "userspace started"), mounts proc, sysfs and devtmpfs, prints "BENCH_UPTIME <s>" (the
 * guest kernel's own /proc/uptime: informative only, the host never uses the guest clock),
 * then runs the mode named after "--" on the kernel command line (e.g. "-- alloc 64") in a
 * child process, so a usage error or an in-guest OOM kill can never make PID 1 exit (which
 * would panic the kernel). When that child ends, init prints "BENCH_EXIT <code>" (128+signal
 * if it was killed), syncs and powers off (needs ACPI in the domain), so the domain ends.
 * In idle mode the child never ends by itself, so the guest stays up until destroyed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested = 0;

static void on_signal(int sig) { (void)sig; stop_requested = 1; }

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#include <stdarg.h>
static void say(const char *fmt, ...) {
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= sizeof line) n = sizeof line - 1;
    ssize_t off = 0;
    while (off < n) {
        ssize_t w = write(STDOUT_FILENO, line + off, (size_t)(n - off));
        if (w < 0) { if (errno == EINTR) continue; return; }
        off += w;
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void hold(double seconds) {
    double end = now_s() + seconds;
    while (!stop_requested && now_s() < end) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static long parse_count(const char *text, const char *what) {
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end != '\0' || v < 0) {
        say("ERROR bad %s: %s\n", what, text);
        exit(2);
    }
    return v;
}

static double parse_seconds(const char *text) {
    char *end = NULL;
    double v = strtod(text, &end);
    if (end == text || *end != '\0' || v < 0) {
        say("ERROR bad seconds: %s\n", text);
        exit(2);
    }
    return v;
}

static int mode_alloc(long mib, double hold_s) {
    const size_t chunk = 1024 * 1024;
    long page = sysconf(_SC_PAGESIZE);
    say("READY\n");
    for (long i = 0; i < mib && !stop_requested; i++) {
        char *p = malloc(chunk);
        if (!p) { say("ALLOC_FAILED %ld\n", i); return 3; }
        for (size_t off = 0; off < chunk; off += (size_t)page) p[off] = (char)(i + 1);
        if ((i + 1) % 16 == 0) say("ALLOC %ld\n", i + 1);
    }
    say("ALLOCATED %ld\n", mib);
    hold(hold_s);
    return 0;
}

static double burn_until;

static void *burn_thread(void *arg) {
    (void)arg;
    volatile unsigned long x = 0;
    while (!stop_requested && now_s() < burn_until) {
        for (int i = 0; i < 100000; i++) x += (unsigned long)i;
    }
    return NULL;
}

static int mode_burn(long threads, double seconds) {
    if (threads < 1) { say("ERROR threads must be >= 1\n"); return 2; }
    pthread_t *ids = calloc((size_t)threads, sizeof *ids);
    if (!ids) return 3;
    say("READY\n");
    burn_until = now_s() + seconds;
    long started = 0;
    for (long i = 0; i < threads; i++) {
        if (pthread_create(&ids[i], NULL, burn_thread, NULL) != 0) break;
        started++;
    }
    for (long i = 0; i < started; i++) pthread_join(ids[i], NULL);
    free(ids);
    say("BURNED %ld %.3f\n", started, seconds);
    return 0;
}

static int mode_fork(long n, double hold_s) {
    pid_t *kids = calloc((size_t)(n > 0 ? n : 1), sizeof *kids);
    if (!kids) return 3;
    say("READY\n");
    long forked = 0;
    for (long i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            /* child: sleep until the parent kills it */
            for (;;) pause();
        }
        if (pid < 0) {
            say("FORK_FAILED %ld %s\n", forked, strerrorname_np(errno) ? strerrorname_np(errno) : "E?");
            break;
        }
        kids[forked++] = pid;
    }
    say("FORKED %ld\n", forked);
    hold(hold_s);
    for (long i = 0; i < forked; i++) kill(kids[i], SIGKILL);
    for (long i = 0; i < forked; i++) waitpid(kids[i], NULL, 0);
    free(kids);
    return 0;
}

static int join_cgroups(void) {
    const char *spec = getenv("BENCH_CGROUP_PROCS");
    if (!spec || !*spec) return 0;
    char paths[4096];
    if (strlen(spec) >= sizeof paths) { say("ERROR BENCH_CGROUP_PROCS too long\n"); return 4; }
    strcpy(paths, spec);
    for (char *save = NULL, *path = strtok_r(paths, ":", &save); path; path = strtok_r(NULL, ":", &save)) {
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "0", 1) != 1) {
            say("ERROR cannot join cgroup %s: %s\n", path, strerror(errno));
            if (fd >= 0) close(fd);
            return 4;
        }
        close(fd);
    }
    return 0;
}

static int usage(void) {
    say("ERROR usage: probe ready|idle|alloc MIB [HOLD_S]|burn THREADS SECONDS|fork N [HOLD_S]\n");
    return 2;
}

/* Run one mode with the same parsing and exit codes as the command line; argv[0] is unused. */
static int run_mode(int argc, char **argv) {
    if (argc < 2) return usage();
    const char *mode = argv[1];
    if (strcmp(mode, "ready") == 0 && argc == 2) {
        say("READY\n");
        return 0;
    }
    if (strcmp(mode, "idle") == 0 && argc == 2) {
        say("READY\n");
        while (!stop_requested) pause();
        return 0;
    }
    if (strcmp(mode, "alloc") == 0 && (argc == 3 || argc == 4))
        return mode_alloc(parse_count(argv[2], "MiB"), argc == 4 ? parse_seconds(argv[3]) : 0);
    if (strcmp(mode, "burn") == 0 && argc == 4)
        return mode_burn(parse_count(argv[2], "threads"), parse_seconds(argv[3]));
    if (strcmp(mode, "fork") == 0 && (argc == 3 || argc == 4))
        return mode_fork(parse_count(argv[2], "count"), argc == 4 ? parse_seconds(argv[3]) : 0);
    return usage();
}

#define INIT_MAX_ARGS 16

static void init_mount(const char *source, const char *target, const char *fstype) {
    mkdir(target, 0755);
    if (mount(source, target, fstype, MS_NOSUID | MS_NOEXEC, NULL) != 0 && errno != EBUSY)
        say("BENCH_WARN mount %s: %s\n", target, strerror(errno));
}

static void init_report_uptime(void) {
    char text[64] = {0};
    int fd = open("/proc/uptime", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0) return;
    text[strcspn(text, " \n")] = '\0';
    say("BENCH_UPTIME %s\n", text);
}

/*
 * The mode arguments: the words after "--" on /proc/cmdline. The kernel also hands init
 * every unknown dot-less boot parameter as an argument, so argv alone could carry strays;
 * argv is the fallback when /proc/cmdline has no "--".
 */
static int init_mode_args(char *storage, size_t size, char **args, int argc, char **argv) {
    int count = 0;
    args[count++] = argv[0];
    int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, storage, size - 1) : -1;
    if (fd >= 0) close(fd);
    if (n > 0) {
        storage[n] = '\0';
        int after_dashes = 0;
        for (char *save = NULL, *word = strtok_r(storage, " \t\n", &save); word;
             word = strtok_r(NULL, " \t\n", &save)) {
            if (after_dashes && count < INIT_MAX_ARGS) args[count++] = word;
            else if (strcmp(word, "--") == 0) after_dashes = 1;
        }
        if (after_dashes) return count;
    }
    for (int i = 1; i < argc && count < INIT_MAX_ARGS; i++) args[count++] = argv[i];
    return count;
}

static void init_power_off(void) {
    sync();
    reboot(RB_POWER_OFF);
    /* Only reached without ACPI: say so, and stay alive (PID 1 must never exit). */
    say("BENCH_POWEROFF_FAILED %s\n", strerror(errno));
    for (;;) pause();
}

static int init_main(int argc, char **argv) {
    say("BENCH_USERSPACE\n");
    init_mount("proc", "/proc", "proc");
    init_mount("sysfs", "/sys", "sysfs");
    init_mount("devtmpfs", "/dev", "devtmpfs");
    init_report_uptime();

    static char cmdline[4096];
    char *args[INIT_MAX_ARGS + 1] = {0};
    int count = init_mode_args(cmdline, sizeof cmdline, args, argc, argv);

    pid_t payload = fork();
    if (payload == 0) {
        /* Named "probe", so the guest's OOM reports and ps tell the payload from init. */
        prctl(PR_SET_NAME, "probe", 0, 0, 0);
        if (join_cgroups() != 0) _exit(4);
        exit(run_mode(count, args));
    }
    int code = 1;
    if (payload < 0) {
        say("ERROR fork of the payload failed: %s\n", strerror(errno));
    } else {
        /* PID 1 reaps every orphan; the payload's own status decides the exit code. */
        for (;;) {
            int status = 0;
            pid_t done = waitpid(-1, &status, 0);
            if (done < 0 && errno == EINTR) continue;
            if (done < 0) break;
            if (done != payload) continue;
            code = WIFEXITED(status) ? WEXITSTATUS(status)
                 : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : 1;
            break;
        }
    }
    say("BENCH_EXIT %d\n", code);
    init_power_off();
    return 0;
}

int main(int argc, char **argv) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    if (getpid() == 1 && argc >= 1 && strcmp(argv[0], "/init") == 0) return init_main(argc, argv);
    if (join_cgroups() != 0) return 4;
    return run_mode(argc, argv);
}
