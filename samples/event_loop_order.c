/* event_loop_order - Node's event-loop ordering, in C with weft.
 *
 * A "login request" arrives as a message (an I/O callback). Its handler
 * queues a 0 ms timeout and a microtask, then returns. As in Node, the
 * synchronous handler finishes first, then the microtask runs (drained right
 * after the callback), and the timeout comes last. */
#include <stdio.h>
#include <weft/weft.h>

static void on_timeout(weft_loop_t* loop, void* arg) {
  weft_port_t* port = arg;
  (void)loop;
  printf("4. timeout\n");
  weft_port_close(port); /* Done: let the loop end. */
}

static void on_microtask(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  printf("3. microtask\n");
}

static void on_login(weft_port_t* port, weft_msg_t* msg) {
  const msgpack_object* o = weft_msg_object(msg);
  weft_loop_t* loop = weft_loop_current();
  printf("1. request received (user \"%.*s\")\n", (int)o->via.str.size,
         o->via.str.ptr);
  weft_set_timeout(loop, 0, on_timeout, port, NULL);
  weft_queue_microtask(loop, on_microtask, NULL);
  printf("2. end of handler\n");
}

int main(void) {
  weft_loop_t* loop;
  weft_port_t *server, *client;
  /* msgpack for the string "alice". */
  static const char login[] = {(char)0xa5, 'a', 'l', 'i', 'c', 'e'};
  int err = weft_loop_new(&loop);
  if (err == 0)
    err = weft_channel_new(loop, &server, &client);
  if (err != 0) {
    fprintf(stderr, "setup: %s\n", weft_strerror(err));
    return 1;
  }
  weft_port_on_message(server, on_login);
  weft_port_post(client, login, sizeof(login));
  weft_loop_run(loop);
  weft_port_free(server);
  weft_port_free(client);
  err = weft_loop_free(loop);
  if (err != 0) {
    fprintf(stderr, "weft_loop_free: %s\n", weft_strerror(err));
    return 1;
  }
  return 0;
}
