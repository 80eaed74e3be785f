/* spawn_entry.h - the worker entry the remote spawn tests register
 * (test_node_spawn.c, test_node_cluster.c, node_app.c): "adder", whose
 * workerData is an integer k. On its parent port it answers a request
 * with an integer n with n + k, a request with nil with [k, pid] (which
 * process runs it), and exits on a post of -1. */
#ifndef WEFT_TEST_SPAWN_ENTRY_H
#define WEFT_TEST_SPAWN_ENTRY_H

#include <unistd.h>

#include <weft/weft.h>

static inline int64_t spawn_entry_int(const msgpack_object* o) {
  if (o != NULL && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
    return (int64_t)o->via.u64;
  if (o != NULL && o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
    return o->via.i64;
  return 0;
}

static inline void adder_message(weft_port_t* p, weft_msg_t* m) {
  int64_t k = spawn_entry_int(weft_worker_data());
  const msgpack_object* o = weft_msg_object(m);
  weft_reply_t* r = NULL;
  (void)p;
  if (weft_msg_take_reply(m, &r) != 0) {
    if (spawn_entry_int(o) == -1)
      weft_worker_exit(0);
    return;
  }
  if (o != NULL && o->type == MSGPACK_OBJECT_NIL)
    weft_reply_send_fmt(r, "Ii", k, (int)getpid());
  else
    weft_reply_send_fmt(r, "I", spawn_entry_int(o) + k);
}

static inline void adder_main(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  weft_port_on_message(weft_parent_port(), adder_message);
}

#endif /* WEFT_TEST_SPAWN_ENTRY_H */
