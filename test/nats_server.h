/* nats_server.h - tests start their own nats-server (Debian's nats-server,
 * installed by scripts/deps.sh) on a free loopback port, and stop it. */
#ifndef WEFT_TEST_NATS_SERVER_H
#define WEFT_TEST_NATS_SERVER_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct {
  pid_t pid;
  int port;
  char url[64];
} nats_server_t;

/* A port the kernel says is free now (bound to 0, then closed). */
static inline int nats_free_port(void) {
  struct sockaddr_in a;
  socklen_t len = sizeof(a);
  int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
  if (fd < 0)
    return -1;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr*)&a, sizeof(a)) == 0 &&
      getsockname(fd, (struct sockaddr*)&a, &len) == 0)
    port = ntohs(a.sin_port);
  close(fd);
  return port;
}

static inline int nats_try_connect(int port) {
  struct sockaddr_in a;
  int fd = socket(AF_INET, SOCK_STREAM, 0), ok;
  if (fd < 0)
    return 0;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons((uint16_t)port);
  ok = connect(fd, (struct sockaddr*)&a, sizeof(a)) == 0;
  close(fd);
  return ok;
}

/* Start `nats-server -a 127.0.0.1 -p <free port>` plus `extra` arguments
 * (NULL-terminated; may be NULL) and wait until it accepts connections
 * (at most 10 s). 0, or -1 with nothing left running. */
static inline int nats_server_start(nats_server_t* s,
                                    const char* const* extra) {
  const char* argv[32];
  char port[16];
  int n = 0, i;
  s->port = nats_free_port();
  if (s->port <= 0)
    return -1;
  snprintf(port, sizeof(port), "%d", s->port);
  snprintf(s->url, sizeof(s->url), "nats://127.0.0.1:%d", s->port);
  argv[n++] = "nats-server";
  argv[n++] = "-a";
  argv[n++] = "127.0.0.1";
  argv[n++] = "-p";
  argv[n++] = port;
  for (i = 0; extra != NULL && extra[i] != NULL && n < 31; i++)
    argv[n++] = extra[i];
  argv[n] = NULL;
  s->pid = fork();
  if (s->pid < 0)
    return -1;
  if (s->pid == 0) {
    int devnull = open("/dev/null", O_WRONLY);
    /* A test that crashes or times out takes its servers with it. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (devnull >= 0 && getenv("WEFT_TEST_NATS_LOG") == NULL) {
      dup2(devnull, 1);
      dup2(devnull, 2);
    }
    execvp("nats-server", (char* const*)argv);
    _exit(127);
  }
  for (i = 0; i < 1000; i++) {
    int status;
    if (nats_try_connect(s->port))
      return 0;
    if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
      fprintf(stderr, "nats-server exited (is it installed?)\n");
      s->pid = 0;
      return -1;
    }
    {
      struct timespec ts = {0, 10000000};
      nanosleep(&ts, NULL);
    }
  }
  kill(s->pid, SIGKILL);
  waitpid(s->pid, NULL, 0);
  s->pid = 0;
  return -1;
}

static inline void nats_server_stop(nats_server_t* s) {
  if (s->pid > 0) {
    kill(s->pid, SIGTERM);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
  }
}

#endif /* WEFT_TEST_NATS_SERVER_H */
