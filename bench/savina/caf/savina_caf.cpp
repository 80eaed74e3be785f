// savina_caf <workload> [CAF options, e.g. --scheduler.max-threads=2]
//
// The Savina workloads of bench/savina/README.md in CAF 0.17 (Debian's
// libcaf-dev), the peer that weft's actors are measured against. Each run
// times itself from the first spawn to the driver's completion message
// (steady_clock), checks its result and prints one line on stdout:
//   RESULT savina.<workload> <value> <unit>
// and exits 1 when a check fails (2 on bad usage). The driver is a
// scoped_actor on the main thread, as Savina's driver is the main thread.
//
// SAVINA_SCALE=k divides every size by k (quick checks only; the table uses
// 1). SAVINA_CHECK_OFFBY=1 adds one to every expected value, so that each
// workload's check must fail: that is how the checks were seen to fail.

#include <caf/all.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <unistd.h>
#include <vector>

using namespace caf;

namespace {

// Atoms: at most 10 characters in CAF 0.17.
using start_atom = atom_constant<atom("start")>;
using ping_atom = atom_constant<atom("ping")>;
using pong_atom = atom_constant<atom("pong")>;
using self_atom = atom_constant<atom("selfping")>;
using stop_atom = atom_constant<atom("stop")>;
using done_atom = atom_constant<atom("done")>;
using inc_atom = atom_constant<atom("inc")>;
using next_atom = atom_constant<atom("next")>;
using token_atom = atom_constant<atom("token")>;
using exit_atom = atom_constant<atom("exit")>;
using work_atom = atom_constant<atom("work")>;
using meet_atom = atom_constant<atom("meet")>;
using change_atom = atom_constant<atom("change")>;
using count_atom = atom_constant<atom("count")>;

long scale = 1;
long offby = 0;

long sized(long n) {
  long v = n / scale;
  return v < 1 ? 1 : v;
}

using clk = std::chrono::steady_clock;

double ms_since(clk::time_point t0) {
  return std::chrono::duration<double, std::milli>(clk::now() - t0).count();
}

int fail(const char* what, long long got, long long want) {
  std::fprintf(stderr, "savina_caf: %s: got %lld, expected %lld\n", what, got,
               want);
  return 1;
}

void result_ms(const char* name, double ms) {
  std::printf("RESULT savina.%s %.1f ms\n", name, ms);
  std::fflush(stdout);
}

// Savina's performComputation(theta): sin(theta)^2, which must be positive
// (the check defeats dead-code elimination). theta comes in the message so
// that the compiler cannot fold it.
double perform_computation(double theta) {
  double s = std::sin(theta);
  double res = s * s;
  if (res <= 0) {
    std::fprintf(stderr, "savina_caf: unrealistic res %g\n", res);
    std::abort();
  }
  return res;
}

const double theta = 37.2;

// -- pingpong ------------------------------------------------------------
// Savina PingPong: ping sends ping to pong, pong answers pong; on pong, ping
// sends itself a ping message (Savina's PingMessage) which sends the next
// ping; after N round trips ping stops pong, which reports its count.

behavior pong_fun(event_based_actor* self, actor driver) {
  auto count = std::make_shared<long>(0);
  return {
    [=](ping_atom) {
      ++*count;
      return pong_atom::value;  // the reply goes to ping as a message
    },
    [=](stop_atom) {
      self->send(driver, done_atom::value, *count);
      self->quit();
    },
  };
}

behavior ping_fun(event_based_actor* self, long n, actor pong) {
  auto left = std::make_shared<long>(n);
  return {
    [=](start_atom) {
      self->send(pong, ping_atom::value);
      --*left;
    },
    [=](self_atom) {
      self->send(pong, ping_atom::value);
      --*left;
    },
    [=](pong_atom) {
      if (*left > 0) {
        self->send(self, self_atom::value);
      } else {
        self->send(pong, stop_atom::value);
        self->quit();
      }
    },
  };
}

int run_pingpong(actor_system& sys) {
  const long n = sized(1000000);
  scoped_actor driver{sys};
  auto t0 = clk::now();
  auto pong = sys.spawn(pong_fun, actor{driver});
  auto ping = sys.spawn(ping_fun, n, pong);
  driver->send(ping, start_atom::value);
  long got = -1;
  driver->receive([&](done_atom, long c) { got = c; });
  double ms = ms_since(t0);
  if (got != n + offby)
    return fail("pingpong: pings answered", got, n + offby);
  result_ms("pingpong", ms);
  return 0;
}

// -- counting ------------------------------------------------------------
// Savina Counting: the producer sends N increments to the counter, then asks
// for the count (the counter's reply), checks it and tells the driver.

behavior counter_fun(event_based_actor* self) {
  auto count = std::make_shared<long>(0);
  return {
    [=](inc_atom) { ++*count; },
    [=](get_atom) {
      self->quit();
      return *count;
    },
  };
}

behavior producer_fun(event_based_actor* self, long n, actor counter,
                      actor driver) {
  return {
    [=](start_atom) {
      for (long i = 0; i < n; ++i)
        self->send(counter, inc_atom::value);
      self->send(counter, get_atom::value);
    },
    [=](long count) {
      self->send(driver, done_atom::value, count);
      self->quit();
    },
  };
}

int run_counting(actor_system& sys) {
  const long n = sized(2000000);
  scoped_actor driver{sys};
  auto t0 = clk::now();
  auto counter = sys.spawn(counter_fun);
  auto producer = sys.spawn(producer_fun, n, counter, actor{driver});
  driver->send(producer, start_atom::value);
  long got = -1;
  driver->receive([&](done_atom, long c) { got = c; });
  double ms = ms_since(t0);
  if (got != n + offby)
    return fail("counting: count", got, n + offby);
  result_ms("counting", ms);
  return 0;
}

// -- threadring ----------------------------------------------------------
// Savina ThreadRing: 500 actors in a ring; a token carrying the hops left
// goes round; the actor that receives it at 0 sends an exit message round
// the ring, each actor reports how many tokens it saw and quits. The driver
// checks that the reports sum to hops + 1 (the token's receipts).

behavior ring_fun(event_based_actor* self, actor driver) {
  auto next = std::make_shared<actor>();
  auto seen = std::make_shared<long>(0);
  auto ring = std::make_shared<int>(0);
  return {
    [=](next_atom, actor a, int n) {
      *next = std::move(a);
      *ring = n;
    },
    [=](token_atom, long left) {
      ++*seen;
      if (left > 0)
        self->send(*next, token_atom::value, left - 1);
      else
        self->send(*next, exit_atom::value, *ring - 1);
    },
    [=](exit_atom, int left) {
      self->send(driver, done_atom::value, *seen);
      if (left > 0)
        self->send(*next, exit_atom::value, left - 1);
      *next = actor{};
      self->quit();
    },
  };
}

int run_threadring(actor_system& sys) {
  const int n = 500;
  const long hops = sized(2000000);
  scoped_actor driver{sys};
  auto t0 = clk::now();
  std::vector<actor> ring;
  ring.reserve(n);
  for (int i = 0; i < n; ++i)
    ring.push_back(sys.spawn(ring_fun, actor{driver}));
  for (int i = 0; i < n; ++i)
    driver->send(ring[i], next_atom::value, ring[(i + 1) % n], n);
  driver->send(ring[0], token_atom::value, hops);
  long sum = 0;
  int i = 0;
  driver->receive_for(i, n)([&](done_atom, long seen) { sum += seen; });
  double ms = ms_since(t0);
  if (sum != hops + 1 + offby)
    return fail("threadring: token receipts", sum, hops + 1 + offby);
  result_ms("threadring", ms);
  return 0;
}

// -- fjthroughput --------------------------------------------------------
// Savina Fork-Join throughput: A actors, the driver sends each N messages,
// round-robin; each message does performComputation(37.2); an actor that
// has processed N tells the driver (its count) and quits.

behavior fj_worker_fun(event_based_actor* self, long n, actor driver) {
  auto count = std::make_shared<long>(0);
  return {
    [=](work_atom, double th) {
      perform_computation(th);
      if (++*count == n) {
        self->send(driver, done_atom::value, *count);
        self->quit();
      }
    },
  };
}

int run_fjthroughput(actor_system& sys) {
  const int a = 60;
  const long n = sized(100000);
  scoped_actor driver{sys};
  auto t0 = clk::now();
  std::vector<actor> ws;
  ws.reserve(a);
  for (int i = 0; i < a; ++i)
    ws.push_back(sys.spawn(fj_worker_fun, n, actor{driver}));
  for (long m = 0; m < n; ++m)
    for (auto& w : ws)
      driver->send(w, work_atom::value, theta);
  long total = 0;
  int i = 0;
  driver->receive_for(i, a)([&](done_atom, long c) { total += c; });
  double ms = ms_since(t0);
  if (total != a * n + offby)
    return fail("fjthroughput: messages processed", total, a * n + offby);
  result_ms("fjthroughput", ms);
  return 0;
}

// -- fjcreation ----------------------------------------------------------
// Savina Fork-Join creation: N actors, each created and sent one message
// that does performComputation(37.2), then it quits. Savina waits for the
// actors' termination; here each answers the driver before quitting and the
// driver counts the answers.

behavior fj_once_fun(event_based_actor* self, actor driver) {
  return {
    [=](work_atom, double th) {
      perform_computation(th);
      self->send(driver, done_atom::value);
      self->quit();
    },
  };
}

int run_fjcreation(actor_system& sys) {
  const long n = sized(200000);
  scoped_actor driver{sys};
  actor d{driver};
  auto t0 = clk::now();
  for (long i = 0; i < n; ++i) {
    auto a = sys.spawn(fj_once_fun, d);
    driver->send(a, work_atom::value, theta);
  }
  long got = 0;
  driver->receive_for(got, n)([&](done_atom) {});
  double ms = ms_since(t0);
  if (got != n + offby)
    return fail("fjcreation: answers", got, n + offby);
  result_ms("fjcreation", ms);
  return 0;
}

// -- big -----------------------------------------------------------------
// Savina Big: W actors; each sends N pings, one at a time, to neighbours
// picked by Savina's PseudoRandom seeded with the actor's index; each ping
// is answered with a pong, the next ping goes on the pong. An actor done
// with its N pings tells the sink (with its count of pongs that came from
// an unexpected actor); when all W have, the sink tells the driver and stops
// them.

struct pseudo_random {  // Savina's PseudoRandom
  long value;
  long next_long() {
    value = ((value * 1309) + 13849) & 65535;
    return value;
  }
  int next_int(int exclusive_max) {
    return static_cast<int>(next_long()) % exclusive_max;
  }
};

using peers_t = std::shared_ptr<std::vector<actor>>;

behavior big_fun(event_based_actor* self, int id, long n, actor sink,
                 peers_t peers) {
  struct st {
    long pings = 0;
    int expected = -1;
    long wrong = 0;
    pseudo_random rnd;
  };
  auto s = std::make_shared<st>();
  s->rnd.value = id;
  return {
    [=](ping_atom, int from) {
      self->send((*peers)[from], pong_atom::value, id);
    },
    [=](pong_atom, int from) {
      if (from != s->expected)
        ++s->wrong;
      if (s->pings == n) {
        self->send(sink, done_atom::value, s->pings, s->wrong);
      } else {
        int target = s->rnd.next_int(static_cast<int>(peers->size()));
        s->expected = target;
        self->send((*peers)[target], ping_atom::value, id);
        ++s->pings;
      }
    },
    [=](exit_atom) { self->quit(); },
  };
}

behavior sink_fun(event_based_actor* self, int w, actor driver,
                  peers_t peers) {
  struct st {
    int finished = 0;
    long pings = 0;
    long wrong = 0;
  };
  auto s = std::make_shared<st>();
  return {
    [=](done_atom, long pings, long wrong) {
      s->pings += pings;
      s->wrong += wrong;
      if (++s->finished == w) {
        for (auto& a : *peers)
          self->send(a, exit_atom::value);
        self->send(driver, done_atom::value, s->pings, s->wrong);
        self->quit();
      }
    },
  };
}

int run_big(actor_system& sys) {
  const int w = 120;
  const long n = sized(20000);
  scoped_actor driver{sys};
  auto t0 = clk::now();
  auto peers = std::make_shared<std::vector<actor>>();
  peers->reserve(w);
  auto sink = sys.spawn(sink_fun, w, actor{driver}, peers);
  for (int i = 0; i < w; ++i)
    peers->push_back(sys.spawn(big_fun, i, n, sink, peers));
  // The vector is complete before any actor reads it: the sends below
  // publish it (a mailbox enqueue happens before the receiver's dequeue).
  for (auto& a : *peers)
    driver->send(a, pong_atom::value, -1);
  long pings = -1, wrong = -1;
  driver->receive([&](done_atom, long p, long wr) {
    pings = p;
    wrong = wr;
  });
  double ms = ms_since(t0);
  peers.reset();
  if (wrong != offby)
    return fail("big: pongs from an unexpected actor", wrong, offby);
  if (pings != w * n)
    return fail("big: pings", pings, w * n);
  result_ms("big", ms);
  return 0;
}

// -- chameneos -----------------------------------------------------------
// Savina Chameneos: a mall and C chameneos of colours i % 3; each chameneo
// asks the mall to meet; the mall pairs two waiting ones by forwarding the
// second's request to the first, which takes the complement colour, tells
// the other (change) and both ask again; after M meetings the mall answers
// every request with exit, and each chameneo reports its meetings and quits.
// The driver checks that they sum to 2 * M.

enum color { red = 0, yellow = 1, blue = 2, faded = 3 };

int complement(int c, int other) {
  if (c == faded || other == faded)
    return faded;
  if (c == other)
    return c;
  return 3 - c - other;  // the third colour
}

behavior chameneo_fun(event_based_actor* self, actor mall, int colour) {
  struct st {
    long meetings = 0;
    int colour;
  };
  auto s = std::make_shared<st>();
  s->colour = colour;
  self->send(mall, meet_atom::value, colour, actor_cast<actor>(self));
  return {
    [=](meet_atom, int other, actor from) {
      s->colour = complement(s->colour, other);
      ++s->meetings;
      self->send(from, change_atom::value, s->colour);
      self->send(mall, meet_atom::value, s->colour, actor_cast<actor>(self));
    },
    [=](change_atom, int c) {
      s->colour = c;
      ++s->meetings;
      self->send(mall, meet_atom::value, s->colour, actor_cast<actor>(self));
    },
    [=](exit_atom) {
      s->colour = faded;
      self->send(mall, count_atom::value, s->meetings);
      self->quit();
    },
  };
}

behavior mall_fun(event_based_actor* self, long m, int c, actor driver) {
  struct st {
    long left;
    actor waiting;
    long sum = 0;
    int faded = 0;
  };
  auto s = std::make_shared<st>();
  s->left = m;
  auto me = actor_cast<actor>(self);
  for (int i = 0; i < c; ++i)
    self->spawn(chameneo_fun, me, i % 3);
  return {
    [=](meet_atom, int colour, actor from) {
      if (s->left > 0) {
        if (!s->waiting) {
          s->waiting = std::move(from);
        } else {
          --s->left;
          self->send(s->waiting, meet_atom::value, colour, std::move(from));
          s->waiting = actor{};
        }
      } else {
        self->send(from, exit_atom::value);
      }
    },
    [=](count_atom, long meetings) {
      s->sum += meetings;
      if (++s->faded == c) {
        self->send(driver, done_atom::value, s->sum);
        self->quit();
      }
    },
  };
}

int run_chameneos(actor_system& sys) {
  const int c = 100;
  const long m = sized(200000);
  scoped_actor driver{sys};
  auto t0 = clk::now();
  sys.spawn(mall_fun, m, c, actor{driver});
  long sum = -1;
  driver->receive([&](done_atom, long s) { sum = s; });
  double ms = ms_since(t0);
  if (sum != 2 * m + offby)
    return fail("chameneos: meetings", sum, 2 * m + offby);
  result_ms("chameneos", ms);
  return 0;
}

// -- idle ----------------------------------------------------------------
// Memory per idle actor: RSS (from /proc/self/statm) before and after
// spawning N actors that only wait; each is sent one message and answers it
// before the second reading, so every actor has started and run once. The
// handles the driver keeps (8 bytes each) are included.

long rss_bytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f)
    return -1;
  long size = 0, resident = 0;
  int got = std::fscanf(f, "%ld %ld", &size, &resident);
  std::fclose(f);
  if (got != 2)
    return -1;
  return resident * sysconf(_SC_PAGESIZE);
}

behavior idle_fun(event_based_actor*) {
  return {
    [](ping_atom) { return pong_atom::value; },
  };
}

int run_idle(actor_system& sys) {
  const long n = sized(1000000);
  scoped_actor driver{sys};
  long before = rss_bytes();
  std::vector<actor> all;
  all.reserve(n);
  for (long i = 0; i < n; ++i) {
    all.push_back(sys.spawn(idle_fun));
    driver->send(all.back(), ping_atom::value);
  }
  long got = 0;
  driver->receive_for(got, n)([&](pong_atom) {});
  long after = rss_bytes();
  if (before < 0 || after < 0)
    return fail("idle: /proc/self/statm", -1, 0);
  if (got != n + offby)
    return fail("idle: answers", got, n + offby);
  double per = double(after - before) / double(n);
  std::fprintf(stderr, "idle: %ld actors, RSS %ld -> %ld bytes\n", n, before,
               after);
  std::printf("RESULT savina.idle %.0f B/actor\n", per);
  std::fflush(stdout);
  for (auto& a : all)
    anon_send_exit(a, exit_reason::user_shutdown);
  return 0;
}

struct workload {
  const char* name;
  int (*run)(actor_system&);
};

const workload workloads[] = {
  {"pingpong", run_pingpong},         {"counting", run_counting},
  {"threadring", run_threadring},     {"fjthroughput", run_fjthroughput},
  {"fjcreation", run_fjcreation},     {"big", run_big},
  {"chameneos", run_chameneos},       {"idle", run_idle},
};

} // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: savina_caf <workload> [caf options]\n"
                         "workloads:");
    for (auto& w : workloads)
      std::fprintf(stderr, " %s", w.name);
    std::fprintf(stderr, "\n");
    return 2;
  }
  const workload* wl = nullptr;
  for (auto& w : workloads)
    if (std::strcmp(w.name, argv[1]) == 0)
      wl = &w;
  if (!wl) {
    std::fprintf(stderr, "savina_caf: unknown workload %s\n", argv[1]);
    return 2;
  }
  if (const char* e = std::getenv("SAVINA_SCALE"))
    scale = std::max(1L, std::atol(e));
  if (const char* e = std::getenv("SAVINA_CHECK_OFFBY"))
    offby = std::atol(e);
  // CAF sees argv without the workload.
  std::vector<char*> args;
  args.push_back(argv[0]);
  for (int i = 2; i < argc; ++i)
    args.push_back(argv[i]);
  actor_system_config cfg;
  if (auto err = cfg.parse(static_cast<int>(args.size()), args.data())) {
    std::fprintf(stderr, "savina_caf: bad CAF option: %s\n",
                 to_string(err).c_str());
    return 2;
  }
  if (cfg.cli_helptext_printed)
    return 0;
  int rc;
  {
    actor_system sys{cfg};
    std::fprintf(stderr, "caf %s: %zu scheduler threads\n", wl->name,
                 sys.scheduler().num_workers());
    rc = wl->run(sys);
  }
  return rc;
}
