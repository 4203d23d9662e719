// jemalloc_tenants: a multi-tenant service on asio::thread_pool where every tenant owns a jemalloc
// arena. A task of a tenant runs with its worker bound to the tenant's arena (`thread.arena`), so
// its plain malloc/new come from that arena; lazymm keeps the binding lazily across context-free
// work, the holder-side undo flushes the thread's tcache and rebinds arena 0, and the teardown is
// `arena.<i>.destroy`, which must return 0 every time (EFAULT: some thread is still bound to it).
// Destroyed arenas' memory is made inaccessible by the extent hooks (arenas.hpp), so a use after
// destroy faults and is reported. Tenants are created and retired while the pool runs; some
// workers park, and a nudge wakes them to acknowledge a steal.
//
// Default run (the ctest): lazymm implicit and batched<implicit>, with every check; exit 1 if a
// check fails, 3 on an access to destroyed arena memory.
// --bench: the same service under each way of binding (lazymm; rebinding per task; a
// shared_ptr lazy hold; rebind + flush per task), printing `jemalloc_bench {json}` lines.
// --violate: context-free work keeps an allocation made while a tenant's arena is bound lazily
// (the rule of docs/integration.md, "Thread-bound state", broken): the run must die reporting an
// access to destroyed arena memory.
#include <asio.hpp>  // first: lazymm's headers must survive whatever a runtime's headers define

#include "arenas.hpp"

#include <lazymm/lazymm.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using clk = std::chrono::steady_clock;
using arenas::runtime_allocator;

std::int64_t now_ns() { return clk::now().time_since_epoch().count(); }

// ---- options -----------------------------------------------------------------------------------
struct options {
  unsigned threads = 2, tenants = 4, tasks = 20000, churn = 64, cf_percent = 30, max_run = 7;
  unsigned duration_ms = 1000, teardown_rounds = 40, park_tick_ms = 10;
  bool bench = false, violate = false, inject_race = false;
  std::string modes = "all";
};

[[noreturn]] void usage(int rc) {
  std::fprintf(rc ? stderr : stdout,
               "usage: jemalloc_tenants [--threads N] [--tenants N] [--tasks N] [--churn N] [--cf-percent P]\n"
               "         [--max-run N] [--inject-race] [--violate]\n"
               "       jemalloc_tenants --bench [--duration-ms N] [--teardown-rounds N] [--park-tick-ms N]\n"
               "         [--modes all|lazymm.implicit,lazymm.batched,scoped,shared_ptr,flush] [the options above]\n"
               "  --threads 2  --tenants 4 (alive at once)  --tasks 20000 (check run)  --churn 64 (retire and create\n"
               "  a tenant every N tasks)  --cf-percent 30 (context-free tasks)  --max-run 7 (a tenant's tasks arrive\n"
               "  in runs of 1..N; 1: no locality)  --duration-ms 1000 (each timed run)  --teardown-rounds 40\n"
               "  --park-tick-ms 10 (a parked worker's own wake-up period when nobody nudges it)\n");
  std::exit(rc);  // NOLINT(concurrency-mt-unsafe): before any thread starts
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "-h" || a == "--help") usage(0);
    if (a == "--bench") { o.bench = true; continue; }
    if (a == "--violate") { o.violate = true; continue; }
    if (a == "--inject-race") { o.inject_race = true; continue; }
    if (a == "--modes" && i + 1 < argc) { o.modes = argv[++i]; continue; }
    unsigned* v = a == "--threads" ? &o.threads : a == "--tenants" ? &o.tenants : a == "--tasks" ? &o.tasks
                  : a == "--churn" ? &o.churn : a == "--cf-percent" ? &o.cf_percent : a == "--max-run" ? &o.max_run
                  : a == "--duration-ms" ? &o.duration_ms : a == "--teardown-rounds" ? &o.teardown_rounds
                  : a == "--park-tick-ms" ? &o.park_tick_ms : nullptr;
    if (!v || i + 1 >= argc) usage(2);
    *v = static_cast<unsigned>(std::strtoul(argv[++i], nullptr, 10));
  }
  if (o.threads == 0 || o.threads > 32 || o.tenants == 0 || o.churn == 0 || o.max_run == 0 || o.cf_percent > 100)
    usage(2);
  return o;
}

// ---- checks ------------------------------------------------------------------------------------
struct books {
  std::atomic<std::uint64_t> tasks{0}, cf_tasks{0}, checks{0}, bound_ok{0}, allocs_checked{0}, foreign{0};
  std::atomic<std::uint64_t> activated{0}, deactivated{0}, parks{0}, nudges{0}, failures{0};
};
books the_books;
constexpr auto rx = std::memory_order_relaxed;

void fail(const char* fmt, ...) noexcept {
  va_list ap;
  va_start(ap, fmt);
  std::fputs("CHECK FAILED: ", stderr);
  std::vfprintf(stderr, fmt, ap);
  std::fputc('\n', stderr);
  va_end(ap);
  the_books.failures.fetch_add(1, rx);
}

bool inject_race = false;
std::uint64_t racy = 0;  // --inject-race: every task increments it without synchronisation

// ---- workers: registration, parking, latency histograms -----------------------------------------
// A pool thread registers on its first handler. Everything here is runtime memory (static).
struct histogram {
  static constexpr unsigned n = 64 * 8;
  std::uint64_t b[n] = {};
  static unsigned index(std::uint64_t ns) {
    if (ns < 8) return static_cast<unsigned>(ns);
    const unsigned lg = 63u - static_cast<unsigned>(__builtin_clzll(ns));
    return lg * 8 + static_cast<unsigned>((ns >> (lg - 3)) & 7);
  }
  static std::uint64_t value(unsigned i) {  // the bucket's upper bound
    if (i < 8) return i;
    const unsigned lg = i / 8;
    return ((8ull + (i & 7) + 1) << (lg - 3)) - 1;
  }
  void add(std::uint64_t ns) { ++b[std::min(index(ns), n - 1)]; }
  void merge(const histogram& o) {
    for (unsigned i = 0; i < n; ++i) b[i] += o.b[i];
  }
  std::uint64_t count() const {
    std::uint64_t c = 0;
    for (auto x : b) c += x;
    return c;
  }
  std::uint64_t percentile(double q) const {
    const std::uint64_t total = count();
    if (total == 0) return 0;
    const auto want = static_cast<std::uint64_t>(q * static_cast<double>(total - 1)) + 1;
    std::uint64_t c = 0;
    for (unsigned i = 0; i < n; ++i)
      if ((c += b[i]) >= want) return value(i);
    return value(n - 1);
  }
};

struct worker {
  std::mutex m;
  std::condition_variable cv;
  bool nudged = false;  // under m
  std::atomic<std::uint64_t> seen_epoch{0};  // the scoped baseline's flush acknowledgements
  histogram latency;                         // written by its thread only; read after the pool joined
  void nudge() {
    {
      std::lock_guard l(m);
      nudged = true;
    }
    cv.notify_one();
  }
};
constexpr unsigned max_workers = 64;
worker workers[max_workers];
std::atomic<unsigned> nworkers{0};
std::atomic<worker*> by_executor[256];  // lazymm executor id value -> its thread's worker
thread_local worker* me = nullptr;

worker& this_worker() {
  if (!me) {
    const unsigned i = nworkers.fetch_add(1, rx);
    if (i >= max_workers) std::abort();
    me = &workers[i];
  }
  return *me;
}

void reset_workers() {  // between runs: every pool thread has exited
  for (unsigned i = 0; i < max_workers; ++i) {
    workers[i].nudged = false;
    workers[i].seen_epoch.store(0, rx);
    workers[i].latency = histogram{};
  }
  for (auto& w : by_executor) w.store(nullptr, rx);
  nworkers.store(0, rx);
}

// Parking: a worker blocks here (as a runtime's worker blocks waiting for I/O or backs off when
// idle) until released; it wakes every `tick` on its own, or at once when nudged, and runs the
// runtime's idle point then.
struct parking {
  std::mutex m;
  std::condition_variable cv;
  unsigned parked = 0;
  bool release = false;
};
parking park_lot;

template <class Mode>
void park(Mode& mode, std::chrono::milliseconds tick, std::chrono::milliseconds at_most) {
  worker& w = this_worker();
  the_books.parks.fetch_add(1, rx);
  {
    std::lock_guard l(park_lot.m);
    ++park_lot.parked;
  }
  park_lot.cv.notify_all();
  const auto deadline = clk::now() + at_most;
  for (;;) {
    {
      std::unique_lock l(w.m);
      w.cv.wait_for(l, tick, [&] { return w.nudged; });
      w.nudged = false;
    }
    mode.idle();  // nudged, or the tick: the runtime's idle point
    std::lock_guard l(park_lot.m);
    if (park_lot.release || clk::now() >= deadline) {
      --park_lot.parked;
      break;
    }
  }
  park_lot.cv.notify_all();
}

void release_parked(bool wait) {
  {
    std::lock_guard l(park_lot.m);
    park_lot.release = true;
  }
  for (unsigned i = 0; i < nworkers.load(rx); ++i) workers[i].nudge();
  std::unique_lock l(park_lot.m);
  if (wait) park_lot.cv.wait(l, [] { return park_lot.parked == 0; });
  park_lot.release = false;
}

// ---- the work ----------------------------------------------------------------------------------
// A task of a tenant: plain allocations (malloc, new) that it frees before it returns. `check`:
// the thread is bound to the tenant's arena and every allocation came from it.
std::uint64_t xorshift() {
  thread_local std::uint64_t s = 0x9E3779B97F4A7C15ull ^ reinterpret_cast<std::uintptr_t>(&s);
  s ^= s << 13, s ^= s >> 7, s ^= s << 17;
  return s;
}

[[gnu::noinline]] void task_body(const arenas::arena& a, unsigned check_every) {
  constexpr int n = 4;
  void* p[n];
  for (int i = 0; i < n; ++i) {
    const std::size_t sz = 16 + (xorshift() % 496);
    p[i] = arenas::task_alloc(sz);
    std::memset(p[i], i, sz);
  }
  char* s = JT_SANITIZER ? nullptr : new char[64];  // plain new, where it reaches jemalloc
  if (s) std::memset(s, 1, 64);
  const std::uint64_t k = the_books.tasks.fetch_add(1, rx);
  if (check_every && k % check_every == 0) {
    the_books.checks.fetch_add(1, rx);
    if (arenas::bound_arena() == a.index())
      the_books.bound_ok.fetch_add(1, rx);
    else if (check_every == 1)
      fail("a task of arena %u found arena %u bound", a.index(), arenas::bound_arena());
    for (int i = 0; i <= n; ++i) {
      const void* q = i < n ? p[i] : s;
      if (!q) continue;
      the_books.allocs_checked.fetch_add(1, rx);
      if (const unsigned in = arenas::arena_of(q); in != a.index()) {
        the_books.foreign.fetch_add(1, rx);
        if (check_every == 1)
          std::fprintf(stderr, "note: a task of arena %u got %zu bytes from arena %u\n", a.index(),
                       sallocx(const_cast<void*>(q), 0), in);
      }
    }
  }
  if (inject_race) ++racy;
  delete[] s;
  for (int i = 0; i < n; ++i) arenas::task_free(p[i]);
}

// Context-free work (a completion, a timer): no tenant of its own. In the check run it keeps a
// record of itself in a runtime-owned ring: runtime memory, from arena 0 (--violate: from whatever
// arena the thread has bound, lazily a tenant's, which is the bug the run must catch).
struct record {
  std::uint64_t seq = 0;
};
struct records {
  std::mutex m;
  void* ring[64] = {};
  std::uint64_t seq = 0;
};
records the_records;
bool violate = false;

[[gnu::noinline]] void cf_body(bool keep_record) {
  volatile std::uint64_t x = 0;
  for (int i = 0; i < 200; ++i) x = x + static_cast<std::uint64_t>(i) * 7;
  the_books.cf_tasks.fetch_add(1, rx);
  if (!keep_record) return;
  void* mem = violate ? arenas::task_alloc(sizeof(record)) : arenas::runtime_alloc(sizeof(record));
  std::lock_guard l(the_records.m);
  std::uint64_t sum = 0;
  for (void* r : the_records.ring)
    if (r) sum += static_cast<record*>(r)->seq;  // the runtime reads what it kept
  auto* r = ::new (mem) record;
  r->seq = ++the_records.seq + (sum & 1);
  void*& slot = the_records.ring[the_records.seq % 64];
  if (slot) arenas::check_not_destroyed(slot), (violate ? arenas::task_free : arenas::runtime_free)(slot);
  slot = r;
}

void clear_records() {
  std::lock_guard l(the_records.m);
  for (void*& r : the_records.ring)
    if (r) arenas::check_not_destroyed(r), (violate ? arenas::task_free : arenas::runtime_free)(r), r = nullptr;
}

// ---- teardown latency --------------------------------------------------------------------------
struct latencies {
  std::mutex m;
  std::vector<std::int64_t, runtime_allocator<std::int64_t>> v;
  void add(std::int64_t ns) {
    if (ns < 0) return;
    std::lock_guard l(m);
    v.push_back(ns);
  }
};
latencies teardown_latency;

void destroy_arena(arenas::arena& a) { teardown_latency.add(a.destroy()); }

// ---- the ways of binding -----------------------------------------------------------------------
// Each mode: handle (an owning reference to a tenant), make(id), arena(handle), run(handle, f)
// (runs f as a task of the tenant on this thread), context_free() (before context-free work),
// idle() (the runtime's idle point: a parked worker's wake-up, a nudge), tick() (the service's
// loop), drain() (after the pool joined).

// (a) lazymm: the tenant is a thread-bound context.
template <class Policy>
struct lazymm_mode {
  using domain_type = lazymm::domain<Policy>;
  struct tenant : lazymm::context, arenas::runtime_object {
    static constexpr bool thread_bound = true;  // on_deactivate on the holder's thread, before teardown
    explicit tenant(unsigned i) : id(i) {}
    void on_activate(lazymm::executor_id) noexcept {
      a.bind_here();  // thread.arena = the tenant's
      the_books.activated.fetch_add(1, rx);
    }
    void on_deactivate(lazymm::executor_id) noexcept {
      arenas::unbind();  // thread.tcache.flush, thread.arena = 0
      the_books.deactivated.fetch_add(1, rx);
    }
    void on_teardown() noexcept { destroy_arena(a); }  // arena.<i>.destroy: no thread is bound any more
    arenas::arena a;
    unsigned id;
  };
  using handle = lazymm::owning_ref<tenant>;

  domain_type dom;
  asio::thread_pool* pool = nullptr;

  static constexpr const char* name = Policy::batches ? "lazymm.batched" : "lazymm.implicit";
  handle make(unsigned id) { return dom.template make<tenant>(id); }
  static arenas::arena& arena(const handle& h) { return h->a; }

  typename domain_type::executor_type& executor() {
    auto* e = dom.find_thread_executor();
    // The thread's first use: lazymm attaches a managed executor (plain new, and a thread_local
    // with a destructor), before this thread binds any tenant: a thread setup (arenas.hpp).
    if (!e) [[unlikely]]
      e = &arenas::thread_setup([this]() -> auto& { return dom.thread_executor(); });
    auto& ex = *e;
    auto& slot = by_executor[ex.id().value % 256];
    if (slot.load(rx) != &this_worker()) slot.store(&this_worker(), rx);  // for the nudge
    return ex;
  }
  // ---- glue begins -----------------------------------------------------------------------------
  template <class F>
  void run(const handle& t, F&& f) {
    auto& ex = executor();
    if (!ex.is_lazy() && ex.loaded() == dom.default_context()) ex.go_lazy();  // between tasks
    lazymm::scoped_switch s(ex, t);  // binds t's arena unless it is still bound, lazily
    f();
  }
  void context_free() {
    auto& ex = executor();
    ex.go_lazy();      // the last tenant's arena stays bound
    ex.poll_stolen();  // ... unless a round took it: then the undo runs here
  }
  void idle() {
    if (auto* ex = dom.find_thread_executor()) ex->poll_stolen();
  }
  // The nudge: a round stole a tenant from worker `who`, whose on_deactivate (and the deferred
  // arena.<i>.destroy) waits for that worker. Wake it if it is parked; post a poll to the pool for
  // a thread that is idle inside asio.
  static void nudge(void* self, lazymm::executor_id who) noexcept {
    the_books.nudges.fetch_add(1, rx);
    if (worker* w = by_executor[who.value % 256].load(rx)) w->nudge();
    auto* m = static_cast<lazymm_mode*>(self);
    if (m->pool == nullptr) return;  // between runs: no pool, no thread to wake
    try {
      asio::post(*m->pool, asio::bind_allocator(runtime_allocator<void>(), [m] { m->idle(); }));
    } catch (...) {  // no memory for the post: the worker still polls at its next handler
    }
  }
  // ---- glue ends -------------------------------------------------------------------------------
  void stop() { pool = nullptr; }
  void start(asio::thread_pool& p, bool with_nudge) {
    pool = &p;
    if (with_nudge) dom.set_nudge(&lazymm_mode::nudge, static_cast<void*>(this));
  }
  void tick() {
    if constexpr (Policy::batches) dom.reclaim_if_due();
  }
  void drain() {
    if constexpr (Policy::batches) dom.reclaim();
  }
  std::size_t pending() { return dom.pending_teardowns(); }
  bool finish_checks(const char* run) {
    bool ok = true;
    if (dom.live_contexts() != 0) ok = false, fail("%s: %lld tenants alive at the end", run, static_cast<long long>(dom.live_contexts()));
    if (pending() != 0) ok = false, fail("%s: %zu teardowns still wait for acknowledgements", run, pending());
    return ok;
  }
};

// The baselines: the tenant is a plain object held by std::shared_ptr (runtime memory).
struct plain_tenant : arenas::runtime_object {
  explicit plain_tenant(unsigned i) : id(i) {}
  arenas::arena a;
  unsigned id;
};

// (d) rebind + tcache flush on entry and exit of every task: no lazy hold, isolation-safe.
// What a baseline mode does at the runtime's other points: nothing but note the worker.
struct baseline_hooks {
  void stop() {}
  void context_free() { this_worker(); }
  void idle() {}
  void start(asio::thread_pool&, bool) {}
  void tick() {}
  void drain() {}
  bool finish_checks(const char*) { return true; }
};

struct flush_mode : baseline_hooks {
  struct tenant : plain_tenant {
    using plain_tenant::plain_tenant;
    ~tenant() { destroy_arena(a); }  // nobody is bound, no tcache holds its objects
  };
  using handle = std::shared_ptr<tenant>;
  static constexpr const char* name = "flush";
  handle make(unsigned id) { return std::allocate_shared<tenant>(runtime_allocator<tenant>(), id); }
  static arenas::arena& arena(const handle& h) { return h->a; }
  template <class F>
  void run(const handle& t, F&& f) {
    this_worker();
    t->a.bind_here();
    f();
    arenas::unbind();
  }
};

// (c) a shared_ptr lazy hold: each worker keeps the last tenant (so its arena stays bound) until a
// task of another tenant; the last holder to let go destroys the arena.
struct shared_ptr_mode : baseline_hooks {
  struct tenant : plain_tenant {
    using plain_tenant::plain_tenant;
    ~tenant() { destroy_arena(a); }  // every holder flushed and rebound before letting go
  };
  using handle = std::shared_ptr<tenant>;
  struct holder {
    handle held;
    ~holder() {  // thread exit: undo, then let go
      if (held) arenas::unbind(), held.reset();
    }
  };
  static holder& my_hold() {
    thread_local holder* h = nullptr;  // trivially destructible: no thread_local registration
    if (!h) [[unlikely]]
      h = &arenas::thread_setup([]() -> holder& {  // the holder's thread_local registration allocates
        thread_local holder hold;
        return hold;
      });
    return *h;
  }
  static constexpr const char* name = "shared_ptr";
  handle make(unsigned id) { return std::allocate_shared<tenant>(runtime_allocator<tenant>(), id); }
  static arenas::arena& arena(const handle& h) { return h->a; }
  template <class F>
  void run(const handle& t, F&& f) {
    this_worker();
    holder& h = my_hold();
    if (h.held != t) {
      if (h.held) arenas::flush_tcache();
      t->a.bind_here();
      h.held = t;  // the old tenant's last holder destroys its arena here
    }
    f();
  }
};

// (b) rebinding on entry and exit of every task, no flush (the scoped-binding pattern). The
// thread's tcache keeps objects of every tenant it ran (so tasks get other tenants' memory), so
// an arena may be destroyed only once every worker has flushed since its tenant retired: a
// retirement bumps an epoch, each worker flushes when it sees a new epoch (after a task, at idle
// points), and the last one to acknowledge destroys what is due. Parked workers are nudged.
struct scoped_mode {
  struct tenant;
  static inline std::atomic<std::uint64_t> epoch{0};
  static inline std::mutex m;
  struct due {
    arenas::arena* a;
    std::uint64_t epoch;
  };
  static inline std::vector<due, runtime_allocator<due>> pending;  // under m
  static inline bool nudging = true;
  struct tenant : arenas::runtime_object {
    explicit tenant(unsigned i) : a(new arenas::arena), id(i) {}
    ~tenant() {
      {
        std::lock_guard l(m);
        pending.push_back({a, epoch.fetch_add(1, std::memory_order_acq_rel) + 1});
      }
      if (nudging)
        for (unsigned i = 0; i < nworkers.load(rx); ++i) workers[i].nudge();
      try_destroy();
    }
    arenas::arena* a;
    unsigned id;
  };
  using handle = std::shared_ptr<tenant>;
  static constexpr const char* name = "scoped";
  void stop() {}
  handle make(unsigned id) { return std::allocate_shared<tenant>(runtime_allocator<tenant>(), id); }
  static arenas::arena& arena(const handle& h) { return *h->a; }
  static void try_destroy() {
    std::lock_guard l(m);
    std::uint64_t floor = UINT64_MAX;
    for (unsigned i = 0; i < nworkers.load(std::memory_order_acquire); ++i)
      floor = std::min(floor, workers[i].seen_epoch.load(std::memory_order_acquire));
    auto keep = pending.begin();
    for (auto& d : pending)
      if (d.epoch <= floor)
        destroy_arena(*d.a), delete d.a;
      else
        *keep++ = d;
    pending.erase(keep, pending.end());
  }
  static void ack() {
    worker& w = this_worker();
    const std::uint64_t e = epoch.load(std::memory_order_acquire);
    if (w.seen_epoch.load(rx) == e) return;
    arenas::flush_tcache();
    w.seen_epoch.store(e, std::memory_order_release);
    try_destroy();
  }
  template <class F>
  void run(const handle& t, F&& f) {
    t->a->bind_here();
    f();
    arenas::bind(0);
    ack();
  }
  void context_free() { ack(); }
  void idle() { ack(); }
  void start(asio::thread_pool&, bool with_nudge) { nudging = with_nudge; }
  void tick() {}
  void drain() {  // every worker has exited (its tcache went with it)
    nworkers.store(0, rx);
    try_destroy();
  }
  bool finish_checks(const char* run) {
    if (pending.empty()) return true;
    fail("%s: %zu arenas never destroyed", run, pending.size());
    return false;
  }
};

// ---- the service -------------------------------------------------------------------------------
struct run_result {
  double seconds = 0;
  std::uint64_t tasks = 0, cf = 0;
  histogram latency;
  std::vector<std::pair<double, std::uint64_t>> memory;  // (ms, retired-but-resident bytes)
};

struct books_before {
  std::uint64_t created, destroyed, efault, other, bind_fail, stale;
  books_before() {
    auto& b = arenas::the_books;
    created = b.created.load(rx), destroyed = b.destroyed.load(rx), efault = b.destroy_efault.load(rx);
    other = b.destroy_other.load(rx), bind_fail = b.bind_failures.load(rx), stale = b.stale_binds.load(rx);
  }
};

// Posts tasks to a pool of o.threads: a tenant's tasks arrive in runs of 1..max_run, cf_percent of
// the tasks are context-free; a tenant is retired and another created every `churn` tasks. Every
// `park_every` tasks (0: never) a handler parks its worker for up to 2 ms. Runs `tasks` tasks, or
// for `duration_ms` if bench. check_every: check the binding and the allocations' arena every N
// tasks (1: every task, failures are fatal; 0: never).
template <class Mode>
run_result serve(Mode& mode, const options& o, bool bench, unsigned park_every, unsigned check_every) {
  using handle = typename Mode::handle;
  run_result res;
  std::uint64_t posted = 0;
  std::atomic<std::uint64_t> done{0};
  {
    asio::thread_pool pool(o.threads);
    mode.start(pool, true);
    std::mt19937 rng(11);
    unsigned next_id = 0;
    std::vector<handle, runtime_allocator<handle>> live;
    for (unsigned i = 0; i < o.tenants; ++i) live.push_back(mode.make(next_id++));
    const auto alloc = runtime_allocator<void>();
    auto post = [&](auto f) { asio::post(pool, asio::bind_allocator(alloc, std::move(f))); ++posted; };
    const auto t0 = clk::now();
    const auto end = t0 + std::chrono::milliseconds(o.duration_ms);
    auto next_sample = t0;
    std::uint64_t tasks = 0;
    bool stop = false;
    while (!stop) {
      handle& t = live[rng() % live.size()];
      const unsigned run = 1 + rng() % o.max_run;
      for (unsigned i = 0; i < run && !stop; ++i) {
        if (rng() % 100 < o.cf_percent) {
          post([&mode, &done, bench] {
            mode.context_free();
            cf_body(!bench);
            done.fetch_add(1, std::memory_order_release);
          });
        } else {
          post([&mode, &done, t = handle(t), check_every]() mutable {
            const auto s = now_ns();
            mode.run(t, [&] { task_body(Mode::arena(t), check_every); });
            t = handle();  // drop the task's reference after the task (never inside it)
            this_worker().latency.add(static_cast<std::uint64_t>(now_ns() - s));
            done.fetch_add(1, std::memory_order_release);
          });
        }
        ++tasks;
        if (park_every && tasks % park_every == 0)
          post([&mode, &done, &o] {
            mode.context_free();
            park(mode, std::chrono::milliseconds(o.park_tick_ms), std::chrono::milliseconds(2));
            done.fetch_add(1, std::memory_order_release);
          });
        if (tasks % o.churn == 0) {  // retire one tenant, create another
          handle& r = live[rng() % live.size()];
          Mode::arena(r).mark_retired();
          r = mode.make(next_id++);
        }
        while (posted - done.load(std::memory_order_acquire) > 256) {
          mode.tick();
          std::this_thread::yield();
        }
        const auto now = clk::now();
        if (bench && now >= next_sample) {
          res.memory.emplace_back(std::chrono::duration<double, std::milli>(now - t0).count(),
                                  arenas::retired_resident());
          next_sample = now + std::chrono::milliseconds(10);
        }
        stop = bench ? now >= end : tasks >= o.tasks;
      }
    }
    while (done.load(std::memory_order_acquire) != posted) {
      mode.tick();
      std::this_thread::yield();
    }
    res.seconds = std::chrono::duration<double>(clk::now() - t0).count();
    for (auto& t : live) Mode::arena(t).mark_retired();
    live.clear();  // the last tenants retire while the pool threads may still hold them lazily
    pool.join();   // the threads exit: what they still hold is undone on each of them
    for (unsigned i = 0; i < nworkers.load(rx); ++i) res.latency.merge(workers[i].latency);
    mode.drain();
    mode.stop();
  }
  res.tasks = posted;
  res.cf = the_books.cf_tasks.load(rx);
  return res;
}

// Teardown latency with parked workers: a tenant is run on every worker, every worker parks
// (holding it, lazily or by shared_ptr), then the service drops the last reference and the time
// to `arena.<i>.destroy` returning 0 is measured. Parked workers wake every park_tick_ms on their
// own; `nudged`: the mode wakes them when it needs them. A tenant still held `limit` after the
// drop waits for the workers' next task of another tenant, posted then.
template <class Mode>
std::pair<histogram, unsigned> teardown(Mode& mode, const options& o, bool nudged) {
  histogram h;
  unsigned waited = 0;
  {
    std::lock_guard l(teardown_latency.m);
    teardown_latency.v.clear();
  }
  asio::thread_pool pool(o.threads);
  mode.start(pool, nudged);
  const auto alloc = runtime_allocator<void>();
  const auto tick = std::chrono::milliseconds(o.park_tick_ms);
  const auto limit = std::chrono::milliseconds(std::max(100u, 5 * o.park_tick_ms));
  unsigned id = 1u << 20;
  for (unsigned r = 0; r < o.teardown_rounds; ++r) {
    typename Mode::handle t = mode.make(id++);
    for (unsigned w = 0; w < o.threads; ++w)
      asio::post(pool, asio::bind_allocator(alloc, [&mode, t, tick]() mutable {
                   mode.run(t, [&] { task_body(Mode::arena(t), 0); });
                   t = typename Mode::handle();
                   mode.context_free();
                   park(mode, tick, std::chrono::hours(1));
                 }));
    {
      std::unique_lock l(park_lot.m);
      park_lot.cv.wait(l, [&] { return park_lot.parked == o.threads; });
    }
    const std::uint64_t before = arenas::the_books.destroyed.load(rx) + arenas::the_books.destroy_efault.load(rx);
    Mode::arena(t).mark_retired();
    t = typename Mode::handle();  // the final drop, on a thread that is no worker
    const auto dropped = clk::now();
    auto destroyed = [&] {
      return arenas::the_books.destroyed.load(rx) + arenas::the_books.destroy_efault.load(rx) != before;
    };
    while (!destroyed() && clk::now() - dropped < limit) {
      mode.tick();
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    const bool late = !destroyed();
    release_parked(true);
    if (late) {  // held until each worker runs a task of another tenant
      ++waited;
      typename Mode::handle u = mode.make(id++);
      for (unsigned w = 0; w < o.threads; ++w)
        asio::post(pool, asio::bind_allocator(alloc, [&mode, u, tick]() mutable {
                     mode.run(u, [&] { task_body(Mode::arena(u), 0); });
                     u = typename Mode::handle();
                     park(mode, tick, std::chrono::milliseconds(20));  // so that each worker gets one
                   }));
      while (!destroyed()) {
        mode.tick();
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
      release_parked(true);
      u = typename Mode::handle();  // not marked retired: its destroy is not a measured round
    }
  }
  pool.join();
  mode.drain();
  mode.stop();
  std::lock_guard l(teardown_latency.m);
  // Only the measured rounds' destroys were marked at a final drop made with parked holders.
  for (auto ns : teardown_latency.v) h.add(static_cast<std::uint64_t>(ns));
  teardown_latency.v.clear();
  return {h, waited};
}

// ---- end-of-run checks -------------------------------------------------------------------------
bool arena_checks(const char* run, const books_before& b0) {
  auto& b = arenas::the_books;
  const auto created = b.created.load(rx) - b0.created, destroyed = b.destroyed.load(rx) - b0.destroyed;
  const auto efault = b.destroy_efault.load(rx) - b0.efault, other = b.destroy_other.load(rx) - b0.other;
  bool ok = true;
  if (created != destroyed) ok = false, fail("%s: %llu arenas created, %llu destroyed", run, (unsigned long long)created, (unsigned long long)destroyed);
  if (efault || other) ok = false, fail("%s: arena.<i>.destroy returned EFAULT %llu times, another error %llu times", run, (unsigned long long)efault, (unsigned long long)other);
  if (b.bind_failures.load(rx) != b0.bind_fail) ok = false, fail("%s: thread.arena failed", run);
  if (b.stale_binds.load(rx) != b0.stale) ok = false, fail("%s: a worker was about to bind a destroyed (recycled) arena", run);
  return ok;
}

template <class Mode>
bool check_run(const char* run, Mode& mode, const options& o) {
  const books_before b0;
  the_books.tasks = 0, the_books.cf_tasks = 0, the_books.checks = 0, the_books.bound_ok = 0;
  the_books.allocs_checked = 0, the_books.foreign = 0, the_books.activated = 0, the_books.deactivated = 0;
  the_books.parks = 0, the_books.nudges = 0;
  reset_workers();
  const run_result r = serve(mode, o, false, 97, 1);
  const auto tasks = the_books.tasks.load(rx), checks = the_books.checks.load(rx);
  reset_workers();
  const auto [th, waited] = teardown(mode, o, true);
  reset_workers();
  clear_records();
  bool ok = arena_checks(run, b0) && mode.finish_checks(run);
  if (the_books.bound_ok.load(rx) != checks || checks != tasks)
    ok = false, fail("%s: %llu of %llu tasks found their arena bound", run, (unsigned long long)the_books.bound_ok.load(rx), (unsigned long long)tasks);
  if (the_books.foreign.load(rx))
    ok = false, fail("%s: %llu of %llu allocations of tasks came from another arena", run, (unsigned long long)the_books.foreign.load(rx), (unsigned long long)the_books.allocs_checked.load(rx));
  if (the_books.activated.load(rx) != the_books.deactivated.load(rx))
    ok = false, fail("%s: %llu loads, %llu undone (on_deactivate)", run, (unsigned long long)the_books.activated.load(rx), (unsigned long long)the_books.deactivated.load(rx));
  if (the_books.parks.load(rx) == 0) ok = false, fail("%s: no worker parked", run);
  if (waited) ok = false, fail("%s: %u teardowns waited for the holders' next task despite the nudge", run, waited);
  auto& b = arenas::the_books;
  std::printf("%s: %llu arenas created, %llu destroyed (arena.<i>.destroy: %llu EFAULT, %llu other errors); %llu tasks, "
              "%llu found their arena bound, %llu of their %llu allocations from another arena; %llu context-free tasks; "
              "%llu loads, %llu undone on the holder's thread; %llu parks, %llu nudges; teardown with parked, nudged "
              "workers: p50 %llu ns, p99 %llu ns (%llu rounds); %llu MiB of destroyed arenas made inaccessible, "
              "0 accesses to them\n",
              run, (unsigned long long)(b.created.load(rx) - b0.created),
              (unsigned long long)(b.destroyed.load(rx) - b0.destroyed),
              (unsigned long long)(b.destroy_efault.load(rx) - b0.efault),
              (unsigned long long)(b.destroy_other.load(rx) - b0.other), (unsigned long long)tasks,
              (unsigned long long)the_books.bound_ok.load(rx), (unsigned long long)the_books.foreign.load(rx),
              (unsigned long long)the_books.allocs_checked.load(rx), (unsigned long long)r.cf,
              (unsigned long long)the_books.activated.load(rx), (unsigned long long)the_books.deactivated.load(rx),
              (unsigned long long)the_books.parks.load(rx), (unsigned long long)the_books.nudges.load(rx),
              (unsigned long long)th.percentile(0.5), (unsigned long long)th.percentile(0.99),
              (unsigned long long)th.count(), (unsigned long long)(b.quarantined.load(rx) >> 20));
  return ok;
}

// ---- bench -------------------------------------------------------------------------------------
template <class Mode>
void bench_mode(const options& o, bool first) {
  const char* name = Mode::name;
  for (const unsigned max_run : {o.max_run, 1u}) {
    options oo = o;
    oo.max_run = max_run;
    Mode mode;
    reset_workers();
    the_books.foreign = 0, the_books.allocs_checked = 0, the_books.tasks = 0, the_books.cf_tasks = 0;
    const books_before b0;
    const run_result r = serve(mode, oo, true, 0, 64);
    reset_workers();
    const bool ok = arena_checks(name, b0) && mode.finish_checks(name);
    std::printf("jemalloc_bench {\"kind\":\"throughput\",\"mode\":\"%s\",\"locality\":\"%s\",\"threads\":%u,"
                "\"tenants\":%u,\"cf_percent\":%u,\"max_run\":%u,\"tasks\":%llu,\"seconds\":%.4f,\"tasks_per_s\":%.0f,"
                "\"p50_ns\":%llu,\"p99_ns\":%llu,\"allocs_checked\":%llu,\"foreign\":%llu,\"checks_ok\":%s,"
                "\"memory\":[",
                name, max_run > 1 ? "runs" : "none", oo.threads, oo.tenants, oo.cf_percent, max_run,
                (unsigned long long)r.tasks, r.seconds, static_cast<double>(r.tasks) / r.seconds,
                (unsigned long long)r.latency.percentile(0.5), (unsigned long long)r.latency.percentile(0.99),
                (unsigned long long)the_books.allocs_checked.load(rx), (unsigned long long)the_books.foreign.load(rx),
                ok ? "true" : "false");
    for (std::size_t i = 0; i < r.memory.size(); ++i)
      std::printf("%s[%.1f,%llu]", i ? "," : "", r.memory[i].first, (unsigned long long)r.memory[i].second);
    std::printf("]}\n");
    std::fflush(stdout);
  }
  for (const bool nudged : {true, false}) {
    if (!first && !nudged) continue;
    Mode mode;
    reset_workers();
    const books_before b0;
    const auto [h, waited] = teardown(mode, o, nudged);
    reset_workers();
    const bool ok = arena_checks(name, b0) && mode.finish_checks(name);
    std::printf("jemalloc_bench {\"kind\":\"teardown\",\"mode\":\"%s\",\"nudged\":%s,\"threads\":%u,\"park_tick_ms\":%u,"
                "\"rounds\":%llu,\"p50_ns\":%llu,\"p99_ns\":%llu,\"max_ns\":%llu,\"waited_for_next_task\":%u,"
                "\"checks_ok\":%s}\n",
                name, nudged ? "true" : "false", o.threads, o.park_tick_ms, (unsigned long long)h.count(),
                (unsigned long long)h.percentile(0.5), (unsigned long long)h.percentile(0.99),
                (unsigned long long)h.percentile(1.0), waited, ok ? "true" : "false");
    std::fflush(stdout);
  }
}

bool wanted(const options& o, const char* name) {
  if (o.modes == "all") return true;
  const std::string list = "," + o.modes + ",";
  return list.find(std::string(",") + name + ",") != std::string::npos;
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  inject_race = o.inject_race;
  violate = o.violate;
  arenas::install_fault_handler();
  using implicit = lazymm_mode<lazymm::implicit_shootdown>;
  using batched = lazymm_mode<lazymm::batched<lazymm::implicit_shootdown>>;
  if (o.bench) {
    std::printf("jemalloc_bench {\"kind\":\"env\",\"jemalloc\":\"%s\",\"sanitizer\":%s,\"checked\":%d}\n",
                JEMALLOC_VERSION, JT_SANITIZER ? "true" : "false", LAZYMM_CHECKED);
    if (wanted(o, "lazymm.implicit")) bench_mode<implicit>(o, true);
    if (wanted(o, "lazymm.batched")) bench_mode<batched>(o, false);
    if (wanted(o, "scoped")) bench_mode<scoped_mode>(o, true);
    if (wanted(o, "shared_ptr")) bench_mode<shared_ptr_mode>(o, false);
    if (wanted(o, "flush")) bench_mode<flush_mode>(o, false);
    const bool ok = the_books.failures.load(rx) == 0;
    std::printf("jemalloc_tenants --bench: %s\n", ok ? "all checks passed" : "CHECKS FAILED");
    return ok ? 0 : 1;
  }
  bool ok = true;
  {
    implicit m;
    ok &= check_run("jemalloc_tenants lazymm.implicit", m, o);
  }
  {
    batched m;
    ok &= check_run("jemalloc_tenants lazymm.batched", m, o);
  }
  ok &= the_books.failures.load(rx) == 0;
  std::printf("jemalloc_tenants: %s\n", ok ? "all checks passed" : "CHECKS FAILED");
  return ok ? 0 : 1;
}
