/* login_api - the seed's login API as a real HTTP/1.1 server: one event
 * loop answers every request, and the slow part (a password hash, scrypt)
 * runs on a weft pool, so the loop stays free for the requests that need
 * no hash while every core hashes.
 *
 *   login_api [--port P] [--host H] [--workers N] [--threads T]
 *             [--pool-priority idle|nice] [--header-timeout-ms MS]
 *             [--idle-timeout-ms MS] [--max-conns C]
 *
 *   POST /login   body user=...&password=... (a form); 200 and
 *                 {"ok":true,"user":"..."} if the password is right, 401 if
 *                 the user or the password is wrong, 400 if the form is
 *                 malformed. The hash runs on the pool.
 *   GET /health   200 and a small JSON status, answered on the loop.
 *
 * Once it listens it prints one line, "listening on http://HOST:PORT", on
 * stdout (port 0 picks a free port: read it there). SIGTERM or SIGINT
 * stops it gracefully: it stops accepting, closes idle connections,
 * answers the logins that are hashing, and exits 0.
 *
 * The pieces, all on the loop's thread unless said otherwise:
 * - libuv for the network, on the weft loop's own libuv loop
 *   (weft_loop_uv()): one uv_tcp_t per connection.
 * - http-parser (Debian's libhttp-parser-dev) for HTTP/1.1. Not llhttp, its
 *   successor: Debian 12 does not package libllhttp-dev. The parser pauses
 *   at the end of every request (http_parser_pause()), so one request is
 *   answered before the next is parsed: a pipelined request waits in the
 *   connection's input buffer while the login before it hashes, and the
 *   responses go out in order.
 * - a weft pool (weft_pool_submit(), task "scrypt") for libsodium's
 *   crypto_pwhash_scryptsalsa208sha256_ll(); the result comes back as a
 *   callback on this loop.
 * - weft timers (weft_set_timeout()) for the header and idle timeouts.
 * - with --workers N, weft's cluster: a primary process forks N copies of
 *   this program, which all accept on one listening socket
 *   (weft_cluster_listen()); each has its own loop and pool. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* uv.h's POSIX types; getopt_long */
#endif
#include <getopt.h>
#include <http_parser.h>
#include <inttypes.h>
#include <signal.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <weft/weft.h>

/* --- Limits ----------------------------------------------------------------
 * A request's line and headers up to 8 KiB (431 past it), its URL up to
 * 1 KiB (414), its body up to 4 KiB (413: a Content-Length is checked
 * before the body is read, a chunked body as it arrives). */
#define MAX_HEADER_BYTES 8192
#define MAX_URL          1024
#define MAX_BODY         4096
/* Bytes read ahead of the parser (pipelined requests waiting behind a
 * login that hashes); past it the connection stops reading until the
 * parser catches up. Also the most of responses queued for writing to a
 * client that does not read, before parsing waits for it. */
#define MAX_PENDING_BYTES (64 * 1024)
/* After its last response a closing connection reads (and drops) what the
 * client still sends for at most this long, so that closing a socket with
 * unread bytes does not reset the connection before the client read the
 * response (a "lingering close"). */
#define LINGER_MS 1000

/* scrypt's cost: N = 2^14, r = 8, p = 1 (16 MiB and ~50 ms per hash). */
#define SCRYPT_N   16384
#define SCRYPT_R   8
#define SCRYPT_P   1
#define HASH_BYTES 32
#define SALT_BYTES 16

/* --- Options ------------------------------------------------------------ */

typedef struct {
  const char* host;
  int port;
  unsigned workers; /* 0: one process; N: a primary and N children. */
  unsigned threads; /* Pool threads per process; 0: CPUs / processes. */
  bool pool_nice;   /* Pool at nice +10 instead of SCHED_IDLE. */
  uint64_t header_timeout_ms;
  uint64_t idle_timeout_ms;
  unsigned max_conns;
} options_t;

/* --- The user table --------------------------------------------------------
 * The demo users. Their salts and hashes are made at start-up, on the
 * pool. A login for a name that is not here is checked against `nobody`
 * (a random password), so that an unknown user costs a hash as a known one
 * does: the response time does not tell which names exist. */
typedef struct {
  const char* name;
  const char* password; /* Only to compute the hash at start-up. */
  uint8_t salt[SALT_BYTES];
  uint8_t hash[HASH_BYTES];
} user_t;

static user_t users[] = {
    {"alice", "wonderland", {0}, {0}},
    {"bob", "builder", {0}, {0}},
    {"carol", "correct horse battery staple", {0}, {0}},
};
#define NUSERS (sizeof(users) / sizeof(users[0]))
static user_t nobody;

/* --- The server and its connections ------------------------------------- */

typedef enum { TIMER_NONE, TIMER_HEADER, TIMER_IDLE } timer_kind_t;

typedef struct conn_s conn_t;

typedef struct {
  options_t opt;
  weft_loop_t* loop;
  weft_pool_t* pool;
  uv_tcp_t listener;
  uv_signal_t sigterm, sigint;
  weft_cluster_worker_t* self; /* In a cluster child: its link. */
  unsigned worker_id;          /* 0 outside a cluster. */
  bool stopping;               /* SIGTERM, SIGINT or a disconnect seen. */
  uint64_t started_ms;
  conn_t* conns; /* Every open connection, for the shutdown. */
  unsigned nconns;
  unsigned hashing;       /* Logins on the pool now. */
  uint64_t logins;        /* Logins answered (200 or 401). */
  unsigned users_pending; /* Start-up hashes still on the pool. */
  unsigned threads;       /* Pool threads. */
  int exit_code;
} server_t;

struct conn_s {
  uv_tcp_t tcp;
  server_t* srv;
  conn_t *prev, *next;
  /* The connection is freed once its handle closed and no login of it is
   * on the pool: a pool callback can find it closed, never freed. */
  int refs;
  bool closing;           /* uv_close() called. */
  bool lingering;         /* Responses written, FIN sent, draining input. */
  bool close_after_write; /* No more requests: close after the responses. */
  bool reading;
  bool peer_eof; /* The client closed its side. */
  http_parser parser;
  /* Bytes read and not yet parsed: [in_off, in_len) of `in`. */
  char* in;
  size_t in_off, in_len, in_cap;
  unsigned writes; /* Responses queued and not yet written. */
  weft_timer_id timer;
  timer_kind_t timer_kind;
  /* The request being parsed. */
  char url[MAX_URL + 1];
  size_t url_len;
  size_t header_bytes;
  char body[MAX_BODY + 1];
  size_t body_len;
  int reject;   /* A status to answer instead (413, 414, 431), or 0. */
  bool hashing; /* A login of this connection is on the pool. */
};

/* A response on its way to the socket. */
typedef struct {
  uv_write_t req;
  conn_t* conn;
  char data[];
} response_t;

/* A login on the pool: which connection waits for it, whose hash to
 * compare with. */
typedef struct {
  conn_t* conn;
  const user_t* user; /* &nobody for an unknown name. */
} login_t;

static server_t server;

static void process(conn_t* c);
static void close_conn(conn_t* c);
static void start_reading(conn_t* c);
static void stop_reading(conn_t* c);

static double uptime_ms(const server_t* srv) {
  return (double)(uv_now(weft_loop_uv(srv->loop)) - srv->started_ms);
}

/* --- The task: scrypt on a pool thread -------------------------------------
 * Argument [password, salt] (two bins), result the 32-byte hash (a bin).
 * It runs on a pool worker's thread: it touches nothing but its message. */
static int scrypt_task(weft_task_ctx_t* ctx,
                       weft_msg_t* arg,
                       weft_msg_t* result) {
  const void *pw, *salt;
  size_t pw_len, salt_len;
  uint8_t hash[HASH_BYTES];
  (void)ctx;
  int err = weft_msg_read(arg, "yy", &pw, &pw_len, &salt, &salt_len);
  if (err != 0)
    return err;
  if (salt_len != SALT_BYTES)
    return WEFT_EINVAL;
  /* -1 only if its 16 MiB cannot be allocated. */
  if (crypto_pwhash_scryptsalsa208sha256_ll(pw, pw_len, salt, salt_len,
                                            SCRYPT_N, SCRYPT_R, SCRYPT_P, hash,
                                            sizeof(hash)) != 0)
    return WEFT_ENOMEM;
  return weft_msg_pack(result, "y", hash, sizeof(hash));
}

/* Submit one hash of `pw` with `salt`; `done` gets the outcome on the loop. */
static int submit_hash(server_t* srv,
                       const char* pw,
                       size_t pw_len,
                       const uint8_t* salt,
                       weft_task_done_cb done,
                       void* ctx) {
  weft_msg_t* m = NULL;
  int err = weft_msg_new(&m);
  if (err == 0)
    err = weft_msg_pack(m, "yy", pw, pw_len, salt, (size_t)SALT_BYTES);
  if (err == 0)
    err = weft_pool_submit_msg(srv->pool, "scrypt", &m, done, ctx, NULL);
  weft_msg_free(m); /* NULL once the pool took it. */
  return err;
}

/* The hash a task returned, or NULL. */
static const uint8_t* hash_of(weft_msg_t* result) {
  const void* h = NULL;
  size_t len = 0;
  if (result == NULL || weft_msg_read(result, "y", &h, &len) != 0 ||
      len != HASH_BYTES)
    return NULL;
  return h;
}

/* --- Responses ---------------------------------------------------------- */

static const char* reason(int status) {
  static const struct {
    int status;
    const char* text;
  } reasons[] = {
      {200, "OK"},
      {400, "Bad Request"},
      {401, "Unauthorized"},
      {404, "Not Found"},
      {405, "Method Not Allowed"},
      {408, "Request Timeout"},
      {413, "Content Too Large"},
      {414, "URI Too Long"},
      {431, "Request Header Fields Too Large"},
      {503, "Service Unavailable"},
  };
  for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
    if (reasons[i].status == status)
      return reasons[i].text;
  return "Internal Server Error";
}

static void free_conn_ref(conn_t* c) {
  if (--c->refs == 0) {
    free(c->in);
    free(c);
  }
}

static void on_closed(uv_handle_t* h) {
  free_conn_ref(h->data);
}

/* Close now (what is not written yet is dropped). */
static void close_conn(conn_t* c) {
  server_t* srv = c->srv;
  if (c->closing)
    return;
  c->closing = true;
  weft_clear_timer(srv->loop, c->timer);
  c->timer_kind = TIMER_NONE;
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    srv->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  srv->nconns--;
  uv_close((uv_handle_t*)&c->tcp, on_closed);
}

/* Timers: at most one per connection, a weft timer (weft_set_timeout()
 * returns an id; clearing an id that fired is harmless). */
static void on_timer(weft_loop_t* loop, void* arg);

static void set_timer(conn_t* c, timer_kind_t kind, uint64_t ms) {
  weft_clear_timer(c->srv->loop, c->timer);
  c->timer = 0;
  c->timer_kind = kind;
  if (kind != TIMER_NONE &&
      weft_set_timeout(c->srv->loop, ms, on_timer, c, &c->timer) != 0)
    close_conn(c); /* Out of memory: better no connection than no timer. */
}

static void on_shutdown(uv_shutdown_t* req, int status) {
  conn_t* c = req->data;
  free(req);
  if (status != 0)
    close_conn(c);
}

/* Every response is written and none is to come: close. If the client may
 * still send (it has not closed its side), send FIN first and read on,
 * dropping what comes, until it closes too or LINGER_MS passed: closing a
 * socket with unread bytes resets the connection, and a reset can reach
 * the client before it read the last response. */
static void linger(conn_t* c) {
  uv_shutdown_t* req;
  if (c->lingering || c->closing)
    return;
  c->lingering = true;
  req = c->peer_eof ? NULL : malloc(sizeof(*req));
  if (req == NULL) {
    close_conn(c);
    return;
  }
  req->data = c;
  if (uv_shutdown(req, (uv_stream_t*)&c->tcp, on_shutdown) != 0) {
    free(req);
    close_conn(c);
    return;
  }
  set_timer(c, TIMER_IDLE, LINGER_MS);
  start_reading(c);
}

static void on_written(uv_write_t* req, int status) {
  response_t* r = (response_t*)req;
  conn_t* c = r->conn;
  free(r);
  c->writes--;
  if (c->closing)
    return;
  if (status != 0)
    close_conn(c);
  else if (c->close_after_write && c->writes == 0 && !c->hashing)
    linger(c);
  else
    process(c); /* Parsing may have waited for the write queue to shrink. */
}

/* Queue one response: status line, headers, a JSON body. A response that
 * ends the connection says "Connection: close" and sets close_after_write.
 * `allow` (or NULL) is the Allow header of a 405. */
static void respond(conn_t* c,
                    int status,
                    bool keep_alive,
                    const char* allow,
                    const char* fmt,
                    ...) {
  char body[512];
  va_list ap;
  va_start(ap, fmt);
  int blen = vsnprintf(body, sizeof(body), fmt, ap);
  va_end(ap);
  if (blen < 0 || (size_t)blen >= sizeof(body))
    blen = 0;
  response_t* r = malloc(sizeof(*r) + 256 + sizeof(body));
  if (r == NULL) {
    close_conn(c);
    return;
  }
  int len = snprintf(r->data, 256 + sizeof(body),
                     "HTTP/1.1 %d %s\r\n"
                     "Content-Type: application/json\r\n"
                     "Content-Length: %d\r\n"
                     "X-Worker: %u\r\n"
                     "%s%s%s"
                     "%s"
                     "\r\n%.*s",
                     status, reason(status), blen, c->srv->worker_id,
                     allow != NULL ? "Allow: " : "", allow != NULL ? allow : "",
                     allow != NULL ? "\r\n" : "",
                     keep_alive ? "" : "Connection: close\r\n", blen, body);
  uv_buf_t buf = uv_buf_init(r->data, (unsigned)len);
  r->conn = c;
  if (!keep_alive)
    c->close_after_write = true;
  if (uv_write(&r->req, (uv_stream_t*)&c->tcp, &buf, 1, on_written) != 0) {
    free(r);
    close_conn(c);
    return;
  }
  c->writes++;
}

static void on_timer(weft_loop_t* loop, void* arg) {
  conn_t* c = arg;
  (void)loop;
  c->timer = 0;
  if (c->timer_kind == TIMER_HEADER && !c->close_after_write) {
    /* The request did not arrive in time: say so, and close. */
    respond(c, 408, false, NULL, "{\"error\":\"request timeout\"}");
    set_timer(c, TIMER_IDLE, LINGER_MS); /* In case it never reads it. */
  } else {
    close_conn(c); /* Idle, or done lingering. */
  }
}

/* --- Logins ------------------------------------------------------------- */

static int hex_digit(char ch) {
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F')
    return ch - 'A' + 10;
  return -1;
}

/* Decode one application/x-www-form-urlencoded value in place: %XX and
 * '+' for a space. Returns its new length, or -1 if an escape is bad or
 * it holds a NUL. */
static long form_decode(char* s, size_t len) {
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    char ch = s[i];
    if (ch == '+') {
      ch = ' ';
    } else if (ch == '%') {
      int hi = i + 2 < len ? hex_digit(s[i + 1]) : -1;
      int lo = i + 2 < len ? hex_digit(s[i + 2]) : -1;
      if (hi < 0 || lo < 0)
        return -1;
      ch = (char)(hi * 16 + lo);
      i += 2;
    }
    if (ch == '\0')
      return -1;
    s[o++] = ch;
  }
  return (long)o;
}

/* Split a form body into its `user` and `password` fields (decoded in
 * place, NUL-terminated). Returns false if the form is malformed: a pair
 * without '=', a bad escape, a field missing or given twice. Other fields
 * are ignored. */
static bool parse_form(char* body,
                       size_t len,
                       char** user,
                       char** password,
                       size_t* password_len) {
  *user = *password = NULL;
  body[len] = '\0';
  for (char* p = body; p < body + len;) {
    char* end = memchr(p, '&', (size_t)(body + len - p));
    if (end == NULL)
      end = body + len;
    *end = '\0';
    char* eq = memchr(p, '=', (size_t)(end - p));
    if (eq == NULL)
      return false;
    long klen = form_decode(p, (size_t)(eq - p));
    long vlen = form_decode(eq + 1, (size_t)(end - eq - 1));
    if (klen < 0 || vlen < 0)
      return false;
    p[klen] = '\0';
    eq[1 + vlen] = '\0';
    char** field = strcmp(p, "user") == 0       ? user
                   : strcmp(p, "password") == 0 ? password
                                                : NULL;
    if (field != NULL) {
      if (*field != NULL)
        return false;
      *field = eq + 1;
      if (field == password)
        *password_len = (size_t)vlen;
    }
    p = end + 1;
  }
  return *user != NULL && *password != NULL;
}

/* The pool's answer for one login, on the loop. */
static void on_login_hashed(void* ctx, int status, weft_msg_t* result) {
  login_t* login = ctx;
  conn_t* c = login->conn;
  server_t* srv = c->srv;
  const uint8_t* hash = hash_of(result);
  srv->hashing--;
  c->hashing = false;
  if (!c->closing) {
    if (status != 0 || hash == NULL) {
      fprintf(stderr, "login_api: scrypt: %s\n", weft_err_name(status));
      respond(c, 500, false, NULL, "{\"error\":\"internal error\"}");
    } else if (login->user != &nobody &&
               sodium_memcmp(hash, login->user->hash, HASH_BYTES) == 0) {
      srv->logins++;
      respond(c, 200, !c->close_after_write, NULL,
              "{\"ok\":true,\"user\":\"%s\"}", login->user->name);
    } else {
      srv->logins++;
      respond(c, 401, !c->close_after_write, NULL,
              "{\"error\":\"wrong user or password\"}");
    }
    process(c); /* The requests that waited behind this one. */
  }
  free_conn_ref(c); /* The reference the login held. */
  free(login);
}

static void login(conn_t* c, bool keep_alive) {
  server_t* srv = c->srv;
  char *name, *password;
  size_t password_len = 0;
  if (!parse_form(c->body, c->body_len, &name, &password, &password_len)) {
    respond(c, 400, keep_alive, NULL,
            "{\"error\":\"expected a form user=...&password=...\"}");
    return;
  }
  const user_t* user = &nobody;
  for (size_t i = 0; i < NUSERS; i++)
    if (strcmp(users[i].name, name) == 0)
      user = &users[i];
  login_t* l = malloc(sizeof(*l));
  if (l == NULL) {
    respond(c, 503, false, NULL, "{\"error\":\"out of memory\"}");
    return;
  }
  l->conn = c;
  l->user = user;
  int err =
      submit_hash(srv, password, password_len, user->salt, on_login_hashed, l);
  if (err != 0) {
    /* WEFT_EQUEUEFULL: more logins wait than the pool queues. */
    free(l);
    respond(c, 503, keep_alive, NULL, "{\"error\":\"%s\"}", weft_err_name(err));
    return;
  }
  srv->hashing++;
  c->hashing = true;
  c->refs++; /* The login's: the connection outlives its callback. */
  if (!keep_alive)
    c->close_after_write = true; /* on_login_hashed says Connection: close. */
}

/* --- Routing ------------------------------------------------------------ */

/* A complete request: answer it (or start its login). */
static void route(conn_t* c) {
  server_t* srv = c->srv;
  http_parser* p = &c->parser;
  bool keep_alive = http_should_keep_alive(p) && !srv->stopping;
  size_t path_len = strcspn(c->url, "?");
  bool is_login = path_len == 6 && memcmp(c->url, "/login", 6) == 0;
  bool is_health = path_len == 7 && memcmp(c->url, "/health", 7) == 0;
  if (is_login && p->method == HTTP_POST) {
    login(c, keep_alive);
  } else if (is_health && p->method == HTTP_GET) {
    respond(c, 200, keep_alive, NULL,
            "{\"status\":\"ok\",\"worker\":%u,\"pid\":%d,\"uptime_ms\":%.0f,"
            "\"connections\":%u,\"hashing\":%u,\"logins\":%" PRIu64 "}",
            srv->worker_id, (int)getpid(), uptime_ms(srv), srv->nconns,
            srv->hashing, srv->logins);
  } else if (is_login || is_health) {
    respond(c, 405, keep_alive, is_login ? "POST" : "GET",
            "{\"error\":\"method not allowed\"}");
  } else {
    respond(c, 404, keep_alive, NULL, "{\"error\":\"not found\"}");
  }
}

/* --- http-parser's callbacks -----------------------------------------------
 * They run inside http_parser_execute(), on the loop. A callback that
 * returns non-zero stops the parser with an error; `reject` says which
 * status to answer then. */

static int on_message_begin(http_parser* p) {
  conn_t* c = p->data;
  c->url_len = c->header_bytes = c->body_len = 0;
  c->reject = 0;
  /* The request must arrive (headers and body) within the header timeout. */
  if (c->timer_kind != TIMER_HEADER)
    set_timer(c, TIMER_HEADER, c->srv->opt.header_timeout_ms);
  return 0;
}

static int count_header_bytes(conn_t* c, size_t len) {
  c->header_bytes += len;
  if (c->header_bytes > MAX_HEADER_BYTES) {
    c->reject = 431;
    return -1;
  }
  return 0;
}

static int on_url(http_parser* p, const char* at, size_t len) {
  conn_t* c = p->data;
  if (c->url_len + len > MAX_URL) {
    c->reject = 414;
    return -1;
  }
  memcpy(c->url + c->url_len, at, len);
  c->url_len += len;
  c->url[c->url_len] = '\0';
  return count_header_bytes(c, len);
}

static int on_header_data(http_parser* p, const char* at, size_t len) {
  (void)at;
  return count_header_bytes(p->data, len);
}

static int on_headers_complete(http_parser* p) {
  conn_t* c = p->data;
  /* A declared body too large is refused before it is read. */
  if ((p->flags & F_CONTENTLENGTH) && p->content_length > MAX_BODY) {
    c->reject = 413;
    return -1;
  }
  return 0;
}

static int on_body(http_parser* p, const char* at, size_t len) {
  conn_t* c = p->data;
  /* Chunked bodies have no declared length: count them as they come. */
  if (c->body_len + len > MAX_BODY) {
    c->reject = 413;
    return -1;
  }
  memcpy(c->body + c->body_len, at, len);
  c->body_len += len;
  return 0;
}

static int on_message_complete(http_parser* p) {
  conn_t* c = p->data;
  set_timer(c, TIMER_NONE, 0);
  route(c);
  /* One request at a time: make http_parser_execute() return here. */
  http_parser_pause(p, 1);
  return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_data,
    .on_header_value = on_header_data,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* --- Reading and parsing ------------------------------------------------ */

/* Parse and answer what was read, one request at a time, until the input
 * is used up, a login hashes (its response must go first), the connection
 * is to close, or the client does not read its responses. */
static void process(conn_t* c) {
  while (!c->closing && !c->hashing && !c->close_after_write &&
         c->in_off < c->in_len &&
         uv_stream_get_write_queue_size((uv_stream_t*)&c->tcp) <
             MAX_PENDING_BYTES) {
    size_t n = http_parser_execute(&c->parser, &parser_settings,
                                   c->in + c->in_off, c->in_len - c->in_off);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    c->in_off += n;
    if (e == HPE_PAUSED) {
      http_parser_pause(&c->parser, 0); /* A request ended; go on. */
    } else if (e == HPE_HEADER_OVERFLOW) {
      respond(c, 431, false, NULL, "{\"error\":\"%s\"}", reason(431));
    } else if (e != HPE_OK) {
      /* c->reject is 413, 414 or 431 if a callback of ours refused. */
      int status = c->reject != 0 ? c->reject : 400;
      respond(c, status, false, NULL, "{\"error\":\"%s\"}",
              c->reject != 0 ? reason(status) : http_errno_name(e));
    } else if (c->parser.upgrade) {
      c->close_after_write = true; /* No protocol upgrades here. */
    }
  }
  if (c->closing)
    return;
  /* Keep what is left, at the start of the buffer. */
  memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
  c->in_len -= c->in_off;
  c->in_off = 0;
  /* Between two requests (or waiting for a client to read its last
   * responses), a connection lives idle_timeout_ms. */
  if (!c->hashing && c->timer_kind == TIMER_NONE)
    set_timer(c, TIMER_IDLE, c->srv->opt.idle_timeout_ms);
  /* Stop reading while enough input waits (it is parsed as responses go
   * out); a closing connection reads on, to see the client close. */
  if (c->in_len >= MAX_PENDING_BYTES && !c->close_after_write)
    stop_reading(c);
  else if (!c->peer_eof)
    start_reading(c);
}

/* Reads go straight into the connection's input buffer. */
static void alloc_cb(uv_handle_t* h, size_t size, uv_buf_t* buf) {
  conn_t* c = h->data;
  (void)size;
  if (c->in_cap - c->in_len < 4096) {
    size_t cap = c->in_cap * 2 + 16384;
    char* in = realloc(c->in, cap);
    if (in == NULL) {
      *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS. */
      return;
    }
    c->in = in;
    c->in_cap = cap;
  }
  *buf = uv_buf_init(c->in + c->in_len, (unsigned)(c->in_cap - c->in_len));
}

static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  conn_t* c = s->data;
  (void)buf;
  if (n == UV_EOF && (c->hashing || c->writes > 0)) {
    /* The client closed its side with responses still to come: write
     * them if it still reads (a shut-down sender), then close. */
    c->peer_eof = true;
    c->close_after_write = true;
    stop_reading(c);
    return;
  }
  if (n < 0) {
    close_conn(c); /* Closed, reset, or out of memory (UV_ENOBUFS). */
    return;
  }
  c->in_len += (size_t)n;
  if (c->close_after_write) {
    c->in_len = c->in_off = 0; /* Nothing more will be parsed: drop it. */
    return;
  }
  process(c);
  /* weft_loop_drain() would run next-ticks and microtasks queued here; this
   * sample queues none (weft timers are macrotasks of their own). */
}

static void start_reading(conn_t* c) {
  if (!c->reading && !c->closing &&
      uv_read_start((uv_stream_t*)&c->tcp, alloc_cb, on_read) == 0)
    c->reading = true;
}

static void stop_reading(conn_t* c) {
  if (c->reading)
    uv_read_stop((uv_stream_t*)&c->tcp);
  c->reading = false;
}

/* --- Accepting ---------------------------------------------------------- */

static void on_connection(uv_stream_t* listener, int status) {
  server_t* srv = listener->data;
  conn_t* c;
  if (status != 0 || (c = calloc(1, sizeof(*c))) == NULL) {
    fprintf(stderr, "login_api: accept: %s\n",
            weft_err_name(status != 0 ? status : WEFT_ENOMEM));
    return;
  }
  c->srv = srv;
  c->refs = 1; /* The handle's, until on_closed(). */
  uv_tcp_init(weft_loop_uv(srv->loop), &c->tcp);
  c->tcp.data = c;
  /* Not uv_accept(): in a cluster child (round robin, the default) the
   * connection comes from the primary over the IPC pipe. */
  if (weft_cluster_accept((uv_tcp_t*)listener, &c->tcp) != 0) {
    uv_close((uv_handle_t*)&c->tcp, on_closed);
    return;
  }
  c->next = srv->conns;
  if (c->next != NULL)
    c->next->prev = c;
  srv->conns = c;
  srv->nconns++;
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  uv_tcp_nodelay(&c->tcp, 1); /* Small responses: no Nagle delay. */
  start_reading(c);
  if (srv->nconns > srv->opt.max_conns) {
    respond(c, 503, false, NULL, "{\"error\":\"too many connections\"}");
    return;
  }
  /* The first request must arrive within the header timeout. */
  set_timer(c, TIMER_HEADER, srv->opt.header_timeout_ms);
}

/* --- Start and stop ----------------------------------------------------- */

/* Stop gracefully: no new connections; idle ones close now, those with a
 * login hashing or responses unwritten close after them. The loop then
 * runs out of work and main() returns. */
static void stop_server(server_t* srv, const char* why) {
  if (srv->stopping)
    return;
  srv->stopping = true;
  fprintf(stderr,
          "login_api[%d]: %s: stopping (%u connections, %u logins "
          "hashing)\n",
          (int)getpid(), why, srv->nconns, srv->hashing);
  uv_close((uv_handle_t*)&srv->listener, NULL);
  uv_close((uv_handle_t*)&srv->sigterm, NULL);
  uv_close((uv_handle_t*)&srv->sigint, NULL);
  for (conn_t *c = srv->conns, *next; c != NULL; c = next) {
    next = c->next;
    if (c->hashing || c->writes > 0)
      c->close_after_write = true;
    else
      close_conn(c);
  }
  /* A cluster child also leaves the cluster: the IPC pipe is the last
   * handle that keeps its loop alive. */
  if (srv->self != NULL && weft_cluster_worker_connected(srv->self))
    weft_cluster_worker_disconnect(srv->self);
}

static void on_signal(uv_signal_t* h, int signum) {
  stop_server(h->data, signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

/* The primary went away or closed the cluster. */
static void on_disconnect(weft_cluster_worker_t* self) {
  server_t* srv = weft_cluster_worker_get_data(self);
  srv->self = NULL; /* Freed when this event returns. */
  stop_server(srv, "disconnected");
}

static void print_url(FILE* f, const char* host, int port) {
  bool v6 = strchr(host, ':') != NULL;
  fprintf(f, "listening on http://%s%s%s:%d\n", v6 ? "[" : "", host,
          v6 ? "]" : "", port);
  fflush(f);
}

static void on_listening(uv_tcp_t* listener, int status, void* ctx) {
  server_t* srv = ctx;
  struct sockaddr_storage addr;
  int len = sizeof(addr);
  if (srv->stopping)
    return; /* A signal came first: the listener is closed already. */
  if (status != 0) {
    fprintf(stderr, "login_api: listen on %s:%d: %s\n", srv->opt.host,
            srv->opt.port, weft_err_name(status));
    srv->exit_code = 1;
    stop_server(srv, "cannot listen");
    return;
  }
  uv_tcp_getsockname(listener, (struct sockaddr*)&addr, &len);
  int port = ntohs(addr.ss_family == AF_INET6
                       ? ((struct sockaddr_in6*)&addr)->sin6_port
                       : ((struct sockaddr_in*)&addr)->sin_port);
  fprintf(stderr,
          "login_api[%d]: worker %u: %u pool threads, %zu users "
          "hashed in %.0f ms, port %d\n",
          (int)getpid(), srv->worker_id, srv->threads, NUSERS, uptime_ms(srv),
          port);
  /* In a cluster the primary says it, once every child listens. */
  if (weft_cluster_is_primary())
    print_url(stdout, srv->opt.host, port);
}

/* One demo user's hash is ready. Once all are, open the server: on the
 * shared socket in a cluster child (the primary binds it), on a socket of
 * its own otherwise. */
static void on_user_hashed(void* ctx, int status, weft_msg_t* result) {
  server_t* srv = &server;
  user_t* user = ctx;
  const uint8_t* hash = hash_of(result);
  if (hash == NULL) {
    fprintf(stderr, "login_api: hashing %s: %s\n", user->name,
            weft_err_name(status != 0 ? status : WEFT_EDECODE));
    srv->exit_code = 1;
    stop_server(srv, "start-up failed");
  } else {
    memcpy(user->hash, hash, HASH_BYTES);
  }
  if (--srv->users_pending > 0 || srv->stopping)
    return;
  int err =
      weft_cluster_listen(srv->loop, &srv->listener, srv->opt.host,
                          srv->opt.port, 0, on_connection, on_listening, srv);
  if (err != 0)
    on_listening(&srv->listener, err, srv);
}

static int fail(const char* what, int err) {
  fprintf(stderr, "login_api: %s: %s\n", what, weft_err_name(err));
  return 1;
}

/* One server process: on its own, or as a cluster child. */
static int run_server(const options_t* opt) {
  server_t* srv = &server;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  weft_pool_opts_t pool_opts = {0};
  int err;

  srv->opt = *opt;
  err = weft_loop_new(&srv->loop);
  if (err != 0)
    return fail("weft_loop_new", err);
  uv_loop_t* uv = weft_loop_uv(srv->loop);
  srv->started_ms = uv_now(uv);
  if (!weft_cluster_is_primary()) {
    weft_cluster_events_t events = {.disconnect = on_disconnect};
    err = weft_cluster_join(srv->loop, &events, srv, &srv->self);
    if (err != 0)
      return fail("weft_cluster_join", err);
    srv->worker_id = weft_cluster_worker_id(srv->self);
  }

  /* The pool: all its threads started now. Its threads run at a lower
   * priority than the loop, so that when every core hashes the loop still
   * gets a core at once for /health and for reading requests. SCHED_IDLE
   * by default: a waking loop takes the core from a hash at once. At nice
   * +10 (--pool-priority nice) the kernel may first let the hash finish
   * its time slice, up to a 4 ms tick on an HZ=250 kernel; but the hashes
   * keep about a tenth of the CPU when other programs fill the cores,
   * where SCHED_IDLE ones would nearly stop (bench/README.md). */
  srv->threads = opt->threads;
  if (srv->threads == 0) {
    long per = (cpus > 0 ? cpus : 1) / (opt->workers > 0 ? opt->workers : 1);
    srv->threads = per > 0 ? (unsigned)per : 1;
  }
  pool_opts.name = "scrypt";
  pool_opts.min_threads = pool_opts.max_threads = srv->threads;
  pool_opts.nice_increment = 10;
  pool_opts.sched_idle = !opt->pool_nice;
  err = weft_pool_new(&srv->pool, &pool_opts);
  if (err == 0)
    err = weft_pool_register(srv->pool, "scrypt", scrypt_task, NULL);
  if (err != 0)
    return fail("weft_pool_new", err);

  uv_signal_init(uv, &srv->sigterm);
  uv_signal_init(uv, &srv->sigint);
  srv->sigterm.data = srv->sigint.data = srv;
  uv_signal_start(&srv->sigterm, on_signal, SIGTERM);
  uv_signal_start(&srv->sigint, on_signal, SIGINT);
  uv_tcp_init(uv, &srv->listener);
  srv->listener.data = srv;

  /* The user table, hashed on the pool; `nobody` gets a random password. */
  uint8_t secret[16];
  randombytes_buf(secret, sizeof(secret));
  randombytes_buf(nobody.salt, SALT_BYTES);
  nobody.name = "";
  srv->users_pending = NUSERS + 1;
  for (size_t i = 0; i <= NUSERS && err == 0; i++) {
    user_t* u = i < NUSERS ? &users[i] : &nobody;
    const char* pw = i < NUSERS ? u->password : (const char*)secret;
    size_t pw_len = i < NUSERS ? strlen(pw) : sizeof(secret);
    if (i < NUSERS)
      randombytes_buf(u->salt, SALT_BYTES);
    err = submit_hash(srv, pw, pw_len, u->salt, on_user_hashed, u);
  }
  if (err != 0)
    return fail("weft_pool_submit", err);

  err = weft_loop_run(srv->loop);
  if (err != 0)
    return fail("weft_loop_run", err);
  err = weft_pool_close(srv->pool);
  if (err == 0)
    err = weft_loop_free(srv->loop);
  if (err != 0)
    return fail("close", err);
  fprintf(stderr, "login_api[%d]: stopped after %" PRIu64 " logins\n",
          (int)getpid(), srv->logins);
  return srv->exit_code;
}

/* --- The cluster's primary -------------------------------------------------
 * With --workers N the first process only forks N children (copies of this
 * program, with the same arguments) and restarts those that die; they do
 * the serving. It says "listening on" once all N listen on the shared
 * socket, and on SIGTERM/SIGINT closes the cluster: each child gets a
 * disconnect, stops as on a SIGTERM of its own, and exits 0. */
typedef struct {
  options_t opt;
  weft_loop_t* loop;
  weft_cluster_t* cluster;
  uv_signal_t sigterm, sigint;
  unsigned listening;
  bool announced;
  bool stopping;
  int exit_code; /* 1 if a child did not stop cleanly when asked to. */
} primary_t;

static primary_t primary;

static void on_child_listening(weft_cluster_worker_t* w,
                               const char* host,
                               int port) {
  primary_t* pr = &primary;
  (void)w;
  (void)host;
  if (!pr->announced && ++pr->listening == pr->opt.workers) {
    pr->announced = true;
    print_url(stdout, pr->opt.host, port);
  }
}

/* A child ended. One that the cluster did not stop is restarted
 * (opts.restart); say why it ended. */
static void on_child_exit(weft_cluster_worker_t* w, int code, int signal) {
  if (code == 0 && signal == 0)
    return;
  fprintf(stderr, "login_api: worker %u ended (code %d, signal %d)\n",
          weft_cluster_worker_id(w), code, signal);
  if (primary.stopping)
    primary.exit_code = 1;
}

/* Children that keep dying (WEFT_ERESTARTS: e.g. the port is taken, so
 * none can listen) end the whole cluster with exit code 1. */
static void on_cluster_error(weft_cluster_t* c,
                             weft_cluster_worker_t* w,
                             int err) {
  fprintf(stderr, "login_api: cluster: worker %u: %s\n",
          w != NULL ? weft_cluster_worker_id(w) : 0, weft_err_name(err));
  if (err == WEFT_ERESTARTS && !primary.stopping) {
    primary.stopping = true;
    primary.exit_code = 1;
    uv_close((uv_handle_t*)&primary.sigterm, NULL);
    uv_close((uv_handle_t*)&primary.sigint, NULL);
    weft_cluster_close(c, 1000, NULL);
  }
}

static void on_primary_signal(uv_signal_t* h, int signum) {
  primary_t* pr = h->data;
  fprintf(stderr, "login_api[%d]: %s: stopping %u workers\n", (int)getpid(),
          signum == SIGTERM ? "SIGTERM" : "SIGINT",
          weft_cluster_size(pr->cluster));
  uv_close((uv_handle_t*)&pr->sigterm, NULL);
  uv_close((uv_handle_t*)&pr->sigint, NULL);
  pr->stopping = true;
  /* Children get 30 s to finish their requests, then SIGKILL. */
  weft_cluster_close(pr->cluster, 30000, NULL);
}

static int run_primary(const options_t* opt) {
  primary_t* pr = &primary;
  weft_cluster_opts_t copts = {0};
  int err;

  pr->opt = *opt;
  err = weft_loop_new(&pr->loop);
  if (err != 0)
    return fail("weft_loop_new", err);
  copts.restart = true;
  copts.events.listening = on_child_listening;
  copts.events.exit = on_child_exit;
  copts.events.error = on_cluster_error;
  err = weft_cluster_new(&pr->cluster, pr->loop, &copts);
  if (err != 0)
    return fail("weft_cluster_new", err);
  for (unsigned i = 0; i < opt->workers && err == 0; i++)
    err = weft_cluster_fork(pr->cluster, NULL);
  if (err != 0) {
    weft_cluster_close(pr->cluster, 1000, NULL);
    weft_loop_run(pr->loop);
    weft_loop_free(pr->loop);
    return fail("weft_cluster_fork", err);
  }
  uv_loop_t* uv = weft_loop_uv(pr->loop);
  uv_signal_init(uv, &pr->sigterm);
  uv_signal_init(uv, &pr->sigint);
  pr->sigterm.data = pr->sigint.data = pr;
  uv_signal_start(&pr->sigterm, on_primary_signal, SIGTERM);
  uv_signal_start(&pr->sigint, on_primary_signal, SIGINT);

  err = weft_loop_run(pr->loop);
  if (err == 0)
    err = weft_loop_free(pr->loop);
  if (err != 0)
    return fail("primary loop", err);
  fprintf(stderr, "login_api[%d]: stopped\n", (int)getpid());
  return pr->exit_code;
}

/* --- The command line --------------------------------------------------- */

static int usage(void) {
  fprintf(stderr,
          "usage: login_api [--port P] [--host H] [--workers N] "
          "[--threads T]\n"
          "                 [--pool-priority idle|nice] "
          "[--header-timeout-ms MS]\n"
          "                 [--idle-timeout-ms MS] [--max-conns C]\n");
  return 2;
}

/* A whole decimal number in [min, max], or false. */
static bool number(const char* s, uint64_t min, uint64_t max, uint64_t* out) {
  char* end;
  if (s[0] < '0' || s[0] > '9')
    return false;
  unsigned long long v = strtoull(s, &end, 10);
  if (*end != '\0' || v < min || v > max)
    return false;
  *out = v;
  return true;
}

int main(int argc, char** argv) {
  options_t opt = {.host = "127.0.0.1",
                   .port = 8080,
                   .header_timeout_ms = 10000,
                   .idle_timeout_ms = 5000,
                   .max_conns = 1024};
  static const struct option longs[] = {
      {"port", required_argument, NULL, 'p'},
      {"host", required_argument, NULL, 'H'},
      {"workers", required_argument, NULL, 'w'},
      {"threads", required_argument, NULL, 't'},
      {"pool-priority", required_argument, NULL, 'P'},
      {"header-timeout-ms", required_argument, NULL, 'h'},
      {"idle-timeout-ms", required_argument, NULL, 'i'},
      {"max-conns", required_argument, NULL, 'm'},
      {NULL, 0, NULL, 0}};
  int ch;
  uint64_t v;
  while ((ch = getopt_long(argc, argv, "", longs, NULL)) != -1) {
    switch (ch) {
      case 'p':
        if (!number(optarg, 0, 65535, &v))
          return usage();
        opt.port = (int)v;
        break;
      case 'H':
        opt.host = optarg;
        break;
      case 'w':
        if (!number(optarg, 0, 256, &v))
          return usage();
        opt.workers = (unsigned)v;
        break;
      case 't':
        if (!number(optarg, 1, 1024, &v))
          return usage();
        opt.threads = (unsigned)v;
        break;
      case 'P':
        if (strcmp(optarg, "idle") == 0)
          opt.pool_nice = false;
        else if (strcmp(optarg, "nice") == 0)
          opt.pool_nice = true;
        else
          return usage();
        break;
      case 'h':
      case 'i':
        if (!number(optarg, 1, UINT32_MAX, &v))
          return usage();
        *(ch == 'h' ? &opt.header_timeout_ms : &opt.idle_timeout_ms) = v;
        break;
      case 'm':
        if (!number(optarg, 1, 1000000, &v))
          return usage();
        opt.max_conns = (unsigned)v;
        break;
      default:
        return usage();
    }
  }
  if (optind != argc)
    return usage();
  if (sodium_init() < 0) {
    fprintf(stderr, "login_api: sodium_init failed\n");
    return 1;
  }
  /* A dead client's socket must not kill the process: writes to it fail
   * with EPIPE instead. */
  signal(SIGPIPE, SIG_IGN);
  if (opt.workers > 0 && weft_cluster_is_primary())
    return run_primary(&opt);
  return run_server(&opt);
}
