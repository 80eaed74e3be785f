/* app_ready.h - what the node suites' other processes (node_app,
 * actor_remote_app, pool_node_app) share: once connected, flush (their
 * subscriptions reach the server) and print "ready", which
 * node_support.h's start_node_app waits for. */
#ifndef WEFT_TEST_APP_READY_H
#define WEFT_TEST_APP_READY_H

#include <stdio.h>

#include <weft/weft.h>

/* A weft_node_event_cb. */
static inline void print_ready_on_connect(weft_node_t* node,
                                          const weft_node_event_t* ev,
                                          void* ctx) {
  (void)ctx;
  if (ev->kind == WEFT_NODE_CONNECTED) {
    weft_node_flush(node, 5000); /* The subscriptions are in. */
    printf("ready\n");
    fflush(stdout);
  }
}

#endif /* WEFT_TEST_APP_READY_H */
