/* Fileless execution as malware does it: copies the program named by argv[1] into an
 * anonymous memory file (memfd_create) and executes that, with argv[1..] as its arguments.
 * The process then runs "/memfd:payload (deleted)", a file no path reaches. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    int in = open(argv[1], O_RDONLY);
    if (in < 0)
        return 3;
    int mem = memfd_create("payload", 0);
    if (mem < 0)
        return 4;
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        if (write(mem, buf, (size_t)n) != n)
            return 5;
    close(in);
    fexecve(mem, argv + 1, environ);
    return 6;
}
