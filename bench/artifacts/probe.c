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
 * Any mode may be preceded by "spin MS": busy-spin MS milliseconds of the monotonic clock
 * first (a known delay before READY, injected to check that comparisons detect it).
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
 *
 * Guest cgroup v2 mode (init only): when the kernel command line, before "--", carries
 * "bench_cgroup2=FILE=VALUE,FILE=VALUE..." (e.g. "bench_cgroup2=memory.max=33554432,
 * pids.max=10,cpu.max=25000:100000"; ':' in a value stands for a space, as in cpu.max's
 * "QUOTA PERIOD"; an empty list is allowed), init mounts cgroup2 at /sys/fs/cgroup,
 * prints "BENCH_CG_CONTROLLERS <root's cgroup.controllers>", enables +memory +pids +cpu
 * in the root's cgroup.subtree_control, creates /sys/fs/cgroup/bench, writes each limit
 * file there, and runs the payload child inside that group (the child itself writes "0" to
 * its cgroup.procs before running the mode). While the child runs, init (which stays in
 * the root group, so its own work is never charged to the group) samples the group every
 * 100 ms of the guest's monotonic clock, at most 300 times ("BENCH_CG_SAMPLES_CAPPED 300"
 * when the cap is hit):
 *   BENCH_CG_SAMPLE <guest_monotonic_ms> memory.current=N pids.current=N usage_usec=N
 *   nr_throttled=N   (one line; a key is left out when its file cannot be read)
 * When the child has ended (the group stays: init owns it), init prints each of
 * memory.events memory.peak memory.max memory.current pids.events pids.max pids.peak
 * cpu.stat cpu.max as "BENCH_CG_BEGIN <file>", the file's text, "BENCH_CG_END <file>", or
 * "BENCH_CG_ABSENT <file> <errno name>" when the kernel has no such file (memory.peak
 * came in 5.19, pids.peak later), then BENCH_EXIT and power-off as above. If the group cannot be set up, init
 * prints "BENCH_CG_ERROR <what>: <reason>", runs no payload and reports BENCH_EXIT 4.
 * Without the parameter, init's behaviour and output are exactly as before.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
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
    say("ERROR usage: probe [spin MS] ready|idle|alloc MIB [HOLD_S]|burn THREADS SECONDS|fork N [HOLD_S]\n");
    return 2;
}

/* Busy-spin (not sleep: a slowdown that costs CPU, like real work) for ms milliseconds. */
static void spin_for_ms(double ms) {
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        double elapsed = (now.tv_sec - start.tv_sec) * 1e3 + (now.tv_nsec - start.tv_nsec) / 1e6;
        if (elapsed >= ms) return;
    }
}

/* Run one mode with the same parsing and exit codes as the command line; argv[0] is unused. */
static int run_mode(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "spin") == 0) {
        char *end = NULL;
        double ms = strtod(argv[2], &end);
        if (end == argv[2] || *end != '\0' || ms < 0) return usage();
        spin_for_ms(ms);
        argv[2] = argv[0];
        return run_mode(argc - 2, argv + 2);
    }
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

/* --- guest cgroup v2 mode (init only) -------------------------------------------------- */

#define CG_ROOT "/sys/fs/cgroup"
#define CG_DIR CG_ROOT "/bench"
#define CG_PARAM "bench_cgroup2="
#define CG_CONTROLLERS "+memory +pids +cpu"
#define CG_SAMPLE_INTERVAL_NS (100LL * 1000 * 1000)
#define CG_MAX_SAMPLES 300

static const char *const cg_dump_files[] = {
    "memory.events", "memory.peak", "memory.max", "memory.current", "pids.events",
    "pids.max",      "pids.peak",   "cpu.stat",   "cpu.max",
};

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static const char *errno_name(int err) {
    const char *name = strerrorname_np(err);
    return name ? name : "E?";
}

static void write_all(const char *text, size_t len) {
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(STDOUT_FILENO, text + off, len - off);
        if (w < 0) { if (errno == EINTR) continue; return; }
        off += (size_t)w;
    }
}

/* Write value to a cgroup file in one write(2); 0 on success, else -1 with errno set. */
static int cg_write(const char *path, const char *value) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t len = strlen(value);
    ssize_t w = write(fd, value, len);
    int saved = errno;
    close(fd);
    if (w == (ssize_t)len) return 0;
    errno = w < 0 ? saved : EIO;
    return -1;
}

/* Read a whole (small) cgroup file into buf, NUL-terminated; its length, or -1 (errno). */
static ssize_t cg_read(const char *path, char *buf, size_t size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t used = 0;
    while (used < size - 1) {
        ssize_t n = read(fd, buf + used, size - 1 - used);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { int saved = errno; close(fd); errno = saved; return -1; }
        if (n == 0) break;
        used += (size_t)n;
    }
    close(fd);
    buf[used] = '\0';
    return (ssize_t)used;
}

/* The value of "key N" in flat-keyed text (cpu.stat), or -1. */
static long long cg_keyed(const char *text, const char *key) {
    size_t klen = strlen(key);
    for (const char *line = text; *line;) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ' ') return strtoll(line + klen + 1, NULL, 10);
        const char *end = strchr(line, '\n');
        if (!end) break;
        line = end + 1;
    }
    return -1;
}

/*
 * Copy the value of "bench_cgroup2=" from /proc/cmdline (only words before "--": after it
 * come the mode's arguments) into spec; 1 when the parameter is present, else 0.
 */
static int cg_find_spec(char *spec, size_t size) {
    static char text[4096];
    int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0) return 0;
    text[n] = '\0';
    int found = 0;
    for (char *save = NULL, *word = strtok_r(text, " \t\n", &save); word;
         word = strtok_r(NULL, " \t\n", &save)) {
        if (strcmp(word, "--") == 0) break;
        if (strncmp(word, CG_PARAM, strlen(CG_PARAM)) == 0) {
            snprintf(spec, size, "%s", word + strlen(CG_PARAM));
            found = 1;
        }
    }
    return found;
}

/* Mount cgroup2, enable the controllers, create the group and write the limits. */
static int cg_setup(char *spec) {
    mkdir("/sys/fs", 0755);  /* both exist on sysfs with CONFIG_CGROUPS; harmless if so */
    mkdir(CG_ROOT, 0755);
    if (mount("cgroup2", CG_ROOT, "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0
        && errno != EBUSY) {
        say("BENCH_CG_ERROR mount cgroup2 on " CG_ROOT ": %s\n", strerror(errno));
        return -1;
    }
    char controllers[256];
    if (cg_read(CG_ROOT "/cgroup.controllers", controllers, sizeof controllers) >= 0) {
        controllers[strcspn(controllers, "\n")] = '\0';
        say("BENCH_CG_CONTROLLERS %s\n", controllers);
    }
    if (cg_write(CG_ROOT "/cgroup.subtree_control", CG_CONTROLLERS) != 0) {
        say("BENCH_CG_ERROR enable " CG_CONTROLLERS ": %s\n", strerror(errno));
        return -1;
    }
    if (mkdir(CG_DIR, 0755) != 0 && errno != EEXIST) {
        say("BENCH_CG_ERROR mkdir " CG_DIR ": %s\n", strerror(errno));
        return -1;
    }
    for (char *save = NULL, *item = strtok_r(spec, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (!eq || eq == item || item[0] == '.' || memchr(item, '/', (size_t)(eq - item))) {
            say("BENCH_CG_ERROR bad limit %s: want FILE=VALUE\n", item);
            return -1;
        }
        *eq = '\0';
        char *value = eq + 1;
        for (char *c = value; *c; c++) if (*c == ':') *c = ' ';
        char path[512];
        snprintf(path, sizeof path, CG_DIR "/%s", item);
        if (cg_write(path, value) != 0) {
            say("BENCH_CG_ERROR write %s=%s: %s\n", item, value, strerror(errno));
            return -1;
        }
    }
    return 0;
}

static int cg_samples_taken = 0;

/* One BENCH_CG_SAMPLE line (a key whose file cannot be read is left out). */
static void cg_sample(void) {
    if (cg_samples_taken >= CG_MAX_SAMPLES) return;
    char line[256], text[512];
    int len = snprintf(line, sizeof line, "BENCH_CG_SAMPLE %lld", now_ns() / 1000000LL);
    if (cg_read(CG_DIR "/memory.current", text, sizeof text) >= 0)
        len += snprintf(line + len, sizeof line - (size_t)len, " memory.current=%lld", strtoll(text, NULL, 10));
    if (cg_read(CG_DIR "/pids.current", text, sizeof text) >= 0)
        len += snprintf(line + len, sizeof line - (size_t)len, " pids.current=%lld", strtoll(text, NULL, 10));
    if (cg_read(CG_DIR "/cpu.stat", text, sizeof text) >= 0) {
        long long usage = cg_keyed(text, "usage_usec"), throttled = cg_keyed(text, "nr_throttled");
        if (usage >= 0)
            len += snprintf(line + len, sizeof line - (size_t)len, " usage_usec=%lld", usage);
        if (throttled >= 0)
            len += snprintf(line + len, sizeof line - (size_t)len, " nr_throttled=%lld", throttled);
    }
    say("%s\n", line);
    if (++cg_samples_taken == CG_MAX_SAMPLES) say("BENCH_CG_SAMPLES_CAPPED %d\n", CG_MAX_SAMPLES);
}

/* Print the group's files between BENCH_CG_BEGIN/BENCH_CG_END markers. */
static void cg_dump(void) {
    static char text[4096];
    for (size_t i = 0; i < sizeof cg_dump_files / sizeof cg_dump_files[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, CG_DIR "/%s", cg_dump_files[i]);
        ssize_t n = cg_read(path, text, sizeof text);
        if (n < 0) {
            say("BENCH_CG_ABSENT %s %s\n", cg_dump_files[i], errno_name(errno));
            continue;
        }
        say("BENCH_CG_BEGIN %s\n", cg_dump_files[i]);
        write_all(text, (size_t)n);
        if (n == 0 || text[n - 1] != '\n') write_all("\n", 1);
        say("BENCH_CG_END %s\n", cg_dump_files[i]);
    }
}

/*
 * Set the group up, run the payload in it while sampling every 100 ms, dump the files;
 * return the payload's exit code (128+signal if killed), or 4 when the group failed.
 * SIGCHLD is blocked and waited for with sigtimedwait, so the payload's end is seen at
 * once and samples keep their 100 ms cadence; PID 1 still reaps every orphan.
 */
static int cg_run_payload(int count, char **args, char *spec) {
    if (cg_setup(spec) != 0) return 4;
    sigset_t chld, saved;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, &saved);
    pid_t payload = fork();
    if (payload == 0) {
        sigprocmask(SIG_SETMASK, &saved, NULL);
        prctl(PR_SET_NAME, "probe", 0, 0, 0);
        if (cg_write(CG_DIR "/cgroup.procs", "0") != 0) {
            say("BENCH_CG_ERROR join " CG_DIR ": %s\n", strerror(errno));
            _exit(4);
        }
        if (join_cgroups() != 0) _exit(4);
        exit(run_mode(count, args));
    }
    if (payload < 0) {
        say("ERROR fork of the payload failed: %s\n", strerror(errno));
        sigprocmask(SIG_SETMASK, &saved, NULL);
        return 1;
    }
    int code = -1;
    long long next = now_ns();
    while (code < 0) {
        for (;;) {
            int status = 0;
            pid_t done = waitpid(-1, &status, WNOHANG);
            if (done < 0 && errno == EINTR) continue;
            if (done < 0) { code = 1; break; }  /* no child left: cannot happen before payload */
            if (done == 0) break;
            if (done == payload) {
                code = WIFEXITED(status) ? WEXITSTATUS(status)
                     : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : 1;
                break;
            }
        }
        if (code >= 0) break;
        long long now = now_ns();
        if (now >= next && cg_samples_taken < CG_MAX_SAMPLES) {
            cg_sample();
            next += CG_SAMPLE_INTERVAL_NS;
            if (next <= now) next = now + CG_SAMPLE_INTERVAL_NS;  /* late: no burst */
            now = now_ns();
        }
        if (cg_samples_taken >= CG_MAX_SAMPLES) {
            sigwaitinfo(&chld, NULL);
            continue;
        }
        long long wait_ns = next > now ? next - now : 0;
        struct timespec ts = {(time_t)(wait_ns / 1000000000LL), (long)(wait_ns % 1000000000LL)};
        sigtimedwait(&chld, NULL, &ts);
    }
    sigprocmask(SIG_SETMASK, &saved, NULL);
    cg_dump();
    return code;
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

    static char cg_spec[4096];
    if (cg_find_spec(cg_spec, sizeof cg_spec)) {
        int cg_code = cg_run_payload(count, args, cg_spec);
        say("BENCH_EXIT %d\n", cg_code);
        init_power_off();
        return 0;
    }

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
