/* mandelbrot - render the Mandelbrot set on one thread, then on a worker
 * pool with weft_pool_for() over the image rows, print both times, the
 * speedup and a checksum of each image (they must be equal), and write the
 * image as a PNG (libpng).
 *
 *   mandelbrot [OUT.png]      (default mandelbrot.png)
 *
 * The pool's image is a shared buffer: each task gets its rows [y0, y1)
 * and the buffer, writes its rows in place, and returns nothing. No row is
 * copied between threads. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* clock_gettime */
#endif
#include <inttypes.h>
#include <png.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <weft/weft.h>

#define WIDTH 960
#define HEIGHT 720
#define MAX_ITER 500
#define ROWS_PER_TASK 8

/* Iterations of pixel (x, y) before escape, MAX_ITER if it never does. */
static uint16_t iterations(int x, int y) {
  /* The view: real -2.25..0.75, imaginary -1.125..1.125. */
  double cr = -2.25 + 3.0 * (double)x / WIDTH;
  double ci = -1.125 + 2.25 * (double)y / HEIGHT;
  double zr = 0, zi = 0;
  int i;
  for (i = 0; i < MAX_ITER; i++) {
    double zr2 = zr * zr, zi2 = zi * zi;
    if (zr2 + zi2 > 4.0)
      break;
    zi = 2.0 * zr * zi + ci;
    zr = zr2 - zi2 + cr;
  }
  return (uint16_t)i;
}

static void render_rows(uint16_t* img, int64_t y0, int64_t y1) {
  for (int64_t y = y0; y < y1; y++)
    for (int x = 0; x < WIDTH; x++)
      img[y * WIDTH + x] = iterations(x, (int)y);
}

/* The task: [y0, y1, image]. Runs on a pool thread. */
static int rows_task(weft_task_ctx_t* ctx, weft_msg_t* arg, weft_msg_t* res) {
  int64_t y0, y1;
  weft_shared_t* image = NULL;
  int err;
  (void)res;
  err = weft_msg_read(arg, "IIH", &y0, &y1, &image);
  if (err != 0)
    return err;
  if (weft_task_canceled(ctx)) {
    weft_shared_release(image);
    return WEFT_ECANCELED;
  }
  render_rows(weft_shared_data(image), y0, y1);
  weft_shared_release(image);
  return 0;
}

/* FNV-1a over the iteration counts. */
static uint64_t checksum(const uint16_t* img) {
  uint64_t h = 1469598103934665603ULL;
  const unsigned char* p = (const unsigned char*)img;
  for (size_t i = 0; i < sizeof(uint16_t) * WIDTH * HEIGHT; i++) {
    h ^= p[i];
    h *= 1099511628211ULL;
  }
  return h;
}

static void color(uint16_t it, png_byte* rgb) {
  double t;
  if (it >= MAX_ITER) {
    rgb[0] = rgb[1] = rgb[2] = 0;
    return;
  }
  t = (double)it / MAX_ITER;
  t = t < 0.25 ? t * 4.0 : 1.0; /* Most escape early: stretch that end. */
  rgb[0] = (png_byte)(9.0 * (1 - t) * t * t * t * 255);
  rgb[1] = (png_byte)(15.0 * (1 - t) * (1 - t) * t * t * 255);
  rgb[2] = (png_byte)(8.5 * (1 - t) * (1 - t) * (1 - t) * t * 255);
}

static int write_png(const char* path, const uint16_t* img) {
  FILE* f = fopen(path, "wb");
  png_structp png;
  png_infop info;
  png_bytep row;
  if (f == NULL)
    return -1;
  png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  info = png != NULL ? png_create_info_struct(png) : NULL;
  row = malloc(3 * WIDTH);
  if (png == NULL || info == NULL || row == NULL || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    free(row);
    fclose(f);
    return -1;
  }
  png_init_io(png, f);
  png_set_IHDR(png, info, WIDTH, HEIGHT, 8, PNG_COLOR_TYPE_RGB,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < HEIGHT; y++) {
    for (int x = 0; x < WIDTH; x++)
      color(img[y * WIDTH + x], row + 3 * x);
    png_write_row(png, row);
  }
  png_write_end(png, NULL);
  png_destroy_write_struct(&png, &info);
  free(row);
  return fclose(f) == 0 ? 0 : -1;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int fail(const char* what, int err) {
  fprintf(stderr, "mandelbrot: %s: %s\n", what, weft_strerror(err));
  return 1;
}

int main(int argc, char** argv) {
  const char* path = argc > 1 ? argv[1] : "mandelbrot.png";
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  weft_pool_opts_t opts = {0};
  weft_pool_t* pool = NULL;
  weft_shared_t* image = NULL;
  weft_pool_stats_t st;
  uint16_t* serial;
  uint64_t sum_serial, sum_pool;
  double t0, t_serial, t_pool, t_cold;
  int err;

  printf("image: %dx%d, at most %d iterations per pixel\n", WIDTH, HEIGHT,
         MAX_ITER);
  serial = malloc(sizeof(uint16_t) * WIDTH * HEIGHT);
  if (serial == NULL)
    return fail("malloc", WEFT_ENOMEM);
  t0 = now_ms();
  render_rows(serial, 0, HEIGHT);
  t_serial = now_ms() - t0;
  sum_serial = checksum(serial);
  printf("one thread: checksum %016" PRIx64 "\n", sum_serial);
  printf("  time: %.1f ms\n", t_serial);

  t0 = now_ms();
  opts.name = "mandel";
  opts.min_threads = cpus > 0 ? (unsigned)cpus : 1;
  opts.max_threads = opts.min_threads;
  err = weft_pool_new(&pool, &opts);
  if (err == 0)
    err = weft_pool_register(pool, "rows", rows_task, NULL);
  if (err != 0)
    return fail("weft_pool_new", err);
  t_cold = now_ms() - t0;
  err = weft_shared_new(&image, sizeof(uint16_t) * WIDTH * HEIGHT);
  if (err != 0)
    return fail("weft_shared_new", err);

  t0 = now_ms();
  err = weft_pool_for(pool, "rows", 0, HEIGHT, ROWS_PER_TASK, image);
  if (err != 0)
    return fail("weft_pool_for", err);
  t_pool = now_ms() - t0;
  sum_pool = checksum(weft_shared_data(image));
  printf("pool: checksum %016" PRIx64 "\n", sum_pool);
  printf("  time: %.1f ms on %ld threads (pool start: %.2f ms more)\n",
         t_pool, cpus, t_cold);
  printf("checksums agree: %s\n", sum_pool == sum_serial ? "yes" : "NO");
  printf("  speedup: %.2fx warm, %.2fx counting pool start (ideal %ld.00x)\n",
         t_serial / t_pool, t_serial / (t_pool + t_cold), cpus);

  err = weft_pool_stats(pool, &st);
  if (err != 0)
    return fail("weft_pool_stats", err);
  printf("pool stats: completed %" PRIu64 ", failed %" PRIu64
         ", canceled %" PRIu64 "\n",
         st.completed, st.failed, st.canceled);
  printf("  queue wait p50 %.0f us p99 %.0f us, run p50 %.0f us p99 %.0f "
         "us, utilization %.0f%%\n",
         st.wait_p50_us, st.wait_p99_us, st.run_p50_us, st.run_p99_us,
         st.utilization * 100.0);

  if (write_png(path, weft_shared_data(image)) != 0) {
    fprintf(stderr, "mandelbrot: could not write %s\n", path);
    return 1;
  }
  printf("wrote the image to a PNG file\n");

  weft_shared_release(image);
  free(serial);
  err = weft_pool_close(pool);
  if (err != 0)
    return fail("weft_pool_close", err);
  return sum_pool == sum_serial ? 0 : 1;
}
