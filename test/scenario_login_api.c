/* scenario_login_api - samples/login_api under concurrent load, as a plain
 * program so that the TSan build runs it too (the server binary is built
 * with the same sanitizer, and a TSan report makes it exit non-zero):
 * connections with pipelined logins and health checks at once, a client
 * that resets its connection while its login hashes, then SIGTERM, which
 * must end the server with exit code 0. Once as one process, once as a
 * cluster of two (--workers 2). The behaviours themselves are checked one
 * by one in test_login_api.c. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "support.h"
#include "login_api_client.h"

#ifdef LOGIN_API
#define CONNS 6

static void run(const char* const* args) {
  server_t s = start_server_argv(args);
  client_t* conns[CONNS];
  char req[4096];

  /* Each connection: a good login, a wrong one, /health and another good
   * one, pipelined in one send. */
  strcpy(req, login_request("user=alice&password=wonderland", NULL));
  strcat(req, login_request("user=bob&password=wrong", NULL));
  strcat(req, health_request);
  strcat(req, login_request("user=carol&password=correct+horse+battery+staple",
                            NULL));
  for (int i = 0; i < CONNS; i++) {
    conns[i] = connect_to(&s);
    send_str(conns[i], req);
  }
  /* A client that leaves with a reset while its login hashes. */
  client_t* gone = connect_to(&s);
  send_str(gone, login_request("user=alice&password=wonderland", NULL));
  struct linger lg = {1, 0};
  setsockopt(gone->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  client_close(gone);

  static const int want[] = {200, 401, 200, 200};
  for (int i = 0; i < CONNS; i++) {
    for (int k = 0; k < 4; k++) {
      response_t r = read_response(conns[i]);
      CHECK(r.status == want[k], "connection %d, response %d: %d %s", i, k,
            r.status, r.body);
    }
    client_close(conns[i]);
  }
  stop_server(&s);
}
#endif

int main(void) {
#ifndef LOGIN_API
  printf("scenario_login_api: samples/login_api is not built: skipped\n");
#else
  run((const char* const[]){"--port", "0", "--threads", "2", NULL});
  run((const char* const[]){"--port", "0", "--workers", "2", "--threads", "1",
                            NULL});
  printf("scenario_login_api: ok\n");
#endif
  return 0;
}
