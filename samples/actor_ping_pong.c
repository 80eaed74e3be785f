/* actor_ping_pong - two actors bat a counter back and forth: the hello
 * world of actors (Savina's PingPong), with weft's light actors.
 *
 * "pong" registers under a name and sends every ping back to its sender;
 * "ping" starts when main asks it to and answers main once the count has
 * run out. Main is a plain thread: it waits with a blocking call. */
#include <stdio.h>
#include <stdlib.h>
#include <weft/weft.h>

typedef struct {
  weft_actor_id pong;
  int64_t left, pongs;
  weft_reply_t* done; /* main's request, answered at the end */
} ping_t;

static int pong(weft_actor_t* self, void* state, weft_msg_t* msg) {
  size_t len;
  const char* bytes = weft_msg_data(msg, &len);
  (void)self, (void)state;
  return weft_actor_send(weft_actor_sender(msg), bytes, len);
}

static int ping(weft_actor_t* self, void* state, weft_msg_t* msg) {
  ping_t* p = state;
  (void)self;
  if (weft_msg_is_request(msg)) /* main: "go" */
    weft_msg_take_reply(msg, &p->done);
  else
    p->pongs++;
  if (p->left == 0)
    return weft_reply_send_fmt(p->done, "I", p->pongs);
  return weft_actor_send_fmt(p->pong, "I", p->left--);
}

int main(int argc, char** argv) {
  int64_t n = argc > 1 ? atoll(argv[1]) : 100000, pongs = 0;
  ping_t st = {0, n, 0, NULL};
  weft_actor_system_t* sys;
  weft_actor_opts_t named = {.name = "pong"};
  weft_actor_id p;
  weft_msg_t* done;
  uint64_t t0;

  if (weft_actor_system_new(&sys, NULL) != 0) /* a scheduler per CPU */
    return 1;
  weft_actor_spawn(sys, pong, NULL, &named, NULL);
  st.pong = weft_actor_whereis(sys, "pong");
  printf("pong registered as \"pong\": %s\n", st.pong ? "yes" : "no");
  weft_actor_spawn(sys, ping, &st, NULL, &p);

  t0 = uv_hrtime();
  if (weft_actor_call(p, "\xa2go", 3, 0, &done) != 0)
    return 1;
  weft_msg_read(done, "I", &pongs);
  printf("ping: %lld pings sent, %lld pongs back\n", (long long)n,
         (long long)pongs);
  printf("%.0f round trips/s\n",
         (double)pongs * 1e9 / (double)(uv_hrtime() - t0));
  weft_msg_free(done);
  weft_actor_system_free(sys);
  return pongs == n ? 0 : 1;
}
