/* cluster_app.c - the child program test_cluster starts (a cluster child
 * runs its own executable: this one).
 *
 *   cluster_app HOST PORT [MODE]
 *
 * It joins the cluster, listens on HOST:PORT with weft_cluster_listen()
 * and serves one line per TCP connection: "pid\n" is answered with its
 * process id and a newline, "slow\n" the same after blocking its loop for
 * 100 ms (so that another child must accept meanwhile); then it closes
 * the connection. Messages from the primary (msgpack arrays):
 *   ["echo", x]      answered ["echo", x, id]
 *   ["keep", x]      kept (weft_msg_keep), read again from a timer, then
 *                    answered ["kept", x]
 *   ["exit", code]   answers ["bye", code], then _exit(code)
 *   ["garbage"]      writes a frame of kind 0 on the pipe (fd 3)
 *   ["disconnect"]   disconnects itself
 *   ["pid"]          answered ["pid", getpid()]
 *   ["env", name]    answered ["env", value] (nil when unset)
 * Connections are taken with weft_cluster_accept(); on its first one it
 * also tries to take a second in the same callback and reports
 * ["again", rc] (nothing is pending: WEFT_EAGAIN).
 * A failed listen is reported as ["listen_error", status].
 * On disconnect it closes its server and ends, unless MODE says otherwise.
 * MODE: "nolisten" (no server), "exit3" (_exit(3) at once), "stubborn"
 * (ignores the disconnect: keeps its server open for 10 s), "early" (calls
 * weft_cluster_listen() before joining and reports ["early", rc]), "self"
 * (run as a primary with the default program and arguments: see
 * self_primary()), "twice" (see on_listen_twice()), "noaccept" (its
 * on_connection takes nothing). */
#include <arpa/inet.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <weft/weft.h>

static weft_loop_t* loop;
static weft_cluster_worker_t* me;
static uv_tcp_t server;
static uv_tcp_t server2; /* MODE "twice" only. */
static bool server_open;
static const char* mode = "";
static weft_msg_t* kept;

typedef struct {
  uv_tcp_t tcp;
  uv_write_t wr;
  char in[64];
  size_t len;
  char out[32];
} conn_t;

static void on_conn_closed(uv_handle_t* h) {
  free(h->data);
}

static void on_answered(uv_write_t* req, int status) {
  conn_t* k = req->data;
  (void)status;
  uv_close((uv_handle_t*)&k->tcp, on_conn_closed);
}

static void conn_alloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf) {
  conn_t* k = h->data;
  (void)suggested;
  *buf = uv_buf_init(k->in + k->len, (unsigned)(sizeof(k->in) - k->len));
}

static void conn_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  conn_t* k = s->data;
  char* nl;
  uv_buf_t out;
  (void)buf;
  if (n < 0 || (n == 0 && k->len == sizeof(k->in))) {
    uv_close((uv_handle_t*)&k->tcp, on_conn_closed);
    return;
  }
  k->len += (size_t)n;
  nl = memchr(k->in, '\n', k->len);
  if (nl == NULL) {
    if (k->len == sizeof(k->in))
      uv_close((uv_handle_t*)&k->tcp, on_conn_closed);
    return;
  }
  uv_read_stop(s);
  if (strncmp(k->in, "slow\n", 5) == 0)
    uv_sleep(100);
  snprintf(k->out, sizeof(k->out), "%d\n", (int)getpid());
  out = uv_buf_init(k->out, (unsigned)strlen(k->out));
  k->wr.data = k;
  if (uv_write(&k->wr, s, &out, 1, on_answered) != 0)
    uv_close((uv_handle_t*)&k->tcp, on_conn_closed);
}

static void on_spare_closed(uv_handle_t* h) {
  free(h);
}

static void on_connection(uv_stream_t* srv, int status) {
  static bool again_sent;
  conn_t* k;
  if (status != 0 || strcmp(mode, "noaccept") == 0)
    return;
  k = calloc(1, sizeof(*k));
  if (k == NULL)
    return;
  uv_tcp_init(weft_loop_uv(loop), &k->tcp);
  k->tcp.data = k;
  if (weft_cluster_accept((uv_tcp_t*)srv, &k->tcp) != 0 ||
      uv_read_start((uv_stream_t*)&k->tcp, conn_alloc, conn_read) != 0) {
    uv_close((uv_handle_t*)&k->tcp, on_conn_closed);
    return;
  }
  if (!again_sent && me != NULL) {
    uv_tcp_t* spare = calloc(1, sizeof(*spare));
    if (spare != NULL) {
      int rc;
      again_sent = true;
      uv_tcp_init(weft_loop_uv(loop), spare);
      rc = weft_cluster_accept((uv_tcp_t*)srv, spare);
      uv_close((uv_handle_t*)spare, on_spare_closed);
      weft_cluster_worker_post_fmt(me, "[si]", "again", rc);
    }
  }
}

static void close_server(void) {
  if (server_open) {
    server_open = false;
    uv_close((uv_handle_t*)&server, NULL);
    if (strcmp(mode, "twice") == 0)
      uv_close((uv_handle_t*)&server2, NULL);
  }
}

static void on_listen(uv_tcp_t* srv, int status, void* ctx) {
  (void)srv;
  (void)ctx;
  if (status != 0) {
    close_server();
    if (me != NULL)
      weft_cluster_worker_post_fmt(me, "[si]", "listen_error", status);
  }
}

/* MODE "twice": the server asks twice (the second must fail: it has its
 * socket under SCHED_NONE; under RR weft_cluster_listen() refuses it,
 * reported here as its callback's status), then a second server asks for
 * 127.0.0.2 and must get that address, not the socket the failed reply
 * brought (SCHED_NONE). */
static int twice_status[3];
static int twice_done;

static void on_listen_twice(uv_tcp_t* srv, int status, void* ctx) {
  struct sockaddr_in a;
  int n = (int)sizeof(a);
  int right = 0;
  (void)srv;
  twice_status[(intptr_t)ctx] = status;
  if (++twice_done < 3 || me == NULL)
    return;
  if (uv_tcp_getsockname(&server2, (struct sockaddr*)&a, &n) == 0)
    right = a.sin_family == AF_INET &&
            ntohl(a.sin_addr.s_addr) == 0x7f000002u;
  weft_cluster_worker_post_fmt(me, "[siiii]", "twice", twice_status[0],
                               twice_status[1], twice_status[2], right);
}

static void read_kept(weft_loop_t* l, void* arg) {
  int x = 0;
  (void)l;
  (void)arg;
  /* The kept message is still readable after its callback returned. */
  if (weft_msg_read(kept, "[*i]", &x) == 0 && me != NULL)
    weft_cluster_worker_post_fmt(me, "[si]", "kept", x);
  weft_msg_free(kept);
  kept = NULL;
}

static void on_message(weft_cluster_worker_t* w, weft_msg_t* msg) {
  const msgpack_object* o = weft_msg_object(msg);
  const msgpack_object* a;
  char cmd[32] = "";
  if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < 1 ||
      o->via.array.ptr[0].type != MSGPACK_OBJECT_STR ||
      o->via.array.ptr[0].via.str.size >= sizeof(cmd))
    return;
  a = o->via.array.ptr;
  memcpy(cmd, a[0].via.str.ptr, a[0].via.str.size);
  if (strcmp(cmd, "echo") == 0 && o->via.array.size == 2) {
    msgpack_packer* pk;
    weft_msg_t* m = NULL;
    if (weft_msg_new(&m) != 0)
      return;
    pk = weft_msg_packer(m);
    msgpack_pack_array(pk, 3);
    msgpack_pack_str(pk, 4);
    msgpack_pack_str_body(pk, "echo", 4);
    msgpack_pack_object(pk, a[1]);
    msgpack_pack_unsigned_int(pk, weft_cluster_worker_id(w));
    if (weft_cluster_worker_post_msg(w, &m) != 0)
      weft_msg_free(m);
  } else if (strcmp(cmd, "keep") == 0 && kept == NULL) {
    int err = weft_msg_keep(msg);
    if (err == 0) {
      kept = msg;
      weft_set_timeout(loop, 5, read_kept, NULL, NULL);
    } else {
      weft_cluster_worker_post_fmt(w, "[si]", "kept", err);
    }
  } else if (strcmp(cmd, "exit") == 0 && o->via.array.size == 2) {
    /* Its last words are read by the primary before the exit event. */
    weft_cluster_worker_post_fmt(w, "[si]", "bye", (int)a[1].via.i64);
    _exit((int)a[1].via.i64);
  } else if (strcmp(cmd, "garbage") == 0) {
    static const char bad[6] = {0, 0, 0, 1, 0, 'x'};
    if (write(3, bad, sizeof(bad)) != (ssize_t)sizeof(bad))
      _exit(9);
  } else if (strcmp(cmd, "disconnect") == 0) {
    weft_cluster_worker_disconnect(w);
  } else if (strcmp(cmd, "pid") == 0) {
    weft_cluster_worker_post_fmt(w, "[si]", "pid", (int)getpid());
  } else if (strcmp(cmd, "env") == 0 && o->via.array.size == 2 &&
             a[1].type == MSGPACK_OBJECT_STR && a[1].via.str.size < 64) {
    char name[64];
    const char* v;
    memcpy(name, a[1].via.str.ptr, a[1].via.str.size);
    name[a[1].via.str.size] = '\0';
    v = getenv(name);
    if (v != NULL)
      weft_cluster_worker_post_fmt(w, "[ss]", "env", v);
    else
      weft_cluster_worker_post_fmt(w, "[sn]", "env");
  }
}

static void close_server_task(weft_loop_t* l, void* arg) {
  (void)l;
  (void)arg;
  close_server();
}

static void on_disconnect(weft_cluster_worker_t* w) {
  (void)w;
  me = NULL;
  /* Stubborn: ends only after 10 s, so that it outlives a primary that
   * forgets to kill it, but not a failed test run. */
  if (strcmp(mode, "stubborn") == 0)
    weft_set_timeout(loop, 10000, close_server_task, NULL, NULL);
  else
    close_server();
}

/* MODE "self": run as the primary of a cluster made with the defaults
 * (this program again, with these arguments), whose one child echoes a
 * message back; exit 0 when it did and then exited 0. */
static weft_cluster_t* cluster;
static int echoed;
static int child_exit = -1;

static void self_online(weft_cluster_worker_t* w) {
  weft_cluster_worker_post_fmt(w, "[si]", "echo", 42);
}

static void self_message(weft_cluster_worker_t* w, weft_msg_t* msg) {
  int x = 0;
  unsigned id = 0;
  if (weft_msg_read(msg, "[*iu]", &x, &id) == 0 && x == 42 &&
      id == weft_cluster_worker_id(w))
    echoed++;
  weft_cluster_close(cluster, 10000, NULL);
}

static void self_exit(weft_cluster_worker_t* w, int code, int sig) {
  (void)w;
  child_exit = sig != 0 ? 128 + sig : code;
}

static int self_primary(void) {
  weft_cluster_opts_t o = {0};
  int err;
  o.events.online = self_online;
  o.events.message = self_message;
  o.events.exit = self_exit;
  err = weft_cluster_new(&cluster, loop, &o);
  if (err == 0)
    err = weft_cluster_fork(cluster, NULL);
  if (err != 0) {
    fprintf(stderr, "cluster_app: %s\n", weft_err_name(err));
    return 5;
  }
  weft_loop_run(loop);
  if (weft_loop_free(loop) != 0)
    return 4;
  return echoed == 1 && child_exit == 0 ? 0 : 6;
}

int main(int argc, char** argv) {
  weft_cluster_events_t ev = {0};
  int early = 0;
  int err;
  if (argc < 3)
    return 2;
  if (argc > 3)
    mode = argv[3];
  if (strcmp(mode, "exit3") == 0)
    _exit(3);
  if (weft_loop_new(&loop) != 0)
    return 2;
  if (strcmp(mode, "self") == 0 && weft_cluster_is_primary())
    return self_primary();
  uv_tcp_init(weft_loop_uv(loop), &server);
  server_open = true;
  if (strcmp(mode, "early") == 0)
    early = weft_cluster_listen(loop, &server, argv[1], atoi(argv[2]), 0,
                                on_connection, on_listen, NULL);
  ev.message = on_message;
  ev.disconnect = on_disconnect;
  err = weft_cluster_join(loop, &ev, NULL, &me);
  if (err != 0) {
    fprintf(stderr, "cluster_app: join: %s\n", weft_err_name(err));
    close_server();
    weft_loop_run(loop);
    weft_loop_free(loop);
    return 2;
  }
  if (strcmp(mode, "early") == 0)
    weft_cluster_worker_post_fmt(me, "[si]", "early", early);
  if (strcmp(mode, "nolisten") == 0 || strcmp(mode, "early") == 0) {
    close_server();
  } else if (strcmp(mode, "twice") == 0) {
    uv_tcp_init(weft_loop_uv(loop), &server2);
    weft_cluster_listen(loop, &server, argv[1], 0, 0, on_connection,
                        on_listen_twice, (void*)0);
    err = weft_cluster_listen(loop, &server, argv[1], 0, 0, on_connection,
                              on_listen_twice, (void*)1);
    if (err != 0)
      on_listen_twice(&server, err, (void*)1);
    weft_cluster_listen(loop, &server2, "127.0.0.2", 0, 0, on_connection,
                        on_listen_twice, (void*)2);
  } else {
    err = weft_cluster_listen(loop, &server, argv[1], atoi(argv[2]), 0,
                              on_connection, on_listen, NULL);
    if (err != 0)
      weft_cluster_worker_post_fmt(me, "[si]", "listen_error", err);
  }
  weft_loop_run(loop);
  weft_msg_free(kept);
  if (weft_loop_free(loop) != 0)
    return 4;
  return 0;
}
