/* A process that lives about a millisecond: sleeps 1 ms and exits. Built static, so nothing
 * but the kernel runs before main. Copies get bytes appended (a tag) to differ in digest. */
#include <time.h>

int main(void) {
    struct timespec t = {0, 1000000};
    nanosleep(&t, 0);
    return 0;
}
