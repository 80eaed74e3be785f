/* smoke.c - links against an installed weft and runs a worker round trip. */
#include <stdio.h>
#include <string.h>

#include <weft/weft.h>

static int failures;
static int64_t echoed = -1;
static int exit_code = -1;

/* The worker echoes one integer back, then lets its loop end. */
static void echo(weft_port_t* port, weft_msg_t* msg) {
  size_t len;
  const char* bytes = weft_msg_data(msg, &len);
  weft_port_post(port, bytes, len);
  weft_port_close(port);
}

static void entry(weft_loop_t* loop, void* arg) {
  (void)loop;
  (void)arg;
  weft_port_on_message(weft_parent_port(), echo);
}

static void on_message(weft_worker_t* w, weft_msg_t* msg) {
  const msgpack_object* o = weft_msg_object(msg);
  (void)w;
  if (o != NULL && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
    echoed = (int64_t)o->via.u64;
}

static void on_exit_cb(weft_worker_t* w, int code) {
  (void)w;
  exit_code = code;
}

/* A worker round trip through the installed library: threads, loops,
 * mailboxes and the allocator are all linked and working. */
static void worker_round_trip(void) {
  weft_loop_t* loop;
  weft_worker_t* w;
  weft_worker_opts_t opts = {0};
  static const char forty_two = 42; /* msgpack positive fixint */
  opts.events.message = on_message;
  opts.events.exit = on_exit_cb;
  if (weft_loop_new(&loop) != 0 ||
      weft_worker_spawn(&w, loop, entry, &opts) != 0 ||
      weft_worker_post(w, &forty_two, 1) != 0 || weft_loop_run(loop) != 0) {
    fprintf(stderr, "smoke: worker round trip failed to start\n");
    failures++;
    return;
  }
  weft_worker_free(w);
  if (weft_loop_free(loop) != 0) {
    fprintf(stderr, "smoke: weft_loop_free failed\n");
    failures++;
  }
  if (echoed != 42 || exit_code != 0) {
    fprintf(stderr, "smoke: echoed %lld, exit code %d\n", (long long)echoed,
            exit_code);
    failures++;
  }
}

static void expect_str(const char* what, const char* got, const char* want) {
  if (got == NULL || strcmp(got, want) != 0) {
    fprintf(stderr, "smoke: %s gave \"%s\", want \"%s\"\n", what,
            got ? got : "(null)", want);
    failures++;
  }
}

int main(void) {
  expect_str("weft_err_name(WEFT_ECLOSED)", weft_err_name(WEFT_ECLOSED),
             "ECLOSED");
  expect_str("weft_err_name(UV_ENOENT)", weft_err_name(UV_ENOENT), "ENOENT");
  expect_str("weft_err_name(-123456)", weft_err_name(-123456), "UNKNOWN");
  expect_str("weft_strerror(0)", weft_strerror(0), "success");
  const char* closed = weft_strerror(WEFT_ECLOSED);
  if (closed == NULL || strcmp(closed, "unknown error") == 0) {
    fprintf(stderr, "smoke: weft_strerror(WEFT_ECLOSED) is not named\n");
    failures++;
  }

  /* libuv and msgpack-c come with weft's public headers and link line. */
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  msgpack_packer pk;
  msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
  msgpack_pack_int(&pk, 42);
  if (sb.size != 1) {
    fprintf(stderr, "smoke: msgpack packed 42 into %zu bytes\n", sb.size);
    failures++;
  }
  msgpack_sbuffer_destroy(&sb);

  worker_round_trip();

  printf("weft %d.%d.%d with libuv %s: worker echoed %lld (%s)\n",
         WEFT_VERSION_MAJOR, WEFT_VERSION_MINOR, WEFT_VERSION_PATCH,
         uv_version_string(), (long long)echoed, failures ? "FAILED" : "ok");
  return failures ? 1 : 0;
}
