/* test_login_api - samples/login_api driven over real TCP sockets: the
 * server binary (LOGIN_API, set by samples/CMakeLists.txt) is started on
 * port 0 with short timeouts and two pool threads, each test talks HTTP/1.1
 * to it through plain blocking sockets (with receive timeouts, so that a
 * missing response fails instead of hanging), and every test ends with a
 * SIGTERM that must make the server exit 0 (in the ASan build that also
 * means: no leak, no use after free). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>
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
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.h"

/* The server gets this long to start (it hashes its users first) and to
 * stop, and a response this long to come. Generous: ASan, a busy machine. */
#define START_MS 60000
#define REPLY_MS 30000

TestSuite(login_api, .timeout = 240);

#ifndef LOGIN_API
Test(login_api, skipped) {
  cr_skip_test(
      "samples/login_api is not built (http-parser or libsodium "
      "missing, or WEFT_BUILD_SAMPLES=OFF)");
}
#else

/* --- The server process ------------------------------------------------- */

typedef struct {
  pid_t pid;
  int port;
  int out; /* Its stdout (read end). */
} server_t;

/* Start login_api with `args` (NULL-terminated, after the program name)
 * and wait for its "listening on http://127.0.0.1:PORT" line. */
static server_t start_server_argv(const char* const* args) {
  server_t s = {0};
  int fds[2];
  const char* argv[32];
  size_t n = 0;
  argv[n++] = LOGIN_API;
  for (; *args != NULL && n < 31; args++)
    argv[n++] = *args;
  argv[n] = NULL;
  cr_assert(pipe(fds) == 0);
  s.pid = fork();
  cr_assert(s.pid >= 0, "fork");
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
    cr_assert(poll(&p, 1, START_MS) == 1, "login_api did not start");
    ssize_t r = read(s.out, line + len, 1);
    cr_assert(r == 1, "login_api ended before it listened");
    if (line[len] == '\n')
      break;
    len++;
  }
  line[len] = '\0';
  cr_assert(sscanf(line, "listening on http://127.0.0.1:%d", &s.port) == 1,
            "first line: '%s'", line);
  cr_assert(s.port > 0);
  return s;
}

#define START(...) start_server_argv((const char* const[]){__VA_ARGS__, NULL})
/* The common arguments: port 0, 2 pool threads, timeouts that a test
 * could wait out. */
#define COMMON     "--port", "0", "--threads", "2"
#define START_DEFAULT() \
  START(COMMON, "--header-timeout-ms", "20000", "--idle-timeout-ms", "20000")

/* Wait for the process to end within `ms`; its wait status, or -1. */
static int wait_exit(pid_t pid, int ms) {
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
static void stop_server(server_t* s) {
  cr_assert(kill(s->pid, SIGTERM) == 0);
  int status = wait_exit(s->pid, START_MS);
  if (status == -1) {
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &status, 0);
    cr_assert_fail("login_api did not stop on SIGTERM");
  }
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
            "login_api ended with status %#x", status);
  close(s->out);
}

/* --- A client connection ------------------------------------------------ */

typedef struct {
  int fd;
  char buf[65536];
  size_t len;
} client_t;

static client_t* connect_to(const server_t* s) {
  client_t* c = calloc(1, sizeof(*c));
  struct sockaddr_in addr = {0};
  struct timeval tv = {REPLY_MS / 1000, 0};
  int one = 1;
  cr_assert(c != NULL);
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  cr_assert(c->fd >= 0);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)s->port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  cr_assert(connect(c->fd, (struct sockaddr*)&addr, sizeof(addr)) == 0,
            "connect: %s", strerror(errno));
  setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return c;
}

static void client_close(client_t* c) {
  close(c->fd);
  free(c);
}

static void send_str(client_t* c, const char* s) {
  size_t n = strlen(s);
  while (n > 0) {
    ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);
    cr_assert(w > 0, "send: %s", strerror(errno));
    s += w;
    n -= (size_t)w;
  }
}

/* Read more bytes into c->buf: >0 bytes, 0 on EOF, -1 on an error
 * (ECONNRESET) or the receive timeout. */
static ssize_t fill(client_t* c) {
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
static const char* header(const char* h, const char* end, const char* name) {
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
static response_t read_response(client_t* c) {
  response_t r = {0};
  char* end;
  while ((end = strstr(c->buf, "\r\n\r\n")) == NULL)
    cr_assert(fill(c) > 0, "no (whole) response; got '%s'", c->buf);
  cr_assert(sscanf(c->buf, "HTTP/1.1 %d ", &r.status) == 1, "status line: '%s'",
            c->buf);
  const char* cl = header(c->buf, end, "Content-Length");
  cr_assert(cl != NULL, "no Content-Length");
  size_t body_len = strtoul(cl, NULL, 10);
  const char* conn = header(c->buf, end, "Connection");
  r.close = conn != NULL && strncasecmp(conn, "close", 5) == 0;
  const char* allow = header(c->buf, end, "Allow");
  if (allow != NULL)
    sscanf(allow, "%31[^\r]", r.allow);
  const char* w = header(c->buf, end, "X-Worker");
  cr_assert(w != NULL, "no X-Worker");
  r.worker = (unsigned)strtoul(w, NULL, 10);
  size_t head_len = (size_t)(end + 4 - c->buf);
  while (c->len < head_len + body_len)
    cr_assert(fill(c) > 0, "body cut short");
  cr_assert(body_len < sizeof(r.body));
  memcpy(r.body, c->buf + head_len, body_len);
  r.body[body_len] = '\0';
  memmove(c->buf, c->buf + head_len + body_len,
          c->len - head_len - body_len + 1);
  c->len -= head_len + body_len;
  return r;
}

/* The server closed the connection (EOF or reset) with nothing more sent. */
static void expect_closed(client_t* c) {
  ssize_t r = fill(c);
  cr_assert(r == 0 || (r < 0 && errno == ECONNRESET),
            "connection still open (read %zd, %s; buffered '%s')", r,
            r < 0 ? strerror(errno) : "data", c->buf);
  cr_assert(c->len == 0, "unexpected bytes: '%s'", c->buf);
}

/* The last exchange of a connection: send `req` (unless NULL), read the
 * response, which must say "Connection: close", see the server close the
 * connection, and free `c`. Returns the response. */
static response_t last_response(client_t* c, const char* req) {
  if (req != NULL)
    send_str(c, req);
  response_t r = read_response(c);
  cr_assert(r.close, "%d %s without Connection: close", r.status, r.body);
  expect_closed(c);
  client_close(c);
  return r;
}

static char* login_request(const char* form, const char* extra) {
  static char req[1024];
  snprintf(req, sizeof(req),
           "POST /login HTTP/1.1\r\nHost: t\r\n"
           "Content-Type: application/x-www-form-urlencoded\r\n"
           "Content-Length: %zu\r\n%s\r\n%s",
           strlen(form), extra != NULL ? extra : "", form);
  return req;
}

static const char* health_request = "GET /health HTTP/1.1\r\nHost: t\r\n\r\n";

/* One request on a new connection; its response. */
static response_t one(const server_t* s, const char* req) {
  client_t* c = connect_to(s);
  send_str(c, req);
  response_t r = read_response(c);
  client_close(c);
  return r;
}

/* --- The routes --------------------------------------------------------- */

Test(login_api, good_password_200_wrong_ones_401) {
  server_t s = START_DEFAULT();
  response_t r = one(&s, login_request("user=alice&password=wonderland", NULL));
  cr_assert_eq(r.status, 200, "%s", r.body);
  cr_assert(strstr(r.body, "\"ok\":true") != NULL, "%s", r.body);
  cr_assert(strstr(r.body, "\"user\":\"alice\"") != NULL, "%s", r.body);
  /* Percent-escapes and '+' decode: "correct horse battery staple". */
  r = one(&s,
          login_request(
              "password=correct+horse%20battery+st%61ple&user=car%6fl", NULL));
  cr_assert_eq(r.status, 200, "%s", r.body);
  r = one(&s, login_request("user=alice&password=wonderlanD", NULL));
  cr_assert_eq(r.status, 401, "%s", r.body);
  r = one(&s, login_request("user=mallory&password=wonderland", NULL));
  cr_assert_eq(r.status, 401, "%s", r.body);
  r = one(&s, login_request("user=bob&password=", NULL));
  cr_assert_eq(r.status, 401, "%s", r.body);
  stop_server(&s);
}

Test(login_api, malformed_form_400) {
  server_t s = START_DEFAULT();
  static const char* forms[] = {
      "user=alice",                           /* no password */
      "password=wonderland",                  /* no user */
      "garbage",                              /* no '=' */
      "user=alice&password=won%zzderland",    /* bad escape */
      "user=alice&password=wonderland%4",     /* cut escape */
      "user=alice&user=bob&password=builder", /* twice */
      "user=al%00ice&password=wonderland",    /* a NUL */
      "",                                     /* empty */
  };
  /* One connection: a 400 keeps it open. */
  client_t* c = connect_to(&s);
  for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
    send_str(c, login_request(forms[i], NULL));
    response_t r = read_response(c);
    cr_assert_eq(r.status, 400, "form '%s': %d %s", forms[i], r.status, r.body);
    cr_assert(!r.close);
  }
  client_close(c);
  stop_server(&s);
}

Test(login_api, health_404_405) {
  server_t s = START_DEFAULT();
  response_t r = one(&s, health_request);
  cr_assert_eq(r.status, 200);
  cr_assert(strstr(r.body, "\"status\":\"ok\"") != NULL, "%s", r.body);
  cr_assert_eq(r.worker, 0); /* Not in a cluster. */
  r = one(&s, "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
  cr_assert_eq(r.status, 404);
  r = one(&s, "GET /health/x HTTP/1.1\r\nHost: t\r\n\r\n");
  cr_assert_eq(r.status, 404);
  r = one(&s, "GET /login HTTP/1.1\r\nHost: t\r\n\r\n");
  cr_assert_eq(r.status, 405);
  cr_assert_str_eq(r.allow, "POST");
  r = one(&s, "POST /health HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
  cr_assert_eq(r.status, 405);
  cr_assert_str_eq(r.allow, "GET");
  /* A query string does not change the route. */
  r = one(&s, "GET /health?verbose=1 HTTP/1.1\r\nHost: t\r\n\r\n");
  cr_assert_eq(r.status, 200);
  stop_server(&s);
}

/* --- Bad and oversize requests ------------------------------------------ */

Test(login_api, garbage_request_400_and_closed) {
  server_t s = START_DEFAULT();
  response_t r = last_response(connect_to(&s), "HELLO WORLD\r\n\r\n");
  cr_assert_eq(r.status, 400, "%s", r.body);
  /* A bad header line, after a good request on the same connection. */
  client_t* c = connect_to(&s);
  send_str(c, health_request);
  cr_assert_eq(read_response(c).status, 200);
  r = last_response(c, "GET /health HTTP/1.1\r\nHost t\r\n\r\n");
  cr_assert_eq(r.status, 400, "%s", r.body);
  stop_server(&s);
}

Test(login_api, oversize_bodies_413) {
  server_t s = START_DEFAULT();
  /* A declared length past 4 KiB is refused without sending the body. */
  response_t r = last_response(connect_to(&s),
                               "POST /login HTTP/1.1\r\nHost: t\r\n"
                               "Content-Length: 100000\r\n\r\n");
  cr_assert_eq(r.status, 413, "%s", r.body);

  /* A chunked body is counted as it comes: 3 chunks of 2000 bytes. */
  static char req[8192];
  char chunk[2001];
  memset(chunk, 'a', 2000);
  chunk[2000] = '\0';
  snprintf(req, sizeof(req),
           "POST /login HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
           "\r\n7d0\r\n%s\r\n7d0\r\n%s\r\n7d0\r\n%s\r\n0\r\n\r\n",
           chunk, chunk, chunk);
  r = last_response(connect_to(&s), req);
  cr_assert_eq(r.status, 413, "%s", r.body);

  /* A chunked body under the limit is fine (a form in two chunks). */
  r = one(&s,
          "POST /login HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked"
          "\r\n\r\nb\r\nuser=alice&\r\n13\r\npassword=wonderland\r\n0\r\n"
          "\r\n");
  cr_assert_eq(r.status, 200, "%s", r.body);
  stop_server(&s);
}

Test(login_api, huge_header_431) {
  server_t s = START_DEFAULT();
  static char req[20000];
  int n = snprintf(req, sizeof(req),
                   "GET /health HTTP/1.1\r\nHost: t\r\n"
                   "X-Big: ");
  memset(req + n, 'x', 16000);
  strcpy(req + n + 16000, "\r\n\r\n");
  response_t r = last_response(connect_to(&s), req);
  cr_assert_eq(r.status, 431, "%s", r.body);
  stop_server(&s);
}

/* --- Timeouts ----------------------------------------------------------- */

Test(login_api, truncated_request_408_after_header_timeout) {
  server_t s =
      START(COMMON, "--header-timeout-ms", "300", "--idle-timeout-ms", "20000");
  client_t* c = connect_to(&s);
  uint64_t t0 = now_ns();
  send_str(c, "POST /login HTTP/1.1\r\nHost: t\r\nContent-Le");
  response_t r = last_response(c, NULL);
  uint64_t waited_ms = (now_ns() - t0) / 1000000;
  cr_assert_eq(r.status, 408, "%s", r.body);
  cr_assert(waited_ms >= 300, "408 after %llu ms",
            (unsigned long long)waited_ms);

  /* A body that never comes counts too (headers and body, one deadline). */
  r = last_response(connect_to(&s),
                    "POST /login HTTP/1.1\r\nHost: t\r\n"
                    "Content-Length: 30\r\n\r\nuser=alice");
  cr_assert_eq(r.status, 408);

  /* The deadline starts again with each request of a connection. */
  c = connect_to(&s);
  send_str(c, health_request);
  cr_assert_eq(read_response(c).status, 200);
  sleep_ms(400);
  cr_assert_eq(last_response(c, "GET /health HTTP/1.1\r\n").status, 408);

  /* So does a connection that sends nothing at all. */
  cr_assert_eq(last_response(connect_to(&s), NULL).status, 408);
  stop_server(&s);
}

Test(login_api, idle_keep_alive_closed_after_idle_timeout) {
  server_t s =
      START(COMMON, "--header-timeout-ms", "20000", "--idle-timeout-ms", "300");
  client_t* c = connect_to(&s);
  /* The idle time starts after the response: later than this. */
  uint64_t t0 = now_ns();
  send_str(c, health_request);
  response_t r = read_response(c);
  cr_assert_eq(r.status, 200);
  cr_assert(!r.close);
  expect_closed(c); /* No 408: nothing was asked. */
  uint64_t waited_ms = (now_ns() - t0) / 1000000;
  cr_assert(waited_ms >= 300, "closed after %llu ms",
            (unsigned long long)waited_ms);
  client_close(c);
  stop_server(&s);
}

/* --- Connections -------------------------------------------------------- */

Test(login_api, keep_alive_several_requests) {
  server_t s = START_DEFAULT();
  client_t* c = connect_to(&s);
  for (int i = 0; i < 3; i++) {
    send_str(c, login_request("user=bob&password=builder", NULL));
    response_t r = read_response(c);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert(!r.close);
    send_str(c, health_request);
    cr_assert_eq(read_response(c).status, 200);
  }
  /* The server counts one connection (this one) for all of them. */
  send_str(c, health_request);
  response_t r = read_response(c);
  cr_assert(strstr(r.body, "\"connections\":1,") != NULL, "%s", r.body);
  cr_assert(strstr(r.body, "\"logins\":3") != NULL, "%s", r.body);
  client_close(c);
  stop_server(&s);
}

Test(login_api, pipelined_requests_answered_in_order) {
  server_t s = START_DEFAULT();
  client_t* c = connect_to(&s);
  /* /login, /health, /login in one send: /health must wait for the first
   * login's hash, and the responses come back in order. */
  char req[2048];
  snprintf(req, sizeof(req), "%s",
           login_request("user=alice&password="
                         "wonderland",
                         NULL));
  strcat(req, health_request);
  strcat(req, login_request("user=bob&password=nope", NULL));
  strcat(req, "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
  send_str(c, req);
  response_t r = read_response(c);
  cr_assert_eq(r.status, 200, "%s", r.body);
  cr_assert(strstr(r.body, "alice") != NULL, "%s", r.body);
  r = read_response(c);
  cr_assert_eq(r.status, 200);
  cr_assert(strstr(r.body, "\"status\":\"ok\"") != NULL, "%s", r.body);
  /* The health check ran after the first login's response was out. */
  cr_assert(strstr(r.body, "\"logins\":1") != NULL, "%s", r.body);
  r = read_response(c);
  cr_assert_eq(r.status, 401, "%s", r.body);
  r = read_response(c);
  cr_assert_eq(r.status, 404, "%s", r.body);
  client_close(c);
  stop_server(&s);
}

Test(login_api, http10_and_connection_close_end_the_connection) {
  server_t s = START_DEFAULT();
  response_t r = last_response(connect_to(&s), "GET /health HTTP/1.0\r\n\r\n");
  cr_assert_eq(r.status, 200);

  /* Connection: close on a login, with a request behind it that is
   * not answered. */
  char req[2048];
  snprintf(
      req, sizeof(req), "%s%s",
      login_request("user=alice&password=wonderland", "Connection: close\r\n"),
      health_request);
  r = last_response(connect_to(&s), req);
  cr_assert_eq(r.status, 200, "%s", r.body);

  /* HTTP/1.0 with keep-alive asked for stays open. */
  client_t* c = connect_to(&s);
  send_str(c, "GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  r = read_response(c);
  cr_assert(!r.close);
  last_response(c, "GET /health HTTP/1.0\r\n\r\n");
  stop_server(&s);
}

Test(login_api, client_gone_while_hashing) {
  server_t s = START_DEFAULT();
  /* Clients that send a login and close at once (some with a reset, some
   * half-closing), while their hashes run. */
  for (int i = 0; i < 6; i++) {
    client_t* c = connect_to(&s);
    send_str(c, login_request("user=alice&password=wonderland", NULL));
    if (i % 2 == 0) {
      struct linger lg = {1, 0}; /* close() sends a reset */
      setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    } else {
      shutdown(c->fd, SHUT_WR);
    }
    client_close(c);
  }
  /* A client that half-closes still gets its answer. */
  client_t* c = connect_to(&s);
  send_str(c, login_request("user=bob&password=builder", NULL));
  shutdown(c->fd, SHUT_WR);
  response_t r = last_response(c, NULL);
  cr_assert_eq(r.status, 200, "%s", r.body);
  /* The server is still there and serves. */
  r = one(&s, login_request("user=alice&password=wonderland", NULL));
  cr_assert_eq(r.status, 200, "%s", r.body);
  cr_assert_eq(waitpid(s.pid, NULL, WNOHANG), 0, "login_api died");
  stop_server(&s);
}

Test(login_api, connection_cap_503) {
  server_t s = START(COMMON, "--max-conns", "1");
  client_t* a = connect_to(&s);
  send_str(a, health_request);
  cr_assert_eq(read_response(a).status, 200);
  response_t r = last_response(connect_to(&s), NULL);
  cr_assert_eq(r.status, 503, "%s", r.body);
  send_str(a, health_request);
  cr_assert_eq(read_response(a).status, 200);
  client_close(a);
  stop_server(&s);
}

/* --- Shutdown ----------------------------------------------------------- */

Test(login_api, sigterm_finishes_the_login_in_flight_and_exits_0) {
  server_t s = START_DEFAULT();
  client_t* idle = connect_to(&s);
  client_t* c = connect_to(&s);
  /* Four logins in one send: they hash one after the other. */
  char req[4096] = "";
  for (int i = 0; i < 4; i++)
    strcat(req, login_request("user=bob&password=builder", NULL));
  send_str(c, req);
  /* SIGTERM once one hashes (or, on a machine so slow that this never
   * saw one hashing, after all four). */
  response_t r;
  do {
    send_str(idle, health_request);
    r = read_response(idle);
    cr_assert_eq(r.status, 200);
  } while (strstr(r.body, "\"hashing\":1") == NULL &&
           strstr(r.body, "\"logins\":4") == NULL);
  cr_assert(kill(s.pid, SIGTERM) == 0);
  /* The login that hashes is answered, and says the connection closes
   * (unless, on a very slow machine, all four were answered before the
   * signal came); no request after it is. */
  int answered = 0;
  do {
    r = read_response(c);
    cr_assert_eq(r.status, 200, "%s", r.body);
    answered++;
  } while (!r.close && answered < 4);
  cr_assert(r.close || answered == 4);
  expect_closed(c);
  client_close(c);
  expect_closed(idle); /* The idle connection was closed at once. */
  client_close(idle);
  int status = wait_exit(s.pid, START_MS);
  cr_assert(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
            "status %#x", status);
  close(s.out);
}

/* --- Cluster mode (--workers 2) ----------------------------------------- */

/* Keep one connection to each of the two children: open connections until
 * both have answered (the kernel hands each connection to one child). */
static void connect_to_both(const server_t* s, client_t* by_worker[3]) {
  by_worker[1] = by_worker[2] = NULL;
  for (int i = 0; i < 1000 && (by_worker[1] == NULL || by_worker[2] == NULL);
       i++) {
    client_t* c = connect_to(s);
    send_str(c, health_request);
    response_t r = read_response(c);
    cr_assert_eq(r.status, 200);
    cr_assert(r.worker == 1 || r.worker == 2, "X-Worker %u", r.worker);
    if (by_worker[r.worker] == NULL)
      by_worker[r.worker] = c;
    else
      client_close(c);
  }
  cr_assert(by_worker[1] != NULL && by_worker[2] != NULL,
            "only one child answered 1000 connections");
}

/* The pid a /health answer names. */
static int health_pid(const response_t* r) {
  const char* p = strstr(r->body, "\"pid\":");
  cr_assert(p != NULL, "%s", r->body);
  return atoi(p + 6);
}

Test(login_api, cluster_both_children_serve) {
  server_t s =
      START(COMMON, "--workers", "2", "--threads", "1", "--header-timeout-ms",
            "20000", "--idle-timeout-ms", "20000");
  client_t* by_worker[3];
  connect_to_both(&s, by_worker);
  int pids[3] = {0};
  for (unsigned w = 1; w <= 2; w++) {
    client_t* c = by_worker[w];
    send_str(c, health_request);
    response_t r = read_response(c);
    pids[w] = health_pid(&r);
    cr_assert(pids[w] != s.pid, "the primary does not serve");
    /* The core checks, in each child: logins, a bad form, 404 and a
     * pipelined /login, /health, /login. */
    send_str(c, login_request("user=alice&password=wonderland", NULL));
    r = read_response(c);
    cr_assert_eq(r.status, 200, "%s", r.body);
    cr_assert_eq(r.worker, w);
    send_str(c, login_request("user=alice&password=x", NULL));
    cr_assert_eq(read_response(c).status, 401);
    send_str(c, login_request("user=alice", NULL));
    cr_assert_eq(read_response(c).status, 400);
    send_str(c, "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
    cr_assert_eq(read_response(c).status, 404);
    char req[2048];
    snprintf(req, sizeof(req), "%s",
             login_request("user=bob&password="
                           "builder",
                           NULL));
    strcat(req, health_request);
    strcat(req, login_request("user=nobody&password=builder", NULL));
    send_str(c, req);
    cr_assert_eq(read_response(c).status, 200);
    r = read_response(c);
    cr_assert(strstr(r.body, "\"logins\":3") != NULL, "%s", r.body);
    cr_assert_eq(read_response(c).status, 401);
    cr_assert_eq(r.worker, w);
  }
  cr_assert_neq(pids[1], pids[2]);
  client_close(by_worker[1]);
  client_close(by_worker[2]);
  /* SIGTERM to the primary stops the children too; it exits 0. */
  stop_server(&s);
  cr_assert(kill(pids[1], 0) != 0 && kill(pids[2], 0) != 0,
            "a child outlived the primary");
}

Test(login_api, cluster_child_killed_is_replaced) {
  server_t s = START(COMMON, "--workers", "2", "--threads", "1");
  client_t* by_worker[3];
  connect_to_both(&s, by_worker);
  send_str(by_worker[1], health_request);
  response_t r = read_response(by_worker[1]);
  /* SIGKILL child 1: its connection dies, child 2 serves on, and a new
   * child (id 3) takes its place on the same port. */
  cr_assert(kill(health_pid(&r), SIGKILL) == 0);
  expect_closed(by_worker[1]);
  client_close(by_worker[1]);
  send_str(by_worker[2], login_request("user=alice&password=wonderland", NULL));
  cr_assert_eq(read_response(by_worker[2]).status, 200);
  bool seen3 = false;
  for (int i = 0; i < 2000 && !seen3; i++) {
    client_t* c = connect_to(&s);
    send_str(c, health_request);
    r = read_response(c);
    cr_assert_eq(r.status, 200);
    seen3 = r.worker == 3;
    client_close(c);
    if (!seen3)
      sleep_ms(5);
  }
  cr_assert(seen3, "no replacement child served");
  client_close(by_worker[2]);
  stop_server(&s);
}

#endif /* LOGIN_API */
