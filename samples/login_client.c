/* login_client - load and demo client for samples/login_api: C keep-alive
 * connections post logins until N are done while one more connection asks
 * GET /health every few milliseconds, timing each answer. It shows the
 * point of login_api: /health stays fast while every core hashes.
 *
 *   login_client --port P [--host H] [--logins N] [--concurrency C]
 *                [--health-interval-ms MS] [--user U] [--password PW]
 *                [--timeout-ms MS]
 *
 * Prints logins/s, the login latency (p50, p99), the /health latency
 * (p50, p99, max) and the count of non-200 responses, and which worker
 * processes answered (login_api --workers N). Exits 1 if any request
 * failed or got another status than 200, or nothing was done within
 * --timeout-ms (default 60000).
 *
 * Plain libuv, no weft: a client of the server, not part of it. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* uv.h's POSIX types; getopt_long */
#endif
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#define MAX_WORKERS 64 /* X-Worker ids counted; larger ones are summed. */

typedef struct {
  const char* host;
  int port;
  unsigned logins, concurrency;
  uint64_t health_interval_ms, timeout_ms;
  const char* user;
  const char* password;
} options_t;

/* Latencies in nanoseconds. */
typedef struct {
  uint64_t* v;
  size_t n, cap;
} samples_t;

/* One connection: it sends one request at a time and reads its answer. */
typedef struct {
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_write_t write;
  bool health; /* The /health connection (else a login one). */
  bool busy;   /* A request is out. */
  uint64_t sent_ns;
  char in[4096];
  size_t in_len;
} conn_t;

static options_t opt = {.host = "127.0.0.1",
                        .logins = 40,
                        .concurrency = 8,
                        .health_interval_ms = 5,
                        .timeout_ms = 60000,
                        .user = "alice",
                        .password = "wonderland"};
static uv_loop_t* loop;
static char login_req[1024];
static const char health_req[] = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
static unsigned started, done; /* Logins sent and answered. */
static unsigned non200, failed;
static unsigned by_worker[MAX_WORKERS + 1];
static samples_t login_lat, health_lat;
static uint64_t t_start, t_end;
static conn_t* conns; /* [0, concurrency): logins; [concurrency]: health. */
static uv_timer_t health_timer, deadline;
static bool finished;

static void add_sample(samples_t* s, uint64_t ns) {
  if (s->n == s->cap) {
    size_t cap = s->cap * 2 + 64;
    uint64_t* v = realloc(s->v, cap * sizeof(*v));
    if (v == NULL)
      return;
    s->v = v;
    s->cap = cap;
  }
  s->v[s->n++] = ns;
}

static int cmp_u64(const void* a, const void* b) {
  uint64_t x = *(const uint64_t*)a, y = *(const uint64_t*)b;
  return x < y ? -1 : x > y;
}

/* The q-quantile in milliseconds (nearest rank). */
static double quantile_ms(const samples_t* s, double q) {
  if (s->n == 0)
    return 0;
  size_t i = (size_t)(q * (double)(s->n - 1) + 0.5);
  return (double)s->v[i] / 1e6;
}

static void close_all(void) {
  if (finished)
    return;
  finished = true;
  t_end = uv_hrtime();
  for (unsigned i = 0; i <= opt.concurrency; i++)
    if (!uv_is_closing((uv_handle_t*)&conns[i].tcp))
      uv_close((uv_handle_t*)&conns[i].tcp, NULL);
  uv_close((uv_handle_t*)&health_timer, NULL);
  uv_close((uv_handle_t*)&deadline, NULL);
}

static void send_request(conn_t* c);

static void on_health_timer(uv_timer_t* t) {
  (void)t;
  send_request(&conns[opt.concurrency]);
}

/* One whole response is in c->in: count it, send the next request. */
static void on_response(conn_t* c, int status, unsigned worker) {
  uint64_t ns = uv_hrtime() - c->sent_ns;
  c->busy = false;
  if (status != 200)
    non200++;
  if (c->health) {
    add_sample(&health_lat, ns);
    uv_timer_start(&health_timer, on_health_timer, opt.health_interval_ms, 0);
    return;
  }
  add_sample(&login_lat, ns);
  by_worker[worker < MAX_WORKERS ? worker : MAX_WORKERS]++;
  if (++done == opt.logins)
    close_all();
  else if (started < opt.logins)
    send_request(c);
}

/* Parse what was read: status line, Content-Length, X-Worker, body. */
static void parse(conn_t* c) {
  c->in[c->in_len] = '\0';
  char* end = strstr(c->in, "\r\n\r\n");
  if (end == NULL)
    return;
  int status = 0;
  size_t body = 0;
  unsigned worker = 0;
  sscanf(c->in, "HTTP/1.%*d %d", &status);
  for (char* h = strstr(c->in, "\r\n"); h != NULL && h < end;
       h = strstr(h + 2, "\r\n")) {
    if (strncasecmp(h + 2, "Content-Length:", 15) == 0)
      body = strtoul(h + 17, NULL, 10);
    else if (strncasecmp(h + 2, "X-Worker:", 9) == 0)
      worker = (unsigned)strtoul(h + 11, NULL, 10);
  }
  size_t total = (size_t)(end + 4 - c->in) + body;
  if (c->in_len < total)
    return;
  /* One request at a time: nothing follows the response. */
  c->in_len = 0;
  on_response(c, status, worker);
}

static void fail_conn(conn_t* c, const char* what, int err) {
  fprintf(stderr, "login_client: %s: %s\n", what, uv_strerror(err));
  failed++;
  if (!uv_is_closing((uv_handle_t*)&c->tcp))
    uv_close((uv_handle_t*)&c->tcp, NULL);
  /* A lost login connection: stop when no other can finish the run. */
  bool any = false;
  for (unsigned i = 0; i < opt.concurrency; i++)
    any |= !uv_is_closing((uv_handle_t*)&conns[i].tcp);
  if (c->health || !any)
    close_all();
}

static void alloc_cb(uv_handle_t* h, size_t size, uv_buf_t* buf) {
  conn_t* c = h->data;
  (void)size;
  *buf =
      uv_buf_init(c->in + c->in_len, (unsigned)(sizeof(c->in) - 1 - c->in_len));
}

static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  conn_t* c = s->data;
  (void)buf;
  if (n < 0) {
    fail_conn(c, "read", (int)n);
    return;
  }
  c->in_len += (size_t)n;
  if (c->in_len >= sizeof(c->in) - 1) {
    fail_conn(c, "response", UV_E2BIG);
    return;
  }
  parse(c);
}

static void on_write(uv_write_t* w, int status) {
  if (status != 0 && status != UV_ECANCELED)
    fail_conn(w->data, "write", status);
}

static void send_request(conn_t* c) {
  if (finished || c->busy)
    return;
  const char* req = c->health ? health_req : login_req;
  uv_buf_t buf = uv_buf_init((char*)req, (unsigned)strlen(req));
  if (!c->health)
    started++;
  c->busy = true;
  c->sent_ns = uv_hrtime();
  c->write.data = c;
  int err = uv_write(&c->write, (uv_stream_t*)&c->tcp, &buf, 1, on_write);
  if (err != 0)
    fail_conn(c, "write", err);
}

static void on_connect(uv_connect_t* req, int status) {
  conn_t* c = req->data;
  if (status != 0) {
    fail_conn(c, "connect", status);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t*)&c->tcp, alloc_cb, on_read);
  send_request(c);
}

static void on_deadline(uv_timer_t* t) {
  (void)t;
  fprintf(stderr, "login_client: not done after %llu ms\n",
          (unsigned long long)opt.timeout_ms);
  failed++;
  close_all();
}

/* application/x-www-form-urlencoded: letters, digits and -._~ as they
 * are, a space as '+', the rest as %XX. */
static void form_encode(char* out, size_t cap, const char* s) {
  size_t o = 0;
  for (; *s != '\0' && o + 4 < cap; s++) {
    unsigned char ch = (unsigned char)*s;
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
        (ch >= '0' && ch <= '9') || strchr("-._~", ch) != NULL)
      out[o++] = (char)ch;
    else if (ch == ' ')
      out[o++] = '+';
    else
      o += (size_t)snprintf(out + o, cap - o, "%%%02X", ch);
  }
  out[o] = '\0';
}

static int usage(void) {
  fprintf(stderr,
          "usage: login_client --port P [--host H] [--logins N] "
          "[--concurrency C]\n"
          "                    [--health-interval-ms MS] [--user U] "
          "[--password PW] [--timeout-ms MS]\n");
  return 2;
}

int main(int argc, char** argv) {
  static const struct option longs[] = {
      {"port", required_argument, NULL, 'p'},
      {"host", required_argument, NULL, 'H'},
      {"logins", required_argument, NULL, 'n'},
      {"concurrency", required_argument, NULL, 'c'},
      {"health-interval-ms", required_argument, NULL, 'i'},
      {"user", required_argument, NULL, 'u'},
      {"password", required_argument, NULL, 'w'},
      {"timeout-ms", required_argument, NULL, 't'},
      {NULL, 0, NULL, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "", longs, NULL)) != -1) {
    long long v = optarg != NULL ? strtoll(optarg, NULL, 10) : 0;
    switch (ch) {
      case 'p':
        opt.port = (int)v;
        break;
      case 'H':
        opt.host = optarg;
        break;
      case 'n':
        opt.logins = (unsigned)v;
        break;
      case 'c':
        opt.concurrency = (unsigned)v;
        break;
      case 'i':
        opt.health_interval_ms = (uint64_t)v;
        break;
      case 'u':
        opt.user = optarg;
        break;
      case 'w':
        opt.password = optarg;
        break;
      case 't':
        opt.timeout_ms = (uint64_t)v;
        break;
      default:
        return usage();
    }
  }
  if (optind != argc || opt.port <= 0 || opt.port > 65535 || opt.logins == 0 ||
      opt.concurrency == 0 || opt.concurrency > 10000 || opt.timeout_ms == 0)
    return usage();
  if (opt.concurrency > opt.logins)
    opt.concurrency = opt.logins;

  struct sockaddr_storage addr;
  int err = strchr(opt.host, ':') != NULL
                ? uv_ip6_addr(opt.host, opt.port, (struct sockaddr_in6*)&addr)
                : uv_ip4_addr(opt.host, opt.port, (struct sockaddr_in*)&addr);
  if (err != 0) {
    fprintf(stderr, "login_client: --host %s: %s (a numeric address)\n",
            opt.host, uv_strerror(err));
    return 2;
  }
  char user[256], password[512], form[800];
  form_encode(user, sizeof(user), opt.user);
  form_encode(password, sizeof(password), opt.password);
  snprintf(form, sizeof(form), "user=%s&password=%s", user, password);
  snprintf(login_req, sizeof(login_req),
           "POST /login HTTP/1.1\r\nHost: x\r\n"
           "Content-Type: application/x-www-form-urlencoded\r\n"
           "Content-Length: %zu\r\n\r\n%s",
           strlen(form), form);

  loop = uv_default_loop();
  conns = calloc(opt.concurrency + 1, sizeof(*conns));
  if (conns == NULL)
    return 1;
  uv_timer_init(loop, &health_timer);
  uv_timer_init(loop, &deadline);
  uv_timer_start(&deadline, on_deadline, opt.timeout_ms, 0);
  t_start = uv_hrtime();
  for (unsigned i = 0; i <= opt.concurrency; i++) {
    conn_t* c = &conns[i];
    c->health = i == opt.concurrency;
    uv_tcp_init(loop, &c->tcp);
    c->tcp.data = c->connect.data = c;
    err = uv_tcp_connect(&c->connect, &c->tcp, (struct sockaddr*)&addr,
                         on_connect);
    if (err != 0)
      fail_conn(c, "connect", err);
  }
  uv_run(loop, UV_RUN_DEFAULT);

  qsort(login_lat.v, login_lat.n, sizeof(uint64_t), cmp_u64);
  qsort(health_lat.v, health_lat.n, sizeof(uint64_t), cmp_u64);
  double secs = (double)(t_end - t_start) / 1e9;
  printf("logins: %u in %.2f s, %.1f logins/s (%u connections)\n", done, secs,
         secs > 0 ? done / secs : 0.0, opt.concurrency);
  printf("login latency: p50 %.1f ms, p99 %.1f ms\n",
         quantile_ms(&login_lat, 0.5), quantile_ms(&login_lat, 0.99));
  printf(
      "/health while hashing: %zu requests, latency p50 %.2f ms, "
      "p99 %.2f ms, max %.2f ms\n",
      health_lat.n, quantile_ms(&health_lat, 0.5),
      quantile_ms(&health_lat, 0.99), quantile_ms(&health_lat, 1.0));
  printf("non-200 responses: %u, failed requests: %u\n", non200, failed);
  if (by_worker[0] != done) {
    printf("logins per worker:");
    for (unsigned i = 0; i <= MAX_WORKERS; i++)
      if (by_worker[i] != 0)
        printf(" %s%u: %u", i == MAX_WORKERS ? ">=" : "", i, by_worker[i]);
    printf("\n");
  }
  uv_loop_close(loop);
  free(conns);
  free(login_lat.v);
  free(health_lat.v);
  return non200 != 0 || failed != 0 || done != opt.logins ? 1 : 0;
}
