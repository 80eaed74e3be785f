/* test_login_api - samples/login_api driven over real TCP sockets: the
 * server binary is started on port 0 with two pool threads (and short
 * timeouts where a test waits them out), each test talks HTTP/1.1 to it
 * through plain blocking sockets (login_api_client.h), and every test ends
 * with a SIGTERM that must make the server exit 0 (in the ASan build that
 * also means: no leak, no use after free). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support.h"
#include "login_api_client.h"

TestSuite(login_api, .timeout = 240);

#ifndef LOGIN_API
Test(login_api, skipped) {
  cr_skip_test(
      "samples/login_api is not built (http-parser or libsodium "
      "missing, or WEFT_BUILD_SAMPLES=OFF)");
}
#else

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
  server_t s = START(COMMON, "--header-timeout-ms", "1000", "--idle-timeout-ms",
                     "20000");
  /* Before the connect: the server's header timer starts at its accept,
   * which may come before connect_to() returns here (a CI run saw the 408
   * 989 ms after a t0 taken after it). */
  uint64_t t0 = now_ns();
  client_t* c = connect_to(&s);
  send_str(c, "POST /login HTTP/1.1\r\nHost: t\r\nContent-Le");
  response_t r = last_response(c, NULL);
  uint64_t waited_ms = (now_ns() - t0) / 1000000;
  cr_assert_eq(r.status, 408, "%s", r.body);
  cr_assert(waited_ms >= 1000, "408 after %llu ms",
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
  sleep_ms(1200);
  cr_assert_eq(last_response(c, "GET /health HTTP/1.1\r\n").status, 408);

  /* So does a connection that sends nothing at all. */
  cr_assert_eq(last_response(connect_to(&s), NULL).status, 408);
  stop_server(&s);
}

Test(login_api, idle_keep_alive_closed_after_idle_timeout) {
  server_t s = START(COMMON, "--header-timeout-ms", "20000",
                     "--idle-timeout-ms", "1000");
  client_t* c = connect_to(&s);
  /* The idle time starts after the response: later than this. */
  uint64_t t0 = now_ns();
  send_str(c, health_request);
  response_t r = read_response(c);
  cr_assert_eq(r.status, 200);
  cr_assert(!r.close);
  expect_closed(c); /* No 408: nothing was asked. */
  uint64_t waited_ms = (now_ns() - t0) / 1000000;
  cr_assert(waited_ms >= 1000, "closed after %llu ms",
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
