/* cluster.c - Node's cluster: child processes of the same program, an IPC
 * pipe to each (fd 3 in the child), msgpack messages and listening sockets
 * over it, restarts with an intensity (see weft/cluster.h).
 *
 * Wire: frames of transport/frame.h. A user message is one frame whose
 * payload is the msgpack value; the control frames carry small fixed
 * payloads (big-endian integers, then a host string). A listening socket
 * travels with the reply frame that grants it (uv_write2): the child finds
 * it pending on the pipe when that frame is complete, since the descriptor
 * comes with the frame's first byte.
 *
 * The primary binds each address once. Under SCHED_NONE it calls listen()
 * on it itself without ever polling it: the accept queue exists from the
 * first request on, children accept from it, and it outlives any one child
 * (connections that wait in it when a child dies go to the others or to
 * its replacement). Under SCHED_RR (the default) the primary polls it,
 * accepts every connection and sends each with a K_CONN frame to the next
 * child that asked for that address (by child id, in turn); the child
 * hands it to the server's on_connection, where weft_cluster_accept()
 * takes it from the pipe. A child knows the policy from its environment
 * (WEFT_CLUSTER_SCHED). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "frame.h"
#include "internal.h"

extern char** environ;

#define ENV_FD "WEFT_CLUSTER_FD"
#define ENV_ID "WEFT_CLUSTER_ID"
#define ENV_MAX "WEFT_CLUSTER_MAX_MESSAGE"
#define ENV_SCHED "WEFT_CLUSTER_SCHED" /* "rr" or "none". */
#define ENV_POLICY "WEFT_CLUSTER_SCHED_POLICY" /* The user's default. */
#define CHILD_FD 3
#define HOST_MAX 64 /* Bytes of a numeric host, its NUL included. */
#define CONTROL_MAX 256 /* Largest control frame payload. */
#define READ_CHUNK 65536
#define DEFAULT_BACKLOG 511

enum {
  K_MSG = 1,          /* Both ways: one msgpack value. */
  K_ONLINE = 2,       /* Child → primary: joined. */
  K_LISTEN = 3,       /* Child → primary: id, port, backlog, host. */
  K_LISTEN_REPLY = 4, /* Primary → child: id, status, port (+ socket). */
  K_LISTENING = 5,    /* Child → primary: port, host (accepting). */
  K_DISCONNECT = 6,   /* Child → primary: the child disconnects itself. */
  K_CONN = 7          /* Primary → child (RR): listen request id (+ the
                       * connection). */
};

enum { PIPE_OPEN, PIPE_CLOSING, PIPE_CLOSED };

/* One weft_cluster_listen() waiting for its outcome: in a child, for the
 * primary's reply; elsewhere, for a 0 ms timer (the callback never runs
 * inside the call). */
typedef struct lreq_s {
  struct lreq_s* next;
  weft_loop_t* loop;
  uv_tcp_t* server;
  int backlog;
  uv_connection_cb on_connection;
  weft_cluster_listen_cb cb;
  void* ctx;
  uint32_t id;
  int status;
  uv_timer_t timer; /* Local only. */
  char host[HOST_MAX];
} lreq_t;

/* A socket the primary bound for its children. */
typedef struct listener_s {
  struct listener_s* next;
  weft_cluster_t* c;
  uv_tcp_t tcp;
  int port;  /* As asked (0: any). */
  int bound; /* The port bound. */
  unsigned last_id; /* RR: the child that got the last connection. */
  char host[HOST_MAX];
} listener_t;

/* Primary, RR: child asked for listener `l` with its request `req`. */
typedef struct {
  listener_t* l;
  uint32_t req;
} sub_t;

/* Child, RR: a server whose connections come over the pipe. */
typedef struct rrsrv_s {
  struct rrsrv_s* next;
  uv_tcp_t* server;
  uv_connection_cb on_connection;
  uint32_t id; /* Its listen request's. */
  bool ready;  /* The primary granted it. */
} rrsrv_t;

struct weft_cluster_worker_s {
  weft_cluster_t* c; /* NULL: a child's own handle. */
  weft_loop_t* loop;
  weft_cluster_worker_t* next; /* The cluster's list of live handles. */
  weft_cluster_worker_t* prev;
  unsigned id;
  int pid;
  int pipe_state;
  int handles; /* uv handles of this struct not closed yet. */
  bool exited;
  bool no_restart;        /* The primary killed or disconnected it. */
  bool disconnect_asked;  /* Either side called disconnect. */
  bool listed;
  int code;
  int signal;
  size_t limit; /* Largest message posted (opts.max_message). */
  weft__frame_reader_t rx; /* Frames read from the pipe. */
  void* data;
  uv_process_t proc;
  uv_pipe_t pipe;
  uv_shutdown_t shutdown;
  /* A child's own handle. */
  weft_cluster_events_t events;
  lreq_t* reqs;
  uint32_t next_req;
  bool rr;          /* The primary schedules round robin. */
  rrsrv_t* srvs;    /* RR servers. */
  rrsrv_t* handing; /* Whose connection is pending on the pipe. */
  /* A primary's handle, RR: the addresses the child asked for. */
  sub_t* subs;
  unsigned nsubs;
};

struct weft_cluster_s {
  weft_loop_t* loop;
  weft_cluster_events_t events;
  void* data;
  bool restart;
  bool rr; /* WEFT_CLUSTER_SCHED_RR. */
  unsigned max_restarts;
  uint64_t window_ns;
  size_t max;
  char* exec;
  char** argv;
  weft_cluster_worker_t* workers; /* Live handles (until their exit). */
  unsigned nworkers;              /* Handles not yet freed. */
  unsigned live;                  /* Processes not yet exited. */
  unsigned last_id;
  listener_t* listeners;
  uint64_t* restarts; /* Ring of the last max_restarts restart times. */
  unsigned nrestarts;
  unsigned restart_head;
  bool closing;
  bool finishing;
  int pending_closes;
  uv_timer_t grace;
  void (*close_cb)(weft_cluster_t* c);
};

/* A child's own handle (one per process); `joined` stays set after it
 * disconnected (a pipe is joined once). */
static weft_cluster_worker_t* self;
static bool joined;

/* --- small helpers --------------------------------------------------- */

static void put32(unsigned char* p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24);
  p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);
  p[3] = (unsigned char)v;
}

static uint32_t get32(const unsigned char* p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         (uint32_t)p[3];
}

static void after_callback(weft_loop_t* loop) {
  weft__loop_after_callback(loop);
}

/* A numeric address for `host`:`port`: 0 or WEFT_EINVAL. */
static int parse_addr(const char* host, int port, struct sockaddr_storage* ss) {
  memset(ss, 0, sizeof(*ss));
  if (host == NULL || port < 0 || port > 65535 ||
      strlen(host) >= HOST_MAX)
    return WEFT_EINVAL;
  if (uv_ip4_addr(host, port, (struct sockaddr_in*)ss) == 0)
    return 0;
  if (uv_ip6_addr(host, port, (struct sockaddr_in6*)ss) == 0)
    return 0;
  return WEFT_EINVAL;
}

static int sock_port(uv_tcp_t* tcp) {
  struct sockaddr_storage ss;
  int len = (int)sizeof(ss);
  if (uv_tcp_getsockname(tcp, (struct sockaddr*)&ss, &len) != 0)
    return 0;
  if (ss.ss_family == AF_INET)
    return ntohs(((struct sockaddr_in*)&ss)->sin_port);
  if (ss.ss_family == AF_INET6)
    return ntohs(((struct sockaddr_in6*)&ss)->sin6_port);
  return 0;
}

/* Writing to a peer that is gone must be an error, not the end of the
 * process (Node ignores SIGPIPE the same way). */
static void ignore_sigpipe(void) {
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
  }
}

/* --- writing frames -------------------------------------------------- */

typedef struct {
  uv_write_t req;
  weft_cluster_worker_t* w;
  uv_tcp_t* conn; /* RR: the connection sent (then closed here), or NULL. */
  listener_t* l;  /* Its listener. */
  size_t len;
  unsigned char bytes[];
} wreq_t;

static void close_pipe(weft_cluster_worker_t* w, bool graceful);
static void rr_hand(listener_t* l, uv_tcp_t* conn);
static void rr_close(uv_tcp_t* conn);

static void on_written(uv_write_t* req, int status) {
  wreq_t* r = weft__container_of(req, wreq_t, req);
  weft_cluster_worker_t* w = r->w;
  uv_tcp_t* conn = r->conn;
  listener_t* l = r->l;
  weft__xfree(r);
  /* The peer is gone (EPIPE): the pipe is over. */
  if (status < 0 && status != UV_ECANCELED && w->pipe_state == PIPE_OPEN)
    close_pipe(w, false);
  if (conn != NULL) {
    /* Sent: the child has its own descriptor. Not sent: the next child
     * (this one's pipe is no longer open). */
    if (status == 0)
      rr_close(conn);
    else
      rr_hand(l, conn);
  }
}

/* Send one frame: `a` then `b` as its payload, `handle` with it (or NULL).
 * Copied: the caller keeps nothing. 0, WEFT_ENOMEM, WEFT_ECLOSED. */
static int send_frame_ex(weft_cluster_worker_t* w,
                         uint8_t kind,
                         const void* a,
                         size_t alen,
                         const void* b,
                         size_t blen,
                         uv_stream_t* handle,
                         uv_tcp_t* conn,
                         listener_t* l) {
  size_t len = WEFT__FRAME_HEADER + alen + blen;
  wreq_t* r;
  uv_buf_t buf;
  int err;
  if (w->pipe_state != PIPE_OPEN)
    return WEFT_ECLOSED;
  r = weft__xalloc(sizeof(*r) + len);
  if (r == NULL)
    return WEFT_ENOMEM;
  r->w = w;
  r->conn = conn;
  r->l = l;
  r->len = len;
  weft__frame_header(r->bytes, kind, (uint32_t)(alen + blen));
  if (alen > 0)
    memcpy(r->bytes + WEFT__FRAME_HEADER, a, alen);
  if (blen > 0)
    memcpy(r->bytes + WEFT__FRAME_HEADER + alen, b, blen);
  buf = uv_buf_init((char*)r->bytes, (unsigned)len);
  err = uv_write2(&r->req, (uv_stream_t*)&w->pipe, &buf, 1, handle,
                  on_written);
  if (err != 0) {
    weft__xfree(r);
    return err == UV_ENOMEM ? WEFT_ENOMEM : WEFT_ECLOSED;
  }
  return 0;
}

static int send_frame(weft_cluster_worker_t* w,
                      uint8_t kind,
                      const void* a,
                      size_t alen,
                      const void* b,
                      size_t blen,
                      uv_stream_t* handle) {
  return send_frame_ex(w, kind, a, alen, b, blen, handle, NULL, NULL);
}

/* --- handles and their end -------------------------------------------- */

static void finish_close(weft_cluster_t* c);

static void worker_free(weft_cluster_worker_t* w) {
  weft_cluster_t* c = w->c;
  while (w->srvs != NULL) {
    rrsrv_t* s = w->srvs;
    w->srvs = s->next;
    weft__xfree(s);
  }
  weft__xfree(w->subs);
  weft__frame_reader_free(&w->rx);
  weft__xfree(w);
  if (c != NULL) {
    c->nworkers--;
    if (c->closing && c->nworkers == 0)
      finish_close(c);
  }
}

static void fail_requests(weft_cluster_worker_t* w, int err);

/* One of the struct's uv handles closed. */
static void on_handle_closed(uv_handle_t* h) {
  weft_cluster_worker_t* w = h->data;
  if (--w->handles == 0) {
    if (w->c == NULL) {
      weft_loop_t* loop = w->loop;
      if (self == w)
        self = NULL;
      worker_free(w);
      weft__loop_handles(loop, -1);
    } else {
      worker_free(w);
    }
  }
}

static void unlist(weft_cluster_worker_t* w) {
  weft_cluster_t* c = w->c;
  if (!w->listed)
    return;
  w->listed = false;
  if (w->prev != NULL)
    w->prev->next = w->next;
  else
    c->workers = w->next;
  if (w->next != NULL)
    w->next->prev = w->prev;
}

static int fork_child(weft_cluster_t* c, weft_cluster_worker_t** out);

/* Whether a restart now stays within the intensity; records it if so. */
static bool restart_allowed(weft_cluster_t* c) {
  uint64_t now = uv_hrtime();
  if (c->nrestarts == c->max_restarts) {
    /* The oldest of the last max_restarts restarts. */
    uint64_t oldest = c->restarts[c->restart_head];
    if (now - oldest < c->window_ns)
      return false;
    c->restarts[c->restart_head] = now;
    c->restart_head = (c->restart_head + 1) % c->max_restarts;
    return true;
  }
  c->restarts[(c->restart_head + c->nrestarts) % c->max_restarts] = now;
  c->nrestarts++;
  return true;
}

/* The last event of a primary's handle: its process exited and its pipe
 * is closed. Then a replacement, if the rules say so. */
static void emit_exit(weft_cluster_worker_t* w) {
  weft_cluster_t* c = w->c;
  bool want = c->restart && !c->closing && !w->no_restart &&
              !(w->disconnect_asked && w->code == 0 && w->signal == 0);
  bool allowed = want && restart_allowed(c);
  unlist(w);
  if (want && !allowed && c->events.error != NULL) {
    c->events.error(c, w, WEFT_ERESTARTS);
    after_callback(c->loop);
  }
  if (c->events.exit != NULL) {
    c->events.exit(w, w->code, w->signal);
    after_callback(c->loop);
  }
  uv_close((uv_handle_t*)&w->proc, on_handle_closed);
  /* The exit event may have closed the cluster. */
  if (allowed && !c->closing) {
    int err = fork_child(c, NULL);
    if (err != 0 && c->events.error != NULL) {
      c->events.error(c, NULL, err);
      after_callback(c->loop);
    }
  }
}

static void on_pipe_closed(uv_handle_t* h) {
  weft_cluster_worker_t* w = h->data;
  weft_loop_t* loop = w->loop;
  w->pipe_state = PIPE_CLOSED;
  if (w->c == NULL) {
    /* A child: pending listens fail, then the event, then the handle
     * goes. */
    fail_requests(w, WEFT_ECLOSED);
    if (w->events.disconnect != NULL) {
      w->events.disconnect(w);
      after_callback(loop);
    }
    on_handle_closed(h);
    return;
  }
  if (w->c->events.disconnect != NULL) {
    w->c->events.disconnect(w);
    after_callback(loop);
  }
  if (w->exited)
    emit_exit(w);
  on_handle_closed(h);
}

static void on_shutdown(uv_shutdown_t* req, int status) {
  weft_cluster_worker_t* w = req->data;
  (void)status;
  uv_close((uv_handle_t*)&w->pipe, on_pipe_closed);
}

/* End the IPC pipe: after the writes queued so far (`graceful`), or at
 * once (the peer is gone or broke the protocol). The disconnect event
 * comes from the close callback. */
static void close_pipe(weft_cluster_worker_t* w, bool graceful) {
  if (w->pipe_state != PIPE_OPEN)
    return;
  w->pipe_state = PIPE_CLOSING;
  uv_read_stop((uv_stream_t*)&w->pipe);
  if (graceful) {
    w->shutdown.data = w;
    if (uv_shutdown(&w->shutdown, (uv_stream_t*)&w->pipe, on_shutdown) == 0)
      return;
  }
  uv_close((uv_handle_t*)&w->pipe, on_pipe_closed);
}

/* The peer sent something that is not our protocol (WEFT_EDECODE), or
 * memory ran out for what it sent (WEFT_ENOMEM): the pipe is over. */
static void bad_peer(weft_cluster_worker_t* w, int err) {
  if (w->c != NULL && w->c->events.error != NULL) {
    w->c->events.error(w->c, w, err);
    after_callback(w->loop);
  }
  close_pipe(w, false);
}

/* --- listening --------------------------------------------------------- */

static void lreq_free(lreq_t* r) {
  weft_loop_t* loop = r->loop;
  weft__xfree(r);
  weft__loop_handles(loop, -1);
}

static void on_lreq_timer_closed(uv_handle_t* h) {
  lreq_free(h->data);
}

static void lreq_finish(lreq_t* r, int status) {
  r->cb(r->server, status, r->ctx);
  after_callback(r->loop);
}

static void on_local_listen(uv_timer_t* t) {
  lreq_t* r = t->data;
  lreq_finish(r, r->status);
  uv_close((uv_handle_t*)&r->timer, on_lreq_timer_closed);
}

/* Bind and listen in this process; the outcome goes to cb from a timer. */
static int listen_local(lreq_t* r, const struct sockaddr* addr) {
  int err = uv_timer_init(weft_loop_uv(r->loop), &r->timer);
  if (err != 0) {
    lreq_free(r);
    return WEFT_ENOMEM;
  }
  r->timer.data = r;
  r->status = uv_tcp_bind(r->server, addr, 0);
  if (r->status == 0)
    r->status = uv_listen((uv_stream_t*)r->server, r->backlog,
                          r->on_connection);
  uv_timer_start(&r->timer, on_local_listen, 0, 0);
  return 0;
}

static void fail_requests(weft_cluster_worker_t* w, int err) {
  while (w->reqs != NULL) {
    lreq_t* r = w->reqs;
    w->reqs = r->next;
    lreq_finish(r, err);
    lreq_free(r);
  }
}

/* Child: the primary answered listen request `id`. */
static int on_listen_reply(weft_cluster_worker_t* w,
                           const unsigned char* p,
                           uint32_t len) {
  lreq_t** link = &w->reqs;
  lreq_t* r;
  int status;
  int port;
  if (len != 12)
    return WEFT_EDECODE;
  while (*link != NULL && (*link)->id != get32(p))
    link = &(*link)->next;
  if (*link == NULL)
    return WEFT_EDECODE;
  r = *link;
  status = (int)(int32_t)get32(p + 4);
  port = (int)get32(p + 8);
  if (status > 0)
    return WEFT_EDECODE;
  if (w->rr) {
    /* No socket: connections come one by one (K_CONN). */
    rrsrv_t** sl = &w->srvs;
    while (*sl != NULL && (*sl)->id != r->id)
      sl = &(*sl)->next;
    if (*sl == NULL)
      return WEFT_EDECODE;
    if (status == 0) {
      unsigned char b[4];
      (*sl)->ready = true;
      put32(b, (uint32_t)port);
      (void)send_frame(w, K_LISTENING, b, 4, r->host, strlen(r->host), NULL);
    } else {
      rrsrv_t* s = *sl;
      *sl = s->next;
      weft__xfree(s);
    }
  } else if (status == 0) {
    /* The socket came with this frame's first byte. */
    if (uv_pipe_pending_count(&w->pipe) < 1 ||
        uv_pipe_pending_type(&w->pipe) != UV_TCP)
      return WEFT_EDECODE;
    /* On an error libuv closes the socket: the next reply's accept
     * gets its own. */
    status = uv_accept((uv_stream_t*)&w->pipe, (uv_stream_t*)r->server);
    if (status == 0)
      status = uv_listen((uv_stream_t*)r->server, r->backlog,
                         r->on_connection);
    if (status == 0) {
      unsigned char b[4];
      put32(b, (uint32_t)port);
      /* Only for the primary's listening event: if the pipe fails now,
       * the disconnect tells the rest. */
      (void)send_frame(w, K_LISTENING, b, 4, r->host, strlen(r->host), NULL);
    }
  }
  *link = r->next;
  lreq_finish(r, status);
  lreq_free(r);
  return 0;
}

static void on_dropped(uv_handle_t* h) {
  weft_loop_t* loop = h->data;
  weft__xfree(h);
  weft__loop_handles(loop, -1);
}

/* Child, RR: a connection for listen request `id` is pending on the pipe:
 * the server's on_connection, where weft_cluster_accept() takes it; one
 * not taken there is closed (it cannot wait: the next frame may bring
 * another descriptor). */
static int on_conn_frame(weft_cluster_worker_t* w,
                         const unsigned char* p,
                         uint32_t len) {
  rrsrv_t* s;
  uv_tcp_t* drop;
  uint32_t id;
  if (len != 4 || !w->rr || uv_pipe_pending_count(&w->pipe) < 1 ||
      uv_pipe_pending_type(&w->pipe) != UV_TCP)
    return WEFT_EDECODE;
  id = get32(p);
  for (s = w->srvs; s != NULL; s = s->next)
    if (s->id == id)
      break;
  if (s != NULL && s->ready && !uv_is_closing((uv_handle_t*)s->server)) {
    w->handing = s;
    s->on_connection((uv_stream_t*)s->server, 0);
    w->handing = NULL;
    after_callback(w->loop);
  }
  /* Not taken, or for no server: close it. If the pipe is closing, libuv
   * closes what is pending on it. */
  if (w->pipe_state != PIPE_OPEN || uv_pipe_pending_count(&w->pipe) < 1)
    return 0;
  drop = weft__xalloc(sizeof(*drop));
  if (drop == NULL)
    return WEFT_ENOMEM;
  if (uv_tcp_init(weft_loop_uv(w->loop), drop) != 0) {
    weft__xfree(drop);
    return WEFT_ENOMEM;
  }
  drop->data = w->loop;
  weft__loop_handles(w->loop, 1);
  (void)uv_accept((uv_stream_t*)&w->pipe, (uv_stream_t*)drop);
  uv_close((uv_handle_t*)drop, on_dropped);
  return 0;
}

/* --- round robin in the primary ------------------------------------------ */

static void on_rr_closed(uv_handle_t* h) {
  weft_loop_t* loop = h->data;
  weft__xfree(h);
  weft__loop_handles(loop, -1);
}

static void rr_close(uv_tcp_t* conn) {
  uv_close((uv_handle_t*)conn, on_rr_closed);
}

/* The request by which `w` asked for `l`, or NULL. */
static sub_t* rr_sub(weft_cluster_worker_t* w, const listener_t* l) {
  unsigned i;
  for (i = 0; i < w->nsubs; i++)
    if (w->subs[i].l == l)
      return &w->subs[i];
  return NULL;
}

/* The next child in turn for `l`: the lowest id above the last one served
 * among the connected children that asked for it, else the lowest. */
static weft_cluster_worker_t* rr_pick(listener_t* l) {
  weft_cluster_worker_t* next = NULL;
  weft_cluster_worker_t* first = NULL;
  weft_cluster_worker_t* w;
  for (w = l->c->workers; w != NULL; w = w->next) {
    if (w->pipe_state != PIPE_OPEN || w->exited || rr_sub(w, l) == NULL)
      continue;
    if (first == NULL || w->id < first->id)
      first = w;
    if (w->id > l->last_id && (next == NULL || w->id < next->id))
      next = w;
  }
  return next != NULL ? next : first;
}

/* Send `conn` (accepted on `l`) to the next child; closed when no child
 * can take it. */
static void rr_hand(listener_t* l, uv_tcp_t* conn) {
  for (;;) {
    weft_cluster_worker_t* w =
        l->c != NULL && !l->c->closing ? rr_pick(l) : NULL;
    unsigned char b[4];
    int err;
    if (w == NULL) {
      rr_close(conn);
      return;
    }
    l->last_id = w->id;
    put32(b, rr_sub(w, l)->req);
    err = send_frame_ex(w, K_CONN, b, sizeof(b), NULL, 0, (uv_stream_t*)conn,
                        conn, l);
    if (err == 0)
      return;
    if (err == WEFT_ENOMEM) {
      rr_close(conn);
      return;
    }
    /* The pipe cannot be written: it is over, the next child. */
    close_pipe(w, false);
  }
}

static void on_rr_connection(uv_stream_t* s, int status) {
  listener_t* l = s->data;
  uv_tcp_t* conn;
  if (status != 0)
    return;
  conn = weft__xalloc(sizeof(*conn));
  if (conn == NULL || uv_tcp_init(weft_loop_uv(l->c->loop), conn) != 0) {
    /* No handle to take it: close it here, or libuv would stop polling
     * the socket until it is accepted. */
    weft__xfree(conn);
    if (s->accepted_fd >= 0) {
      (void)close(s->accepted_fd);
      s->accepted_fd = -1;
    }
    return;
  }
  conn->data = l->c->loop;
  weft__loop_handles(l->c->loop, 1);
  if (uv_accept(s, (uv_stream_t*)conn) != 0) {
    rr_close(conn);
    return;
  }
  rr_hand(l, conn);
}

static void on_listener_closed(uv_handle_t* h) {
  listener_t* l = h->data;
  weft_cluster_t* c = l->c;
  weft__xfree(l);
  if (c != NULL && --c->pending_closes == 0)
    finish_close(c);
}

/* Primary: the socket for `host`:`port`, bound and listening (made on the
 * first request): 0 and `*out`, or libuv's error. */
static int get_listener(weft_cluster_t* c,
                        const char* host,
                        int port,
                        int backlog,
                        listener_t** out) {
  struct sockaddr_storage ss;
  listener_t* l;
  int err;
  for (l = c->listeners; l != NULL; l = l->next) {
    if (l->port == port && strcmp(l->host, host) == 0) {
      *out = l;
      return 0;
    }
  }
  err = parse_addr(host, port, &ss);
  if (err != 0)
    return err;
  l = weft__xalloc(sizeof(*l));
  if (l == NULL)
    return WEFT_ENOMEM;
  memset(l, 0, sizeof(*l));
  l->port = port;
  memcpy(l->host, host, strlen(host) + 1);
  err = uv_tcp_init_ex(weft_loop_uv(c->loop), &l->tcp, ss.ss_family);
  if (err != 0) {
    weft__xfree(l);
    return err;
  }
  l->tcp.data = l;
  err = uv_tcp_bind(&l->tcp, (struct sockaddr*)&ss, 0);
  /* libuv defers EADDRINUSE to uv_listen(), which the primary never
   * calls (it would accept itself): a bound socket has a port. */
  if (err == 0) {
    l->bound = sock_port(&l->tcp);
    if (l->bound == 0)
      err = UV_EADDRINUSE;
  }
  if (err == 0 && c->rr) {
    /* It accepts here and hands each connection on. */
    l->c = c;
    err = uv_listen((uv_stream_t*)&l->tcp, backlog, on_rr_connection);
  } else if (err == 0) {
    uv_os_fd_t fd;
    err = uv_fileno((uv_handle_t*)&l->tcp, &fd);
    if (err == 0 && listen(fd, backlog) != 0)
      err = -errno;
  }
  if (err != 0) {
    l->c = NULL; /* Not the cluster's: freed alone. */
    uv_close((uv_handle_t*)&l->tcp, on_listener_closed);
    return err;
  }
  l->c = c;
  l->next = c->listeners;
  c->listeners = l;
  *out = l;
  return 0;
}

/* Primary: child `w` asks for a socket. */
static int on_listen_request(weft_cluster_worker_t* w,
                             const unsigned char* p,
                             uint32_t len) {
  weft_cluster_t* c = w->c;
  char host[HOST_MAX];
  unsigned char reply[12];
  listener_t* l = NULL;
  uv_stream_t* sock;
  int port;
  int backlog;
  int status;
  if (len < 13 || len - 12 >= HOST_MAX)
    return WEFT_EDECODE;
  port = (int)get32(p + 4);
  backlog = (int)get32(p + 8);
  memcpy(host, p + 12, len - 12);
  host[len - 12] = '\0';
  if (port < 0 || port > 65535 || backlog <= 0 || strlen(host) != len - 12)
    return WEFT_EDECODE;
  status = c->closing ? WEFT_ECLOSED
                      : get_listener(c, host, port, backlog, &l);
  sock = l != NULL ? (uv_stream_t*)&l->tcp : NULL;
  if (status == 0 && c->rr) {
    /* The child gets connections, not the socket; one server per address
     * in a child. */
    sub_t* subs = NULL;
    if (rr_sub(w, l) != NULL)
      status = WEFT_EBUSY;
    else if ((subs = weft__xrealloc(w->subs,
                                    (w->nsubs + 1) * sizeof(*subs))) == NULL)
      status = WEFT_ENOMEM;
    if (subs != NULL) {
      w->subs = subs;
      w->subs[w->nsubs].l = l;
      w->subs[w->nsubs].req = get32(p);
      w->nsubs++;
    }
    sock = NULL;
  }
  memcpy(reply, p, 4);
  put32(reply + 4, (uint32_t)status);
  put32(reply + 8, (uint32_t)(l != NULL ? l->bound : 0));
  /* A failed write means the pipe is over: its disconnect follows. */
  (void)send_frame(w, K_LISTEN_REPLY, reply, sizeof(reply), NULL, 0, sock);
  return 0;
}

static int on_listening(weft_cluster_worker_t* w,
                        const unsigned char* p,
                        uint32_t len) {
  char host[HOST_MAX];
  if (len < 5 || len - 4 >= HOST_MAX)
    return WEFT_EDECODE;
  memcpy(host, p + 4, len - 4);
  host[len - 4] = '\0';
  if (w->c->events.listening != NULL) {
    w->c->events.listening(w, host, (int)get32(p));
    after_callback(w->loop);
  }
  return 0;
}

/* --- reading frames ----------------------------------------------------- */

static int deliver(weft_cluster_worker_t* w, const unsigned char* p, size_t len) {
  void (*on_message)(weft_cluster_worker_t*, weft_msg_t*) =
      w->c != NULL ? w->c->events.message : w->events.message;
  weft_msg_t* m;
  int err;
  if (len == 0)
    return WEFT_EDECODE;
  m = weft__msg_alloc(WEFT__MSG_DATA, len);
  if (m == NULL)
    return WEFT_ENOMEM;
  memcpy(m->data, p, len);
  m->len = len;
  err = weft__msg_hand_out(m, w->loop);
  if (err != 0)
    return err == WEFT_ENOMEM ? err : WEFT_EDECODE;
  if (on_message != NULL)
    on_message(w, m);
  weft__msg_take_back(m, w->loop);
  after_callback(w->loop);
  return 0;
}

/* Handle one frame: 0, or an error that ends the pipe. */
static int on_frame(weft_cluster_worker_t* w, const weft__frame_t* f) {
  bool primary = w->c != NULL;
  if (f->kind == K_MSG)
    return deliver(w, f->payload, f->len);
  if (primary) {
    switch (f->kind) {
      case K_ONLINE:
        if (f->len != 0)
          return WEFT_EDECODE;
        if (w->c->events.online != NULL) {
          w->c->events.online(w);
          after_callback(w->loop);
        }
        return 0;
      case K_LISTEN:
        return on_listen_request(w, f->payload, f->len);
      case K_LISTENING:
        return on_listening(w, f->payload, f->len);
      case K_DISCONNECT:
        w->disconnect_asked = true;
        return f->len == 0 ? 0 : WEFT_EDECODE;
      default:
        return WEFT_EDECODE;
    }
  }
  if (f->kind == K_LISTEN_REPLY)
    return on_listen_reply(w, f->payload, f->len);
  if (f->kind == K_CONN)
    return on_conn_frame(w, f->payload, f->len);
  return WEFT_EDECODE;
}

/* Handle the complete frames read so far. A callback may disconnect: what
 * follows is then dropped. */
static void take_frames(weft_cluster_worker_t* w) {
  while (w->pipe_state == PIPE_OPEN) {
    weft__frame_t f;
    int n = weft__frame_reader_next(&w->rx, &f);
    int err;
    if (n == 0)
      break;
    err = n < 0 ? WEFT_EDECODE : on_frame(w, &f);
    if (err != 0) {
      bad_peer(w, err);
      return;
    }
  }
}

static void on_alloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf) {
  weft_cluster_worker_t* w = h->data;
  unsigned char* base;
  size_t len;
  (void)suggested;
  if (weft__frame_reader_room(&w->rx, &base, &len) != 0) {
    *buf = uv_buf_init(NULL, 0); /* read_cb gets UV_ENOBUFS. */
    return;
  }
  *buf = uv_buf_init((char*)base, (unsigned)(len > UINT32_MAX ? UINT32_MAX
                                                              : len));
}

static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  weft_cluster_worker_t* w = s->data;
  (void)buf;
  if (nread == UV_ENOBUFS) {
    bad_peer(w, WEFT_ENOMEM); /* No room for what it sends. */
    return;
  }
  if (nread < 0) {
    close_pipe(w, false); /* EOF: the peer closed or ended. */
    return;
  }
  weft__frame_reader_commit(&w->rx, (size_t)nread);
  take_frames(w);
}

/* --- the primary -------------------------------------------------------- */

bool weft_cluster_is_primary(void) {
  return getenv(ENV_FD) == NULL;
}

static void free_strv(char** v) {
  size_t i;
  if (v == NULL)
    return;
  for (i = 0; v[i] != NULL; i++)
    weft__xfree(v[i]);
  weft__xfree(v);
}

static char* dup_str(const char* s, size_t len) {
  char* d = weft__xalloc(len + 1);
  if (d != NULL) {
    memcpy(d, s, len);
    d[len] = '\0';
  }
  return d;
}

/* A NULL-terminated copy of `n` strings laid end to end in `s` (each
 * ending with a NUL), or of `argv` when `s` is NULL. */
static char** copy_strv(char* const* argv, const char* s, size_t n) {
  char** v;
  size_t i;
  if (argv != NULL)
    for (n = 0; argv[n] != NULL; n++) {
    }
  v = weft__xalloc((n + 1) * sizeof(*v));
  if (v == NULL)
    return NULL;
  for (i = 0; i < n; i++) {
    const char* a = argv != NULL ? argv[i] : s;
    size_t len = a != NULL ? strlen(a) : 0;
    v[i] = a != NULL ? dup_str(a, len) : NULL;
    if (v[i] == NULL) {
      v[i] = NULL;
      free_strv(v);
      return NULL;
    }
    v[i + 1] = NULL;
    if (argv == NULL)
      s += len + 1;
  }
  v[n] = NULL;
  return v;
}

/* This process's arguments, from /proc/self/cmdline. */
static char** own_argv(void) {
  char* buf = NULL;
  size_t len = 0;
  size_t cap = 0;
  size_t n = 0;
  size_t i;
  char** v;
  FILE* f = fopen("/proc/self/cmdline", "rb");
  if (f == NULL)
    return NULL;
  for (;;) {
    size_t got;
    if (len == cap) {
      char* p = weft__xrealloc(buf, cap == 0 ? 4096 : cap * 2);
      if (p == NULL) {
        weft__xfree(buf);
        (void)fclose(f);
        return NULL;
      }
      buf = p;
      cap = cap == 0 ? 4096 : cap * 2;
    }
    got = fread(buf + len, 1, cap - len, f);
    if (got == 0)
      break;
    len += got;
  }
  (void)fclose(f);
  if (len == 0 || buf[len - 1] != '\0') {
    weft__xfree(buf);
    return NULL;
  }
  for (i = 0; i < len; i++)
    n += buf[i] == '\0';
  v = copy_strv(NULL, buf, n);
  weft__xfree(buf);
  return v;
}

static void cluster_free(weft_cluster_t* c) {
  weft_loop_t* loop = c->loop;
  weft__xfree(c->exec);
  free_strv(c->argv);
  weft__xfree(c->restarts);
  weft__xfree(c);
  weft__loop_handles(loop, -1);
}

int weft_cluster_new(weft_cluster_t** out,
                     weft_loop_t* loop,
                     const weft_cluster_opts_t* opts) {
  weft_cluster_opts_t o;
  weft_cluster_t* c;
  const char* exec;
  if (out == NULL)
    return WEFT_EINVAL;
  *out = NULL;
  if (loop == NULL || !weft_cluster_is_primary())
    return WEFT_EINVAL;
  if (!weft__loop_on_thread(loop))
    return WEFT_EWRONGTHREAD;
  if (opts != NULL)
    o = *opts;
  else
    memset(&o, 0, sizeof(o));
  if (o.sched != WEFT_CLUSTER_SCHED_DEFAULT &&
      o.sched != WEFT_CLUSTER_SCHED_RR && o.sched != WEFT_CLUSTER_SCHED_NONE)
    return WEFT_EINVAL;
  c = weft__xalloc(sizeof(*c));
  if (c == NULL)
    return WEFT_ENOMEM;
  memset(c, 0, sizeof(*c));
  c->loop = loop;
  c->events = o.events;
  c->data = o.data;
  c->restart = o.restart;
  if (o.sched == WEFT_CLUSTER_SCHED_DEFAULT) {
    const char* policy = getenv(ENV_POLICY);
    c->rr = policy == NULL || strcmp(policy, "none") != 0;
  } else {
    c->rr = o.sched == WEFT_CLUSTER_SCHED_RR;
  }
  c->max_restarts = o.max_restarts != 0 ? o.max_restarts : 10;
  c->window_ns =
      (uint64_t)(o.restart_window_ms != 0 ? o.restart_window_ms : 10000) *
      1000000u;
  c->max = o.max_message != 0 ? o.max_message : WEFT_MSG_DEFAULT_LIMIT;
  if (c->max > UINT32_MAX - 64)
    c->max = UINT32_MAX - 64; /* The frame length is 32 bits. */
  exec = o.exec != NULL ? o.exec : "/proc/self/exe";
  c->exec = dup_str(exec, strlen(exec));
  c->argv = o.argv != NULL ? copy_strv(o.argv, NULL, 0) : own_argv();
  c->restarts = weft__xalloc(c->max_restarts * sizeof(*c->restarts));
  if (c->exec == NULL || c->argv == NULL || c->argv[0] == NULL ||
      c->restarts == NULL) {
    bool empty = c->argv != NULL && c->argv[0] == NULL;
    weft__xfree(c->exec);
    free_strv(c->argv);
    weft__xfree(c->restarts);
    weft__xfree(c);
    return empty ? WEFT_EINVAL : WEFT_ENOMEM;
  }
  ignore_sigpipe();
  weft__loop_handles(loop, 1);
  *out = c;
  return 0;
}

static void on_exit_cb(uv_process_t* p, int64_t status, int signal) {
  weft_cluster_worker_t* w = p->data;
  w->exited = true;
  w->code = signal != 0 ? 0 : (int)status;
  w->signal = signal;
  w->pid = 0;
  w->c->live--;
  /* Its exit comes after its disconnect. What it wrote before it ended
   * was read first: libuv runs signal watchers (this callback) after the
   * I/O of the same poll, and the pipe was readable no later. */
  if (w->pipe_state == PIPE_OPEN)
    close_pipe(w, false);
  else if (w->pipe_state == PIPE_CLOSED)
    emit_exit(w);
}

/* The environment of a child: ours, less any WEFT_CLUSTER_ variables, plus
 * the pipe's fd, the child's id and the message limit; and
 * UV_TCP_SINGLE_ACCEPT=1 unless ours sets it. The children accept on one
 * socket and the kernel wakes them all for a connection: left alone,
 * libuv accepts every waiting connection in one go, so a burst lands on
 * the first child awake (40 logins on 8 connections to the login API's
 * two children: 40/0); with it, libuv yields after each accept and the
 * others take their share (20/20). */
static char** child_env(weft_cluster_t* c, unsigned id, char vars[5][64]) {
  size_t n = 0;
  size_t k = 0;
  size_t i;
  char** env;
  while (environ != NULL && environ[n] != NULL)
    n++;
  env = weft__xalloc((n + 6) * sizeof(*env));
  if (env == NULL)
    return NULL;
  for (i = 0; i < n; i++)
    if (strncmp(environ[i], "WEFT_CLUSTER_", 13) != 0)
      env[k++] = environ[i];
  (void)snprintf(vars[0], 64, "%s=%d", ENV_FD, CHILD_FD);
  (void)snprintf(vars[1], 64, "%s=%u", ENV_ID, id);
  (void)snprintf(vars[2], 64, "%s=%zu", ENV_MAX, c->max);
  env[k++] = vars[0];
  env[k++] = vars[1];
  (void)snprintf(vars[4], 64, "%s=%s", ENV_SCHED, c->rr ? "rr" : "none");
  env[k++] = vars[2];
  env[k++] = vars[4];
  if (getenv("UV_TCP_SINGLE_ACCEPT") == NULL) {
    (void)snprintf(vars[3], 64, "UV_TCP_SINGLE_ACCEPT=1");
    env[k++] = vars[3];
  }
  env[k] = NULL;
  return env;
}

static int fork_child(weft_cluster_t* c, weft_cluster_worker_t** out) {
  uv_loop_t* uv = weft_loop_uv(c->loop);
  weft_cluster_worker_t* w;
  uv_process_options_t po;
  uv_stdio_container_t stdio[4];
  char vars[5][64];
  char** env;
  int err;
  int i;
  w = weft__xalloc(sizeof(*w));
  if (w == NULL)
    return WEFT_ENOMEM;
  memset(w, 0, sizeof(*w));
  w->c = c;
  w->loop = c->loop;
  w->id = c->last_id + 1;
  w->limit = c->max;
  weft__frame_reader_init(&w->rx, c->max < CONTROL_MAX ? CONTROL_MAX : c->max,
                          READ_CHUNK, weft__xrealloc, weft__xfree);
  env = child_env(c, w->id, vars);
  if (env == NULL) {
    weft__xfree(w);
    return WEFT_ENOMEM;
  }
  err = uv_pipe_init(uv, &w->pipe, 1);
  if (err != 0) {
    weft__xfree(env);
    weft__xfree(w);
    return err;
  }
  w->pipe.data = w;
  w->proc.data = w;
  w->handles = 1;
  c->nworkers++;
  memset(&po, 0, sizeof(po));
  for (i = 0; i < 3; i++) {
    stdio[i].flags = UV_INHERIT_FD;
    stdio[i].data.fd = i;
  }
  stdio[3].flags = UV_CREATE_PIPE | UV_READABLE_PIPE | UV_WRITABLE_PIPE;
  stdio[3].data.stream = (uv_stream_t*)&w->pipe;
  po.exit_cb = on_exit_cb;
  po.file = c->exec;
  po.args = c->argv;
  po.env = env;
  po.stdio = stdio;
  po.stdio_count = 4;
  err = uv_spawn(uv, &w->proc, &po);
  weft__xfree(env);
  /* Failed or not, the process handle is initialized: closed with the
   * pipe, and the struct freed when both are. */
  w->handles = 2;
  if (err == 0)
    err = uv_read_start((uv_stream_t*)&w->pipe, on_alloc, on_read);
  if (err != 0) {
    if (w->proc.pid != 0 && uv_process_kill(&w->proc, SIGKILL) == 0) {
      /* Started, but its pipe cannot be read: it goes, with its events. */
      w->no_restart = true;
    } else {
      w->pipe_state = PIPE_CLOSING;
      uv_close((uv_handle_t*)&w->pipe, on_handle_closed);
      uv_close((uv_handle_t*)&w->proc, on_handle_closed);
      return err;
    }
  }
  w->pid = w->proc.pid;
  c->last_id = w->id;
  c->live++;
  w->listed = true;
  w->next = c->workers;
  if (c->workers != NULL)
    c->workers->prev = w;
  c->workers = w;
  if (out != NULL)
    *out = w;
  if (c->events.fork != NULL) {
    c->events.fork(w);
    after_callback(c->loop);
  }
  return 0;
}

int weft_cluster_fork(weft_cluster_t* c, weft_cluster_worker_t** out) {
  if (out != NULL)
    *out = NULL;
  if (c == NULL)
    return WEFT_EINVAL;
  if (!weft__loop_on_thread(c->loop))
    return WEFT_EWRONGTHREAD;
  if (c->closing)
    return WEFT_ECLOSED;
  return fork_child(c, out);
}

static void on_grace_closed(uv_handle_t* h) {
  weft_cluster_t* c = h->data;
  if (--c->pending_closes == 0)
    finish_close(c);
}

/* Every handle is gone: close the sockets and the timer, then the
 * callback (from the last close callback, so never inside
 * weft_cluster_close()). */
static void finish_close(weft_cluster_t* c) {
  if (!c->finishing) {
    listener_t* l;
    c->finishing = true;
    c->pending_closes = 1; /* The grace timer. */
    for (l = c->listeners; l != NULL; l = l->next)
      c->pending_closes++;
    for (l = c->listeners; l != NULL; l = l->next)
      uv_close((uv_handle_t*)&l->tcp, on_listener_closed);
    c->listeners = NULL;
    uv_close((uv_handle_t*)&c->grace, on_grace_closed);
    return;
  }
  if (c->pending_closes > 0)
    return;
  if (c->close_cb != NULL) {
    weft_loop_t* loop = c->loop;
    c->close_cb(c);
    cluster_free(c);
    after_callback(loop);
    return;
  }
  cluster_free(c);
}

static void on_grace(uv_timer_t* t) {
  weft_cluster_t* c = t->data;
  weft_cluster_worker_t* w;
  for (w = c->workers; w != NULL; w = w->next)
    if (!w->exited)
      uv_process_kill(&w->proc, SIGKILL);
}

int weft_cluster_close(weft_cluster_t* c,
                       uint32_t grace_ms,
                       void (*cb)(weft_cluster_t* c)) {
  weft_cluster_worker_t* w;
  int err;
  if (c == NULL)
    return WEFT_EINVAL;
  if (!weft__loop_on_thread(c->loop))
    return WEFT_EWRONGTHREAD;
  if (c->closing)
    return WEFT_EBUSY;
  err = uv_timer_init(weft_loop_uv(c->loop), &c->grace);
  if (err != 0)
    return WEFT_ENOMEM;
  c->grace.data = c;
  c->closing = true;
  c->close_cb = cb;
  for (w = c->workers; w != NULL; w = w->next) {
    w->no_restart = true;
    w->disconnect_asked = true;
    close_pipe(w, true);
  }
  if (grace_ms > 0 && c->live > 0) {
    /* Count the grace from this call, not from the loop's cached clock,
     * which lags while a callback runs (a child was killed before its grace
     * ran out once in cluster/close_kills_a_child_after_the_grace_time);
     * weft's own timers do the same (loop.h). */
    uv_update_time(weft_loop_uv(c->loop));
    uv_timer_start(&c->grace, on_grace, grace_ms, 0);
  }
  if (c->nworkers == 0)
    finish_close(c);
  return 0;
}

unsigned weft_cluster_size(const weft_cluster_t* c) {
  return c != NULL ? c->live : 0;
}

void* weft_cluster_get_data(const weft_cluster_t* c) {
  return c != NULL ? c->data : NULL;
}

weft_loop_t* weft_cluster_loop(const weft_cluster_t* c) {
  return c != NULL ? c->loop : NULL;
}

int weft_cluster_worker_kill(weft_cluster_worker_t* w, int signum) {
  int err;
  if (w == NULL || w->c == NULL || signum < 0)
    return WEFT_EINVAL;
  if (!weft__loop_on_thread(w->loop))
    return WEFT_EWRONGTHREAD;
  if (w->exited)
    return WEFT_ENOTSTARTED;
  err = uv_process_kill(&w->proc, signum != 0 ? signum : SIGTERM);
  if (err == 0)
    w->no_restart = true;
  return err;
}

int weft_cluster_worker_pid(const weft_cluster_worker_t* w) {
  if (w == NULL)
    return 0;
  if (w->c == NULL)
    return (int)getpid();
  return w->exited ? 0 : w->pid;
}

/* --- the child ---------------------------------------------------------- */

int weft_cluster_join(weft_loop_t* loop,
                      const weft_cluster_events_t* events,
                      void* data,
                      weft_cluster_worker_t** out) {
  const char* s;
  weft_cluster_worker_t* w;
  char* end;
  long fd;
  int err;
  if (out != NULL)
    *out = NULL;
  if (loop == NULL || out == NULL || weft_cluster_is_primary())
    return WEFT_EINVAL;
  if (!weft__loop_on_thread(loop))
    return WEFT_EWRONGTHREAD;
  if (joined)
    return WEFT_EBUSY;
  s = getenv(ENV_FD);
  if (s == NULL)
    return WEFT_EINVAL;
  errno = 0;
  fd = strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || fd < 0 || fd > 1 << 20)
    return WEFT_EINVAL;
  w = weft__xalloc(sizeof(*w));
  if (w == NULL)
    return WEFT_ENOMEM;
  memset(w, 0, sizeof(*w));
  w->loop = loop;
  w->data = data;
  if (events != NULL)
    w->events = *events;
  s = getenv(ENV_ID);
  w->id = s != NULL ? (unsigned)strtoul(s, NULL, 10) : 0;
  s = getenv(ENV_MAX);
  w->limit = s != NULL ? (size_t)strtoull(s, NULL, 10) : 0;
  if (w->limit == 0 || w->limit > UINT32_MAX - 64)
    w->limit = WEFT_MSG_DEFAULT_LIMIT;
  s = getenv(ENV_SCHED);
  w->rr = s != NULL && strcmp(s, "rr") == 0;
  weft__frame_reader_init(&w->rx,
                          w->limit < CONTROL_MAX ? CONTROL_MAX : w->limit,
                          READ_CHUNK, weft__xrealloc, weft__xfree);
  err = uv_pipe_init(weft_loop_uv(loop), &w->pipe, 1);
  if (err != 0) {
    weft__xfree(w);
    return err;
  }
  w->pipe.data = w;
  w->handles = 1;
  weft__loop_handles(loop, 1);
  /* What this program starts must not hold the pipe open. */
  (void)fcntl((int)fd, F_SETFD, FD_CLOEXEC);
  err = uv_pipe_open(&w->pipe, (uv_file)fd);
  if (err == 0)
    err = uv_read_start((uv_stream_t*)&w->pipe, on_alloc, on_read);
  if (err == 0)
    err = send_frame(w, K_ONLINE, NULL, 0, NULL, 0, NULL);
  if (err != 0) {
    /* Freed by the close callback, without a disconnect event. */
    w->events.disconnect = NULL;
    w->pipe_state = PIPE_CLOSING;
    uv_close((uv_handle_t*)&w->pipe, on_pipe_closed);
    return err;
  }
  ignore_sigpipe();
  joined = true;
  self = w;
  *out = w;
  return 0;
}

/* --- both sides --------------------------------------------------------- */

unsigned weft_cluster_worker_id(const weft_cluster_worker_t* w) {
  return w != NULL ? w->id : 0;
}

/* The checks every post makes, then the frame. */
static int post_bytes(weft_cluster_worker_t* w, const void* bytes, size_t len) {
  int err;
  if (w->pipe_state != PIPE_OPEN)
    return WEFT_ECLOSED;
  if (len == 0)
    return WEFT_EDECODE;
  if (len > w->limit)
    return WEFT_EMSGSIZE;
  err = weft__msgpack_validate(bytes, len);
  if (err != 0)
    return err;
  return send_frame(w, K_MSG, bytes, len, NULL, 0, NULL);
}

int weft_cluster_worker_post(weft_cluster_worker_t* w,
                             const void* bytes,
                             size_t len) {
  if (w == NULL || bytes == NULL || len == 0)
    return WEFT_EINVAL;
  if (!weft__loop_on_thread(w->loop))
    return WEFT_EWRONGTHREAD;
  return post_bytes(w, bytes, len);
}

int weft_cluster_worker_post_msg(weft_cluster_worker_t* w, weft_msg_t** msg) {
  int err;
  if (w == NULL || msg == NULL || *msg == NULL ||
      (*msg)->state != WEFT__MSG_BUILDING)
    return WEFT_EINVAL;
  if (!weft__loop_on_thread(w->loop))
    return WEFT_EWRONGTHREAD;
  if ((*msg)->nxfer > 0)
    return WEFT_ENOTLOCAL;
  err = post_bytes(w, (*msg)->data, (*msg)->len);
  if (err != 0)
    return err;
  weft_msg_free(*msg);
  *msg = NULL;
  return 0;
}

int weft_cluster_worker_post_fmt(weft_cluster_worker_t* w,
                                 const char* fmt,
                                 ...) {
  weft_msg_t* msg = NULL;
  va_list ap;
  int err;
  if (w == NULL || fmt == NULL)
    return WEFT_EINVAL;
  if (!weft__loop_on_thread(w->loop))
    return WEFT_EWRONGTHREAD;
  err = weft_msg_new(&msg);
  if (err != 0)
    return err;
  va_start(ap, fmt);
  err = weft_msg_vpack(msg, fmt, ap);
  va_end(ap);
  if (err == 0)
    err = weft_cluster_worker_post_msg(w, &msg);
  weft_msg_free(msg); /* NULL once posted. */
  return err;
}

int weft_cluster_worker_disconnect(weft_cluster_worker_t* w) {
  if (w == NULL)
    return WEFT_EINVAL;
  if (!weft__loop_on_thread(w->loop))
    return WEFT_EWRONGTHREAD;
  if (w->pipe_state != PIPE_OPEN)
    return WEFT_ECLOSED;
  w->disconnect_asked = true;
  if (w->c != NULL)
    w->no_restart = true;
  else
    /* Tell the primary that this exit is meant (no restart on code 0);
     * if the write fails the pipe is over anyway. */
    (void)send_frame(w, K_DISCONNECT, NULL, 0, NULL, 0, NULL);
  close_pipe(w, true);
  return 0;
}

bool weft_cluster_worker_connected(const weft_cluster_worker_t* w) {
  return w != NULL && w->pipe_state == PIPE_OPEN;
}

int weft_cluster_worker_set_data(weft_cluster_worker_t* w, void* data) {
  if (w == NULL)
    return WEFT_EINVAL;
  w->data = data;
  return 0;
}

void* weft_cluster_worker_get_data(const weft_cluster_worker_t* w) {
  return w != NULL ? w->data : NULL;
}

/* --- listening sockets ---------------------------------------------------- */

int weft_cluster_listen(weft_loop_t* loop,
                        uv_tcp_t* server,
                        const char* host,
                        int port,
                        int backlog,
                        uv_connection_cb on_connection,
                        weft_cluster_listen_cb cb,
                        void* ctx) {
  struct sockaddr_storage ss;
  lreq_t* r;
  int err;
  if (loop == NULL || server == NULL || host == NULL ||
      on_connection == NULL || cb == NULL)
    return WEFT_EINVAL;
  if (!weft__loop_on_thread(loop))
    return WEFT_EWRONGTHREAD;
  err = parse_addr(host, port, &ss);
  if (err != 0)
    return err;
  if (!weft_cluster_is_primary()) {
    if (!joined)
      return WEFT_ENOTSTARTED;
    if (self == NULL || self->pipe_state != PIPE_OPEN)
      return WEFT_ECLOSED;
    if (self->loop != loop)
      return WEFT_EINVAL;
  }
  r = weft__xalloc(sizeof(*r));
  if (r == NULL)
    return WEFT_ENOMEM;
  memset(r, 0, sizeof(*r));
  r->loop = loop;
  r->server = server;
  r->backlog = backlog > 0 ? backlog : DEFAULT_BACKLOG;
  r->on_connection = on_connection;
  r->cb = cb;
  r->ctx = ctx;
  memcpy(r->host, host, strlen(host) + 1);
  if (weft_cluster_is_primary()) {
    weft__loop_handles(loop, 1);
    return listen_local(r, (struct sockaddr*)&ss);
  }
  r->id = ++self->next_req;
  if (self->rr) {
    /* The server gets its connections from the pipe: known from now on,
     * so that it asks once. */
    rrsrv_t* s;
    for (s = self->srvs; s != NULL; s = s->next) {
      if (s->server == server) {
        weft__xfree(r);
        return WEFT_EBUSY;
      }
    }
    s = weft__xalloc(sizeof(*s));
    if (s == NULL) {
      weft__xfree(r);
      return WEFT_ENOMEM;
    }
    memset(s, 0, sizeof(*s));
    s->server = server;
    s->on_connection = on_connection;
    s->id = r->id;
    s->next = self->srvs;
    self->srvs = s;
  }
  weft__loop_handles(loop, 1);
  {
    unsigned char b[12];
    put32(b, r->id);
    put32(b + 4, (uint32_t)port);
    put32(b + 8, (uint32_t)r->backlog);
    err = send_frame(self, K_LISTEN, b, sizeof(b), host, strlen(host), NULL);
    if (err != 0) {
      if (self->rr) {
        rrsrv_t* s = self->srvs;
        self->srvs = s->next;
        weft__xfree(s);
      }
      lreq_free(r);
      return err;
    }
    r->next = self->reqs;
    self->reqs = r;
  }
  return 0;
}

int weft_cluster_accept(uv_tcp_t* server, uv_tcp_t* client) {
  rrsrv_t* s = NULL;
  if (server == NULL || client == NULL)
    return WEFT_EINVAL;
  if (self != NULL && self->rr)
    for (s = self->srvs; s != NULL; s = s->next)
      if (s->server == server)
        break;
  if (s == NULL)
    return uv_accept((uv_stream_t*)server, (uv_stream_t*)client);
  if (self->handing != s)
    return WEFT_EAGAIN;
  /* Taken whatever the outcome: on an error libuv closes the descriptor. */
  self->handing = NULL;
  return uv_accept((uv_stream_t*)&self->pipe, (uv_stream_t*)client);
}
