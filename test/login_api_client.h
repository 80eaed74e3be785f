/* login_api_client.h - what test_login_api.c (Criterion) and
 * scenario_login_api.c (plain, also under TSan) share to drive
 * samples/login_api: start the binary (LOGIN_API, its path, set by
 * samples/CMakeLists.txt) and read its port, stop it with SIGTERM and
 * check its exit code, and a blocking HTTP/1.1 client with receive
 * timeouts, so that a missing response fails instead of hanging. Checks
 * are support.h's CHECK: include this after support.h. */
#ifndef WEFT_TEST_LOGIN_API_CLIENT_H
#define WEFT_TEST_LOGIN_API_CLIENT_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* The server gets this long to start (it hashes its users first) and to
 * stop, and a response this long to come. Generous: sanitizers, a busy
 * machine. */
#define START_MS 60000
#define REPLY_MS 30000

#ifdef LOGIN_API

/* --- The server process ------------------------------------------------- */

typedef struct {
  pid_t pid;
  int port;
  int out; /* Its stdout (read end). */
} server_t;

/* Start login_api with `args` (NULL-terminated, after the program name)
 * and wait for its "listening on http://127.0.0.1:PORT" line. */
static inline server_t start_server_argv(const char* const* args) {
  server_t s = {0};
  int fds[2];
  const char* argv[32];
  size_t n = 0;
  argv[n++] = LOGIN_API;
  for (; *args != NULL && n < 31; args++)
    argv[n++] = *args;
  argv[n] = NULL;
  CHECK(pipe(fds) == 0, "pipe: %s", strerror(errno));
  s.pid = fork();
  CHECK(s.pid >= 0, "fork");
  if (s.pid == 0) {
    /* A failed test ends without stop_server(): the server goes with it. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(fds[1], 1);
    close(fds[0]);
    close(fds[1]);
    execv(LOGIN_API, (char* const*)argv);
    _exit(127);
  }
  close(fds[1]);
  s.out = fds[0];
  /* Read its first line. */
  char line[256];
  size_t len = 0;
  while (len < sizeof(line) - 1) {
    struct pollfd p = {s.out, POLLIN, 0};
    CHECK(poll(&p, 1, START_MS) == 1, "login_api did not start");
    ssize_t r = read(s.out, line + len, 1);
    CHECK(r == 1, "login_api ended before it listened");
    if (line[len] == '\n')
      break;
    len++;
  }
  line[len] = '\0';
  CHECK(sscanf(line, "listening on http://127.0.0.1:%d", &s.port) == 1,
        "first line: '%s'", line);
  CHECK(s.port > 0, "port %d", s.port);
  return s;
}

#define START(...) start_server_argv((const char* const[]){__VA_ARGS__, NULL})
/* The common arguments: port 0, 2 pool threads, timeouts that a test
 * could wait out. */
#define COMMON "--port", "0", "--threads", "2"
#define START_DEFAULT() \
  START(COMMON, "--header-timeout-ms", "20000", "--idle-timeout-ms", "20000")

/* Wait for the process to end within `ms`; its wait status, or -1. */
static inline int wait_exit(pid_t pid, int ms) {
  int status;
  for (int i = 0; i < ms; i++) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid)
      return status;
    sleep_ms(1);
  }
  return -1;
}

/* SIGTERM; the server must exit 0 (graceful shutdown; no sanitizer report
 * in the ASan build, whose reports change the exit code). */
static inline void stop_server(server_t* s) {
  CHECK(kill(s->pid, SIGTERM) == 0, "kill: %s", strerror(errno));
  int status = wait_exit(s->pid, START_MS);
  if (status == -1) {
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &status, 0);
    CHECK(false, "login_api did not stop on SIGTERM");
  }
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "login_api ended with status %#x", status);
  close(s->out);
}

/* --- A client connection ------------------------------------------------ */

typedef struct {
  int fd;
  char buf[65536];
  size_t len;
} client_t;

static inline client_t* connect_to(const server_t* s) {
  client_t* c = calloc(1, sizeof(*c));
  struct sockaddr_in addr = {0};
  struct timeval tv = {REPLY_MS / 1000, 0};
  int one = 1;
  CHECK(c != NULL, "out of memory");
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  CHECK(c->fd >= 0, "socket: %s", strerror(errno));
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)s->port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK(connect(c->fd, (struct sockaddr*)&addr, sizeof(addr)) == 0,
        "connect: %s", strerror(errno));
  setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return c;
}

static inline void client_close(client_t* c) {
  close(c->fd);
  free(c);
}

static inline void send_str(client_t* c, const char* s) {
  size_t n = strlen(s);
  while (n > 0) {
    ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);
    CHECK(w > 0, "send: %s", strerror(errno));
    s += w;
    n -= (size_t)w;
  }
}

/* Read more bytes into c->buf: >0 bytes, 0 on EOF, -1 on an error
 * (ECONNRESET) or the receive timeout. */
static inline ssize_t fill(client_t* c) {
  if (c->len >= sizeof(c->buf) - 1)
    return -1;
  ssize_t r = recv(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, 0);
  if (r > 0)
    c->len += (size_t)r;
  c->buf[c->len] = '\0';
  return r;
}

typedef struct {
  int status;
  bool close; /* Connection: close */
  char allow[32];
  unsigned worker; /* X-Worker */
  char body[1024];
} response_t;

/* Find header `name` (with ": ") in the head [h, end); its value or NULL. */
static inline const char* header(const char* h,
                                 const char* end,
                                 const char* name) {
  size_t n = strlen(name);
  for (const char* p = h; p != NULL && p < end;) {
    if (strncasecmp(p, name, n) == 0 && p[n] == ':')
      return p + n + 1 + strspn(p + n + 1, " ");
    p = strstr(p, "\r\n");
    p = p != NULL ? p + 2 : NULL;
  }
  return NULL;
}

/* Read one whole response (headers and Content-Length body). */
static inline response_t read_response(client_t* c) {
  response_t r = {0};
  char* end;
  while ((end = strstr(c->buf, "\r\n\r\n")) == NULL)
    CHECK(fill(c) > 0, "no (whole) response; got '%s'", c->buf);
  CHECK(sscanf(c->buf, "HTTP/1.1 %d ", &r.status) == 1, "status line: '%s'",
        c->buf);
  const char* cl = header(c->buf, end, "Content-Length");
  CHECK(cl != NULL, "no Content-Length");
  size_t body_len = strtoul(cl, NULL, 10);
  const char* conn = header(c->buf, end, "Connection");
  r.close = conn != NULL && strncasecmp(conn, "close", 5) == 0;
  const char* allow = header(c->buf, end, "Allow");
  if (allow != NULL)
    sscanf(allow, "%31[^\r]", r.allow);
  const char* w = header(c->buf, end, "X-Worker");
  CHECK(w != NULL, "no X-Worker");
  r.worker = (unsigned)strtoul(w, NULL, 10);
  size_t head_len = (size_t)(end + 4 - c->buf);
  while (c->len < head_len + body_len)
    CHECK(fill(c) > 0, "body cut short");
  CHECK(body_len < sizeof(r.body), "body of %zu bytes", body_len);
  memcpy(r.body, c->buf + head_len, body_len);
  r.body[body_len] = '\0';
  memmove(c->buf, c->buf + head_len + body_len,
          c->len - head_len - body_len + 1);
  c->len -= head_len + body_len;
  return r;
}

/* The server closed the connection (EOF or reset) with nothing more sent. */
static inline void expect_closed(client_t* c) {
  ssize_t r = fill(c);
  CHECK(r == 0 || (r < 0 && errno == ECONNRESET),
        "connection still open (read %zd, %s; buffered '%s')", r,
        r < 0 ? strerror(errno) : "data", c->buf);
  CHECK(c->len == 0, "unexpected bytes: '%s'", c->buf);
}

/* The last exchange of a connection: send `req` (unless NULL), read the
 * response, which must say "Connection: close", see the server close the
 * connection, and free `c`. Returns the response. */
static inline response_t last_response(client_t* c, const char* req) {
  if (req != NULL)
    send_str(c, req);
  response_t r = read_response(c);
  CHECK(r.close, "%d %s without Connection: close", r.status, r.body);
  expect_closed(c);
  client_close(c);
  return r;
}

static inline char* login_request(const char* form, const char* extra) {
  static char req[1024];
  snprintf(req, sizeof(req),
           "POST /login HTTP/1.1\r\nHost: t\r\n"
           "Content-Type: application/x-www-form-urlencoded\r\n"
           "Content-Length: %zu\r\n%s\r\n%s",
           strlen(form), extra != NULL ? extra : "", form);
  return req;
}

static const char* const health_request =
    "GET /health HTTP/1.1\r\nHost: t\r\n\r\n";

/* One request on a new connection; its response. */
static inline response_t one(const server_t* s, const char* req) {
  client_t* c = connect_to(s);
  send_str(c, req);
  response_t r = read_response(c);
  client_close(c);
  return r;
}

#endif /* LOGIN_API */
#endif /* WEFT_TEST_LOGIN_API_CLIENT_H */
