/* futex.h - parking a thread on a 32-bit word (Linux futex) and the pause
 * instruction that spinning loops use before they park. */
#ifndef WEFT_TRANSPORT_FUTEX_H
#define WEFT_TRANSPORT_FUTEX_H

#include <errno.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* One spin-loop iteration's worth of waiting, easy on the sibling thread. */
static inline void weft__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* Sleep while `*word` holds `expected`, for at most `timeout_ns` (negative:
 * no limit). Returns 0 when woken (or spuriously), else EAGAIN (the word
 * had changed), EINTR or ETIMEDOUT; callers re-check their condition. */
static inline int weft__futex_wait(_Atomic uint32_t* word,
                                   uint32_t expected,
                                   int64_t timeout_ns) {
  struct timespec ts;
  struct timespec* tsp = NULL;
  if (timeout_ns >= 0) {
    ts.tv_sec = (time_t)(timeout_ns / 1000000000);
    ts.tv_nsec = (long)(timeout_ns % 1000000000);
    tsp = &ts;
  }
  if (syscall(SYS_futex, (uint32_t*)word, FUTEX_WAIT_PRIVATE, expected, tsp,
              NULL, 0) == 0)
    return 0;
  return errno;
}

/* Wake one thread sleeping on `word`. */
static inline void weft__futex_wake(_Atomic uint32_t* word) {
  syscall(SYS_futex, (uint32_t*)word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* Wake every thread sleeping on `word`. */
static inline void weft__futex_wake_all(_Atomic uint32_t* word) {
  syscall(SYS_futex, (uint32_t*)word, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL,
          NULL, 0);
}

#endif /* WEFT_TRANSPORT_FUTEX_H */
