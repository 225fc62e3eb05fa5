// The caches of one core, as the operating system describes them: what the tuning table's
// cache-sized blocks follow (tuning.c).
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#if defined(__APPLE__)
#include <sys/sysctl.h>
#endif

#if defined(__linux__)
// One line of a sysfs file, or 0 when it is missing.
static int read_line(const char *dir, const char *name, char *out, size_t size) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    const int ok = fgets(out, (int)size, f) != NULL;
    fclose(f);
    if (ok) out[strcspn(out, "\n")] = 0;
    return ok;
}

// CPUs in a list like "0-3,8,10-11".
static long count_cpus(const char *list) {
    long n = 0;
    for (const char *p = list; *p;) {
        char *end;
        const long lo = strtol(p, &end, 10), hi = *end == '-' ? strtol(end + 1, &end, 10) : lo;
        if (end == p) break;
        n += hi - lo + 1;
        p = *end == ',' ? end + 1 : end;
    }
    return n;
}

// cpu0's caches from sysfs: "48K", "2048K", "260M"; the L3 divided among the CPUs sharing it.
static void sysfs_caches(kn_caches *c) {
    for (int i = 0; i < 16; i++) {
        char dir[96], level[16], type[32], size[32], shared[256];
        snprintf(dir, sizeof dir, "/sys/devices/system/cpu/cpu0/cache/index%d", i);
        if (!read_line(dir, "level", level, sizeof level)) break;
        if (!read_line(dir, "type", type, sizeof type) || strcmp(type, "Instruction") == 0) continue;
        if (!read_line(dir, "size", size, sizeof size)) continue;
        char *unit;
        long bytes = strtol(size, &unit, 10);
        bytes *= *unit == 'K' ? 1024L : *unit == 'M' ? 1024L * 1024 : *unit == 'G' ? 1024L * 1024 * 1024 : 1;
        const long sharing = read_line(dir, "shared_cpu_list", shared, sizeof shared) ? count_cpus(shared) : 1;
        switch (atoi(level)) {
        case 1: c->l1d = bytes; break;
        case 2: c->l2 = bytes; break;
        case 3: c->l3 = bytes / (sharing > 0 ? sharing : 1); break;
        }
    }
}
#endif

#if defined(__APPLE__)
static long sysctl_long(const char *name) {
    long long v = 0;
    size_t size = sizeof v;
    return sysctlbyname(name, &v, &size, NULL, 0) == 0 ? (long)v : 0;
}
#endif

kn_caches kn_machine_caches(void) {
    kn_caches c = {0, 0, 0};
#if defined(__linux__)
    sysfs_caches(&c);
#if defined(_SC_LEVEL2_CACHE_SIZE)
    if (c.l1d <= 0) c.l1d = sysconf(_SC_LEVEL1_DCACHE_SIZE);
    if (c.l2 <= 0) c.l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
#elif defined(__APPLE__)
    // the performance cores' (perflevel0); an L2 is shared by a cluster of them
    c.l1d = sysctl_long("hw.perflevel0.l1dcachesize");
    const long l2 = sysctl_long("hw.perflevel0.l2cachesize"), per = sysctl_long("hw.perflevel0.cpusperl2");
    c.l2 = l2 > 0 && per > 0 ? l2 / per : l2;
    if (c.l1d <= 0) c.l1d = sysctl_long("hw.l1dcachesize");
    if (c.l2 <= 0) c.l2 = sysctl_long("hw.l2cachesize");
#endif
    if (c.l1d < 0) c.l1d = 0;
    if (c.l2 < 0) c.l2 = 0;
    if (c.l3 < 0) c.l3 = 0;
    return c;
}
