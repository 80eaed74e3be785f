/* test_node_security.c - nodes over NATS with TLS, credentials and
 * per-node permissions (weft/node.h, docs/node.md "Security"). */
#include "node_support.h"

/* --- security: TLS, credentials, per-node permissions ---------------------- */

/* A CA, a server certificate for 127.0.0.1 signed by it, and a nats-server
 * that requires TLS and a user per node, each allowed to publish only on
 * the cluster's exports and its own presence, and to subscribe only to its
 * own subjects and the presence of others (replies go through
 * allow_responses). */
static char tls_dir[64];
static char ca_file[128];

static void sh(const char* fmt, ...) {
  char cmd[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof(cmd), fmt, ap);
  va_end(ap);
  cr_assert_eq(system(cmd), 0, "%s", cmd);
}

static void start_secure_server(void) {
  char conf[128];
  FILE* f;
  const char* extra[3];
  snprintf(tls_dir, sizeof(tls_dir), "/tmp/weft-tls-XXXXXX");
  cr_assert_not_null(mkdtemp(tls_dir));
  sh("cd %s && openssl req -x509 -newkey ec -pkeyopt "
     "ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem "
     "-days 1 -subj /CN=weft-test-ca 2>/dev/null",
     tls_dir);
  sh("cd %s && printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext && "
     "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
     "-keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null && "
     "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key "
     "-CAcreateserial -out server.pem -days 1 -extfile san.ext 2>/dev/null",
     tls_dir);
  snprintf(ca_file, sizeof(ca_file), "%s/ca.pem", tls_dir);
  snprintf(conf, sizeof(conf), "%s/nats.conf", tls_dir);
  f = fopen(conf, "w");
  cr_assert_not_null(f);
  fprintf(f,
          "tls { cert_file: \"%s/server.pem\", key_file: \"%s/server.key\" }\n"
          "authorization { users = [\n",
          tls_dir, tls_dir);
  for (const char* u = "abc"; *u != '\0'; u++)
    fprintf(f,
            "  { user: \"%c\", password: \"pw-%c\", permissions: {\n"
            "    publish: { allow: [\"weft.sec.*.p.>\", \"weft.sec.*.a\", "
            "\"weft.sec.presence.%c\", \"weft.sec.pool.>\", "
            "\"weft.sec.*.t.>\"] },\n"
            "    subscribe: { allow: [\"weft.sec.%c.>\", "
            "\"weft.sec.presence.*\", \"weft.sec.pool.>\"] },\n"
            "    allow_responses: true } }\n",
            *u, *u, *u, *u);
  fprintf(f, "] }\n");
  fclose(f);
  extra[0] = "-c";
  extra[1] = conf;
  extra[2] = NULL;
  cr_assert_eq(nats_server_start(&server, extra), 0, "nats-server started");
  /* tls:// from here on. */
  snprintf(server.url, sizeof(server.url), "tls://127.0.0.1:%d", server.port);
}

static void stop_secure_server(void) {
  nats_server_stop(&server);
  sh("rm -rf %s", tls_dir);
}

TestSuite(node_security, .init = start_secure_server,
          .fini = stop_secure_server, .timeout = 60);

static weft_node_opts_t secure_opts(const char* name, const char* password,
                                    events_t* ev) {
  weft_node_opts_t o = {0};
  o.servers = server.url;
  o.name = name;
  o.cluster = "sec";
  o.user = name;
  o.password = password;
  o.tls_ca = ca_file;
  o.heartbeat_ms = 100;
  o.max_reconnect = 2;
  o.reconnect_wait_ms = 20;
  o.on_event = on_event;
  o.ctx = ev;
  return o;
}

Test(node_security, nodes_with_credentials_call_each_other_over_tls) {
  weft_loop_t* loop = new_loop();
  events_t ea = {0}, eb = {0};
  weft_node_opts_t oa = secure_opts("a", "pw-a", &ea);
  weft_node_opts_t ob = secure_opts("b", "pw-b", &eb);
  weft_node_t *a = NULL, *b = NULL;
  weft_port_t *in, *out, *remote;
  answer_t ans;
  cr_assert_eq(weft_node_join(loop, &oa, &a), 0);
  cr_assert_eq(weft_node_join(loop, &ob, &b), 0);
  run_until_count(loop, &ea.up, 1); /* a sees b: heartbeats pass. */
  serve(loop, b, "plus", plus_one, NULL, &in, &out);
  cr_assert_eq(weft_node_port(a, "b", "plus", &remote), 0);
  settle(a, b);
  request_int(remote, 1, 10000, &ans);
  run_until(loop, &ans.done);
  cr_assert_eq(ans.status, 0, "%s", weft_err_name(ans.status));
  cr_assert_eq(ans.value, 2);
  cr_assert_eq(atomic_load(&ea.errors), 0, "no permission was refused");
  cr_assert_eq(atomic_load(&eb.errors), 0, "no permission was refused");
  weft_port_free(remote);
  cr_assert_eq(weft_node_leave(a), 0);
  cr_assert_eq(weft_node_leave(b), 0);
  free_channel(in, out);
  run_and_free(loop);
}

/* Without the cluster's credentials, or without TLS, a node never gets in. */
static void refused(const char* user, const char* password, bool tls) {
  weft_loop_t* loop = new_loop();
  events_t ev = {0};
  weft_node_opts_t o = secure_opts("a", password, &ev);
  weft_node_t* node = NULL;
  weft_port_t* p = NULL;
  char plain[64];
  o.user = user;
  if (!tls) {
    snprintf(plain, sizeof(plain), "nats://127.0.0.1:%d", server.port);
    o.servers = plain;
    o.tls_ca = NULL;
  }
  cr_assert_eq(weft_node_join(loop, &o, &node), 0);
  run_until(loop, &ev.closed);
  cr_assert_eq(atomic_load(&ev.connected), 0, "never connected");
  if (tls) {
    cr_assert_eq(atomic_load(&ev.errors), 1, "the refusal was reported");
    cr_assert_eq(ev.last_error, UV_EACCES, "%s", weft_err_name(ev.last_error));
  }
  cr_assert(!weft_node_connected(node));
  cr_assert_eq(weft_node_port(node, "b", "x", &p), WEFT_ENOTCONNECTED);
  cr_assert_eq(weft_node_leave(node), 0);
  run_and_free(loop);
}

Test(node_security, no_credentials_is_refused) {
  refused(NULL, NULL, true);
}

Test(node_security, a_wrong_password_is_refused) {
  refused("a", "pw-b", true);
}

Test(node_security, no_tls_is_refused) {
  refused("a", "pw-a", false);
}

/* Node a's credentials cannot speak for node c (its heartbeat), nor listen
 * to node b's replies: the server refuses both, the client hears of it,
 * and node b never sees a node "c" come up. */
typedef struct {
  atomic_int errors;
  int code;
} raw_events_t;

static void raw_event(void* ctx, int event, int code) {
  raw_events_t* r = ctx;
  if (event == WEFT__NATS_ERROR) {
    r->code = code;
    atomic_fetch_add(&r->errors, 1);
  }
}

static void count_msg(void* ctx, const weft__nats_msg_t* m) {
  (void)m;
  atomic_fetch_add((atomic_int*)ctx, 1);
}

Test(node_security, a_node_cannot_use_another_nodes_subjects) {
  weft_loop_t* loop = new_loop();
  events_t eb = {0};
  weft_node_opts_t ob = secure_opts("b", "pw-b", &eb);
  weft_node_t* b = NULL;
  weft__nats_opts_t o = {0};
  weft__nats_t* raw = NULL;
  weft__nats_sub_t* sub = NULL;
  raw_events_t re = {0};
  atomic_int got = 0;
  /* A heartbeat as node.c writes one (weft__wire_beat): it would make c
   * up at b if the server let it through. */
  unsigned char fake_beat[WEFT__WIRE_BEAT_LEN];
  const weft__wire_beat_t beat = {7, false, 0};
  weft__wire_beat(&beat, fake_beat);
  cr_assert_eq(weft_node_join(loop, &ob, &b), 0);
  run_until(loop, &eb.connected);
  o.servers = server.url;
  o.user = "a";
  o.password = "pw-a";
  o.tls_ca = ca_file;
  o.max_reconnect = 1;
  cr_assert_eq(weft__nats_connect(&o, raw_event, &re, &raw), 0);
  cr_assert_eq(weft__nats_flush(raw, 5000), 0, "a's credentials connect");
  /* Speak for c: refused. */
  cr_assert_eq(weft__nats_publish(raw, "weft.sec.presence.c", NULL, fake_beat,
                                  sizeof(fake_beat), NULL),
               0, "buffered; the server refuses it");
  /* Listen to b's replies: refused. */
  cr_assert_eq(weft__nats_subscribe(raw, "weft.sec.b.r.*", NULL, count_msg,
                                    NULL, &got, &sub),
               0);
  weft__nats_flush(raw, 5000);
  while (atomic_load(&re.errors) < 2)
    uv_sleep(10);
  cr_assert_eq(re.code, UV_EACCES, "%s", weft_err_name(re.code));
  /* b never saw "c": run through several heartbeat periods. */
  cr_assert_eq(weft_node_flush(b, 5000), 0);
  run_for(loop, 500);
  cr_assert(!weft_node_is_up(b, "c"), "the forged heartbeat did not pass");
  cr_assert_eq(atomic_load(&got), 0);
  weft__nats_unsubscribe(sub);
  weft__nats_close(raw);
  cr_assert_eq(weft_node_leave(b), 0);
  run_and_free(loop);
}

