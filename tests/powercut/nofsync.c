/* nofsync.so: LD_PRELOAD shim for the power-cut test's CONTROL run only.
 * It turns every durability call into a no-op, so ingestd acknowledges files that
 * exist only in the guest's page cache. A power cut must then lose them: if the
 * harness does not see that loss, it cannot see any and the test fails.
 * Build: cc -O2 -Wall -shared -fPIC -o nofsync.so nofsync.c */
#define _GNU_SOURCE
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static int said[6];
static void note(int k, const char *w) {
    if (said[k]) return;
    said[k] = 1;
    static const char m[] = "nofsync: neutralized first ";
    (void)!write(2, m, sizeof m - 1);
    (void)!write(2, w, strlen(w));
    (void)!write(2, "\n", 1);
}
__attribute__((constructor)) static void hello(void) {
    static const char m[] = "nofsync: shim loaded (fsync/fdatasync/syncfs/sync/sync_file_range/msync are no-ops)\n";
    (void)!write(2, m, sizeof m - 1);
}
int fsync(int fd) { (void)fd; note(0, "fsync"); return 0; }
int fdatasync(int fd) { (void)fd; note(1, "fdatasync"); return 0; }
int syncfs(int fd) { (void)fd; note(2, "syncfs"); return 0; }
void sync(void) { note(3, "sync"); }
int sync_file_range(int fd, off64_t o, off64_t n, unsigned int f) {
    (void)fd; (void)o; (void)n; (void)f; note(4, "sync_file_range"); return 0;
}
int msync(void *a, size_t l, int f) { (void)a; (void)l; (void)f; note(5, "msync"); return 0; }
