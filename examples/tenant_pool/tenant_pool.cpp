// tenant_pool: a fixed pool of worker threads (each one a lazymm executor) running the tasks of
// many tenants, under each of lazymm's three policies, with the same workload.
//
// A tenant is a context that owns a real resource: an mmap'd region split into one bump-allocator
// slab per worker. Activating a tenant on a worker binds that worker's slab (a thread_local
// pointer); deactivating unbinds it. A tenant's task allocates from the bound slab and writes and
// reads the memory. Context-free tasks (timers, I/O completions) are interleaved with tenant
// tasks, so workers go lazy all the time and keep the last tenant loaded; the next task of the
// same tenant then needs no switch at all (a "lazy hit"). Requests arrive by polling: a worker
// whose queue is empty polls "the network" (context-free work), receives a burst of requests for
// one tenant (usually one of its home tenants, sometimes handed to another worker) and queues
// them. The control thread (main) only manages tenants: it retires and creates them while the
// pool runs, and makes the final drop of each retired tenant once its queued tasks are done, timed.
//
// Where the region is unmapped: in on_teardown, when the last owning reference goes. Under
// explicit_shootdown and refcount a worker may still hold the tenant lazily after that (until the
// shootdown at the free, or until it switches away); the only thing it will ever do with it is
// run on_deactivate, which clears the worker's thread_local pointer and touches neither the
// region nor the slabs. Under implicit_shootdown nobody holds the tenant at teardown.
//
// Usage: tenant_pool [--workers N] [--tenants N] [--tasks N] [--duration S] [--churn N]
//                    [--rounds N] [--policy refcount|explicit|implicit|all] [--seed N]
#include <sys/mman.h>
#include <unistd.h>

#include "../common/report.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <lazymm/lazymm.hpp>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

namespace {

using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

// --policy, --seed, and --duration: seconds of submission per policy, at most (0.8).
struct options : examples::run_options {
  options() noexcept : run_options{0.8} {}
  unsigned workers = 0;              // 0: the machine's hardware threads, clamped to [2, 8]
  unsigned tenants = 16;             // tenants alive at any time
  std::uint64_t tasks = 50'000'000;  // requests (tasks arriving by polls) per policy, at most
  unsigned churn = 400;              // retire one tenant (and create one) every `churn` requests
  unsigned rounds = 4;               // the policies take turns: each runs rounds x (duration / rounds)
};

constexpr const char* usage_text =
    "usage: tenant_pool [--workers N] [--tenants N] [--tasks N] [--duration SECONDS]\n"
    "                   [--churn N] [--rounds N] [--policy refcount|explicit|implicit|all]\n"
    "                   [--seed N]\n"
    "Runs a pool of worker threads over tenants that own mmap'd arenas, under each lazymm\n"
    "policy, and prints a comparison. Each policy runs until --tasks requests have arrived or\n"
    "--duration seconds pass, whichever is first; --churn: retire one tenant every N requests.\n"
    "The policies take turns in --rounds rounds (a fresh pool each), so that changes in the\n"
    "machine's load affect them alike.\n";

// What the hooks and checks count during one run (examples/common/report.hpp), and the bytes
// mapped and unmapped. All relaxed: statistics, read by the control thread after it has joined
// the workers (the joins order them).
struct run_counters : examples::books {
  run_counters() noexcept : books("tenant_pool") {}
  std::atomic<std::uint64_t> bytes_mapped{0}, bytes_unmapped{0};
};

class tenant;

// One worker's share of a tenant's region: a bump allocator that only the executor with that id
// ever uses (so it needs no atomics), and what that executor ran for the tenant.
struct slab {
  const tenant* owner = nullptr;
  std::byte* base = nullptr;
  std::size_t size = 0;
  std::size_t used = 0;
  std::uint64_t work_run = 0;   // work tasks of the tenant run on this executor
  std::uint64_t io_issued = 0;  // of those, how many issued an I/O (each gets one continuation)

  void* allocate(std::size_t n) noexcept {
    n = (n + 15) & ~std::size_t{15};
    if (used + n > size) used = 0;  // arena reset: the requests that used the start are done
    void* p = base + used;
    used += n;
    return p;
  }
};

// The worker's bound allocator: set by on_activate, cleared by on_deactivate, nothing else.
thread_local slab* tl_bound = nullptr;

class tenant final : public lazymm::context {
 public:
  tenant(std::uint32_t id, unsigned workers, std::size_t slab_bytes, run_counters& c)
      : id_(id), home_(id % workers), bytes_(workers * slab_bytes), slabs_(workers), counters_(c) {
    void* p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    region_ = static_cast<std::byte*>(p);
    for (unsigned i = 0; i < workers; ++i) {
      slabs_[i].owner = this;
      slabs_[i].base = region_ + i * slab_bytes;
      slabs_[i].size = slab_bytes;
    }
    // relaxed: a statistic (see run_counters).
    counters_.bytes_mapped.fetch_add(bytes_, std::memory_order_relaxed);
  }

  // ---- lazymm hooks ----
  // Bind this worker's slab. Executor ids are dense from 0, so a pool of N workers uses 0..N-1.
  void on_activate(lazymm::executor_id e) noexcept { tl_bound = e.value < slabs_.size() ? &slabs_[e.value] : nullptr; }
  // Unbind. May run after on_teardown (a lazy holder switching away under explicit_shootdown or
  // refcount), so it must not touch the region or the slabs: it touches only the thread_local.
  void on_deactivate(lazymm::executor_id) noexcept { tl_bound = nullptr; }
  // The last owner is gone: check the books, then give the region back.
  void on_teardown() noexcept {
    std::uint64_t run = 0, io = 0;
    for (const slab& s : slabs_) {
      run += s.work_run;
      io += s.io_issued;
    }
    const std::uint64_t submitted = submitted_.load(std::memory_order_relaxed);  // relaxed: see submitted_
    if (run != submitted + io)
      check_failed(counters_, "tenant %u: %llu work tasks ran, expected %llu submitted + %llu continuations", id_,
                   static_cast<unsigned long long>(run), static_cast<unsigned long long>(submitted),
                   static_cast<unsigned long long>(io));
    work_run_total_ = run;
    ::munmap(region_, bytes_);
    region_ = nullptr;
    for (slab& s : slabs_) s.base = nullptr;  // a use after teardown now faults at once
    torn_down_ = true;
    // relaxed: statistics (see run_counters).
    counters_.bytes_unmapped.fetch_add(bytes_, std::memory_order_relaxed);
    counters_.torn_down.fetch_add(1, std::memory_order_relaxed);
  }
  // relaxed: a statistic (see run_counters).
  void on_evict(lazymm::executor_id) noexcept { counters_.evicted.fetch_add(1, std::memory_order_relaxed); }
  static void on_free(tenant* t) noexcept {
    run_counters& c = t->counters_;
    delete t;
    c.freed.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic (see run_counters)
  }

  std::uint32_t id() const noexcept { return id_; }
  unsigned home() const noexcept { return home_; }
  // The control thread makes every final drop (so on_teardown runs there) and reads the audit
  // fields afterwards through a structural reference.
  // relaxed: see submitted_.
  void count_submitted(unsigned n) noexcept { submitted_.fetch_add(n, std::memory_order_relaxed); }
  bool torn_down() const noexcept { return torn_down_; }
  std::uint64_t work_run_total() const noexcept { return work_run_total_; }

 private:
  const std::uint32_t id_;
  const unsigned home_;
  const std::size_t bytes_;
  std::byte* region_ = nullptr;
  std::vector<slab> slabs_;
  run_counters& counters_;
  // relaxed RMWs by the workers that receive requests, while they hold an owning reference:
  // ordered before on_teardown by the owning count's release/acquire chain.
  std::atomic<std::uint64_t> submitted_{0};
  std::uint64_t work_run_total_ = 0;
  bool torn_down_ = false;
};

// A task of tenant t, run with t loaded: allocate three objects from the bound slab, fill them,
// read them back. Returns false if the wrong slab (or none) is bound or the memory is wrong.
bool run_work(const tenant& t, std::uint32_t arg, bool issue_io) noexcept {
  slab* s = tl_bound;
  if (s == nullptr || s->owner != &t) return false;
  const std::uint64_t tag = (std::uint64_t{t.id()} << 32) | arg;
  std::uint64_t expect = 0, got = 0;
  for (unsigned k = 0; k < 3; ++k) {
    const std::size_t words = 4 + ((arg >> (4 * k)) & 15) * 2;  // 32..272 bytes
    auto* p = static_cast<std::uint64_t*>(s->allocate(words * sizeof(std::uint64_t)));
    for (std::size_t i = 0; i < words; ++i) {
      p[i] = tag ^ (i * 0x9e3779b97f4a7c15ull);
      expect += p[i];
    }
    std::atomic_signal_fence(std::memory_order_seq_cst);  // compiler barrier: really read it back
    for (std::size_t i = 0; i < words; ++i) got += p[i];
  }
  ++s->work_run;
  if (issue_io) ++s->io_issued;
  return got == expect;
}

// Context-free work: a timer callback, or the network side of an I/O completion.
std::uint64_t run_context_free(std::uint64_t x) noexcept {
  for (int i = 0; i < 24; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
  }
  return x;
}

enum class task_kind : std::uint8_t { work, completion, timer };

struct task {
  lazymm::owning_ref<tenant> owner;  // empty for a timer; keeps the tenant's contents alive
  task_kind kind = task_kind::timer;
  bool issue_io = false;  // work: post a completion (context-free), then a continuation
  std::uint32_t arg = 0;
};

struct worker_stats {
  std::uint64_t tasks = 0, switches = 0, lazy_hits = 0, migrated = 0, polls = 0, sink = 0;
};

struct run_result {
  const char* policy = "";
  std::uint64_t tasks = 0, switches = 0, lazy_hits = 0, migrated = 0, polls = 0;
  double seconds = 0;
  std::uint64_t tenants = 0, torn_down = 0, freed = 0, evicted = 0, failures = 0;
  std::uint64_t bytes_mapped = 0, bytes_unmapped = 0;
  lazymm::domain_stats dom{};
  std::uint64_t drops = 0, drop_ns_sum = 0, drop_ns_max = 0;
  bool ok = true;
};

// Adds one round's result to a policy's total.
void merge(run_result& into, const run_result& r) {
  into.policy = r.policy;
  into.tasks += r.tasks;
  into.switches += r.switches;
  into.lazy_hits += r.lazy_hits;
  into.migrated += r.migrated;
  into.polls += r.polls;
  into.seconds += r.seconds;
  into.tenants += r.tenants;
  into.torn_down += r.torn_down;
  into.freed += r.freed;
  into.evicted += r.evicted;
  into.failures += r.failures;
  into.bytes_mapped += r.bytes_mapped;
  into.bytes_unmapped += r.bytes_unmapped;
  into.dom.contexts_created += r.dom.contexts_created;
  into.dom.contexts_freed += r.dom.contexts_freed;
  into.dom.rounds += r.dom.rounds;
  into.dom.heavy_barriers += r.dom.heavy_barriers;
  into.dom.steals += r.dom.steals;
  into.dom.waits += r.dom.waits;
  into.drops += r.drops;
  into.drop_ns_sum += r.drop_ns_sum;
  into.drop_ns_max = std::max(into.drop_ns_max, r.drop_ns_max);
  into.ok = into.ok && r.ok;
}

template <class Policy>
class pool {
 public:
  using domain_type = lazymm::domain<Policy, lazymm::default_backend>;
  using executor_type = typename domain_type::executor_type;

  explicit pool(const options& o) : opts_(o), queues_(new queue[o.workers]), stats_(o.workers) {}

  run_result run();

 private:
  static constexpr std::size_t slab_bytes = std::size_t{16} * 1024;
  static constexpr std::size_t audit_depth = 8;  // structural refs kept to retired tenants

  // The executor, as the pool uses it: counts the switches that a lazy hold made unnecessary.
  struct counting_executor {
    executor_type& ex;
    std::uint64_t switches = 0, lazy_hits = 0;
    void enter(const lazymm::owning_ref<tenant>& t) noexcept {
      if (ex.loaded() == t.get())
        ++lazy_hits;  // still loaded from an earlier task: switch_to does nothing
      else
        ++switches;
      ex.switch_to(t);
    }
    // Context-free work or idle from here on: the tenant stays loaded, lazily.
    void leave() noexcept { ex.go_lazy(); }
  };

  struct alignas(64) queue {
    std::mutex m;
    std::condition_variable cv;
    std::deque<task> q;
    bool sleeping = false;  // guarded by m
    // Written by the owning worker, read by the control thread: requests received so far.
    // relaxed both ways: a pacing hint (churn, the task cap), not an ordering edge.
    std::atomic<std::uint64_t> received{0};
  };

  void worker_main(unsigned self);
  bool pop(unsigned self, task& out, bool& migrated);
  void receive(unsigned self, examples::rng64& rng, std::vector<task>& batch);
  void idle(unsigned self);
  void push(unsigned w, std::vector<task>& batch);
  lazymm::owning_ref<tenant> create_tenant();
  void reap(run_result& r);

  const options& opts_;
  run_counters counters_;
  domain_type dom_;  // before anything that holds a context or an executor
  std::unique_ptr<queue[]> queues_;
  std::vector<worker_stats> stats_;
  // The end of the run, which each worker checks for itself: a control thread that the OS does
  // not schedule for a while (a loaded machine) then cannot stretch the run.
  steady::time_point deadline_{};
  std::uint64_t cap_per_worker_ = 0;
  alignas(64) std::atomic<bool> receiving_{true};  // requests still arrive
  std::atomic<bool> stop_{false};                  // no requests and nothing queued: exit
  std::mutex table_m_;
  std::vector<lazymm::owning_ref<tenant>> live_;  // guarded by table_m_
  // Control thread only.
  std::uint32_t next_id_ = 0;
  std::vector<lazymm::owning_ref<tenant>> draining_;
  std::deque<lazymm::structural_ref<tenant>> audit_;
};

template <class Policy>
lazymm::owning_ref<tenant> pool<Policy>::create_tenant() {
  auto t = dom_.template make<tenant>(next_id_++, opts_.workers, slab_bytes, counters_);
  counters_.created.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  return t;
}

template <class Policy>
void pool<Policy>::push(unsigned w, std::vector<task>& batch) {
  queue& q = queues_[w];
  std::lock_guard lk(q.m);
  for (task& t : batch) q.q.push_back(std::move(t));
  if (q.sleeping) q.cv.notify_one();
}

template <class Policy>
bool pool<Policy>::pop(unsigned self, task& out, bool& migrated) {
  {
    queue& q = queues_[self];
    std::lock_guard lk(q.m);
    if (!q.q.empty()) {
      out = std::move(q.q.front());
      q.q.pop_front();
      return true;
    }
  }
  // Take the newest task of a busier worker: its tenant then runs on a second executor too.
  for (unsigned k = 1; k < opts_.workers; ++k) {
    queue& q = queues_[(self + k) % opts_.workers];
    std::unique_lock lk(q.m, std::try_to_lock);
    if (lk.owns_lock() && !q.q.empty()) {
      out = std::move(q.q.back());
      q.q.pop_back();
      migrated = true;
      return true;
    }
  }
  return false;
}

// Poll for requests (context-free): a burst of 1-4 requests of one tenant, timers between them.
// Usually one of this worker's home tenants and queued here; one burst in 8 is for any tenant
// and goes to another worker.
template <class Policy>
void pool<Policy>::receive(unsigned self, examples::rng64& rng, std::vector<task>& batch) {
  const std::uint64_t x = rng();
  const bool handoff = opts_.workers > 1 && (x >> 8) % 8 == 0;
  const unsigned to =
      handoff ? (self + 1 + static_cast<unsigned>((x >> 12) % (opts_.workers - 1))) % opts_.workers : self;
  lazymm::owning_ref<tenant> tn;
  {
    std::lock_guard lk(table_m_);
    const std::size_t n = live_.size();
    if (n == 0) return;  // shutting down: the control thread has retired every tenant
    std::size_t i = (x >> 16) % n;
    // A home tenant of `to`: tenant ids are dealt round-robin over the workers.
    if (!handoff)
      for (std::size_t k = 0; k < n && live_[i]->home() != to; ++k) i = (i + 1) % n;
    tn = live_[i];
  }
  const unsigned n = 1 + static_cast<unsigned>((x >> 24) % 4);
  batch.clear();
  for (unsigned k = 0; k < n; ++k) {
    const std::uint64_t y = rng();
    batch.push_back(task{tn, task_kind::work, y % 4 == 0, static_cast<std::uint32_t>(y >> 32)});
    if ((y >> 2) % 2 == 0) batch.push_back(task{{}, task_kind::timer, false, static_cast<std::uint32_t>(y >> 20)});
  }
  tn->count_submitted(n);
  push(to, batch);
  queues_[self].received.fetch_add(batch.size(), std::memory_order_relaxed);  // relaxed: see queue
}

template <class Policy>
void pool<Policy>::idle(unsigned self) {
  queue& q = queues_[self];
  std::unique_lock lk(q.m);
  // acquire: pairs with the control thread's release store of stop_.
  if (!q.q.empty() || stop_.load(std::memory_order_acquire)) return;
  q.sleeping = true;
  q.cv.wait_for(lk, 1ms);  // bounded: another worker's queue may fill without waking us
  q.sleeping = false;
}

template <class Policy>
void pool<Policy>::worker_main(unsigned self) {
  auto ex = dom_.attach();
  counting_executor cx{ex};
  worker_stats st;
  examples::rng64 rng{(opts_.seed + self + 1) * 0x9e3779b97f4a7c15ull | 1};
  std::vector<task> batch;
  if (ex.id().value >= opts_.workers) check_failed(counters_, "executor id %u outside the pool", ex.id().value);
  task t;
  for (;;) {
    bool migrated = false;
    if (!pop(self, t, migrated)) {
      cx.leave();  // polling and idling are context-free: the last tenant stays loaded, lazily
      // acquire: pairs with the control thread's release store; the table is still full.
      // relaxed: our own counter.
      if (receiving_.load(std::memory_order_acquire) && steady::now() < deadline_ &&
          queues_[self].received.load(std::memory_order_relaxed) < cap_per_worker_) {
        ++st.polls;
        receive(self, rng, batch);
        continue;
      }
      if (stop_.load(std::memory_order_acquire)) break;  // acquire: pairs with the release in run()
      idle(self);
      continue;
    }
    st.migrated += migrated;
    switch (t.kind) {
      case task_kind::work:
        cx.enter(t.owner);
        if (!run_work(*t.owner, t.arg, t.issue_io))
          check_failed(counters_, "tenant %u: task ran without its slab bound", t.owner->id());
        // Done: go lazy *before* our reference can go. Under refcount an executor that still
        // has the tenant active (not lazy) when another thread makes the final drop would be
        // left holding a freed context; going lazy first counts the hold.
        cx.leave();
        if (t.issue_io) {
          t.kind = task_kind::completion;  // the I/O completes later, on this worker
          batch.clear();
          batch.push_back(std::move(t));
          push(self, batch);
        } else {
          t.owner.reset();
        }
        break;
      case task_kind::completion:
        cx.leave();  // context-free: network-side work, no switch
        st.sink += run_context_free(t.arg);
        t.kind = task_kind::work;  // the tenant's continuation
        t.issue_io = false;
        batch.clear();
        batch.push_back(std::move(t));
        push(self, batch);
        break;
      case task_kind::timer:
        cx.leave();
        st.sink += run_context_free(t.arg);
        break;
    }
    ++st.tasks;
  }
  st.switches = cx.switches;
  st.lazy_hits = cx.lazy_hits;
  stats_[self] = st;
}  // ex detaches here: its lazy hold is dropped first

// Final drops of retired tenants whose queued tasks have all run.
template <class Policy>
void pool<Policy>::reap(run_result& r) {
  for (std::size_t i = 0; i < draining_.size();) {
    lazymm::owning_ref<tenant>& ref = draining_[i];
    // relaxed: a hint; nobody can make a new owning reference to a retired tenant, so once only
    // ours is left it stays so, and the drop below is the acq_rel RMW that orders the teardown
    // after every task's writes.
    if (ref->owning_count() != 1) {
      ++i;
      continue;
    }
    lazymm::structural_ref<tenant> keep;
    if (ref->id() % 4 == 0) keep = ref.structural();  // audited: the header outlives the contents
    const auto t0 = steady::now();
    ref.reset();  // final drop: the round (implicit), the teardown, the free (explicit, unless audited)
    const auto ns = static_cast<std::uint64_t>(std::chrono::nanoseconds(steady::now() - t0).count());
    ++r.drops;
    r.drop_ns_sum += ns;
    r.drop_ns_max = std::max(r.drop_ns_max, ns);
    if (keep) {
      audit_.push_back(std::move(keep));
      if (audit_.size() > audit_depth) {
        const tenant& old = *audit_.front();
        if (!old.torn_down() || old.owning_count() != 0)
          check_failed(counters_, "audited tenant %u not torn down after its final drop", old.id());
        audit_.pop_front();  // last structural reference: the free happens here
      }
    }
    draining_[i] = std::move(draining_.back());
    draining_.pop_back();
  }
}

template <class Policy>
run_result pool<Policy>::run() {
  run_result r;
  r.policy = Policy::name;
  for (unsigned i = 0; i < opts_.tenants; ++i) live_.push_back(create_tenant());
  const auto start = steady::now();
  deadline_ = start + std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(opts_.duration));
  cap_per_worker_ = std::max<std::uint64_t>(1, opts_.tasks / opts_.workers);
  std::vector<std::thread> threads;  // started after deadline_ and cap_per_worker_ are set
  for (unsigned i = 0; i < opts_.workers; ++i) threads.emplace_back([this, i] { worker_main(i); });

  examples::rng64 rng{opts_.seed * 0x9e3779b97f4a7c15ull | 1};
  const bool progress = opts_.duration > 2.0;
  auto next_progress = start + 1s;
  std::uint64_t received = 0, next_churn = opts_.churn, retired = 0;
  for (;;) {
    received = 0;
    // relaxed: a pacing hint (see queue::received).
    for (unsigned i = 0; i < opts_.workers; ++i) received += queues_[i].received.load(std::memory_order_relaxed);
    const auto now = steady::now();
    if (received >= opts_.tasks || now >= deadline_) break;
    if (progress && now >= next_progress) {
      std::fprintf(stderr, "  %-18s %5.1f s  %11llu requests received  %7llu tenants retired\n", Policy::name,
                   std::chrono::duration<double>(now - start).count(), static_cast<unsigned long long>(received),
                   static_cast<unsigned long long>(retired));
      next_progress += 1s;
    }
    for (; received >= next_churn; next_churn += opts_.churn) {  // retire one, create one
      auto fresh = create_tenant();
      std::lock_guard lk(table_m_);
      lazymm::owning_ref<tenant>& victim = live_[rng() % live_.size()];
      draining_.push_back(std::move(victim));
      victim = std::move(fresh);
      ++retired;
    }
    reap(r);
    std::this_thread::sleep_for(50us);
  }

  // Shut down: stop the requests, retire every tenant, let the queues drain, make the last drops.
  receiving_.store(false, std::memory_order_release);  // release: pairs with the workers' acquire
  {
    std::lock_guard lk(table_m_);
    for (auto& t : live_) draining_.push_back(std::move(t));
    live_.clear();
  }
  // A worker may still be inside receive() with a copy of a tenant: the drain waits for it too.
  while (!draining_.empty()) {
    reap(r);
    std::this_thread::yield();
  }
  r.seconds = std::chrono::duration<double>(steady::now() - start).count();
  audit_.clear();
  // release: pairs with the workers' acquire loads. Every queue is empty: the drains above
  // needed every task that held a tenant, and timers run before the queue is seen empty.
  stop_.store(true, std::memory_order_release);
  for (unsigned i = 0; i < opts_.workers; ++i) {
    std::lock_guard lk(queues_[i].m);
    queues_[i].cv.notify_one();
  }
  for (auto& th : threads) th.join();

  for (const worker_stats& s : stats_) {
    r.tasks += s.tasks;
    r.switches += s.switches;
    r.lazy_hits += s.lazy_hits;
    r.migrated += s.migrated;
    r.polls += s.polls;
  }
  for (unsigned i = 0; i < opts_.workers; ++i) {
    if (!queues_[i].q.empty()) check_failed(counters_, "worker %u exited with queued tasks", i);
  }
  constexpr auto rx = std::memory_order_relaxed;  // statistics, after the joins
  received = 0;
  for (unsigned i = 0; i < opts_.workers; ++i) received += queues_[i].received.load(rx);
  r.tenants = counters_.created.load(rx);
  r.torn_down = counters_.torn_down.load(rx);
  r.freed = counters_.freed.load(rx);
  r.evicted = counters_.evicted.load(rx);
  r.bytes_mapped = counters_.bytes_mapped.load(rx);
  r.bytes_unmapped = counters_.bytes_unmapped.load(rx);
  r.dom = dom_.stats();
  if (r.bytes_mapped != r.bytes_unmapped)
    check_failed(counters_, "%llu bytes mapped, %llu unmapped", static_cast<unsigned long long>(r.bytes_mapped),
                 static_cast<unsigned long long>(r.bytes_unmapped));
  if (r.tasks < received)
    check_failed(counters_, "%llu tasks run, fewer than the %llu received", static_cast<unsigned long long>(r.tasks),
                 static_cast<unsigned long long>(received));
  if (r.drops != r.tenants)
    check_failed(counters_, "%llu final drops timed for %llu tenants", static_cast<unsigned long long>(r.drops),
                 static_cast<unsigned long long>(r.tenants));
  // The books must balance; the failures of every check so far.
  r.failures = examples::check_balance(counters_, dom_, "tenants");
  r.ok = r.failures == 0;
  return r;
}

// ---- command line and report ---------------------------------------------------------------

options parse(int argc, char** argv) {
  options o;
  examples::parse_options(argc, argv, usage_text, o,
                          {{"--workers", &o.workers, 64}, {"--tenants", &o.tenants, 100000}, {"--tasks", &o.tasks},
                           {"--churn", &o.churn, 1ull << 30}, {"--rounds", &o.rounds, 1000}});
  if (o.workers == 0) o.workers = std::clamp(std::thread::hardware_concurrency(), 2u, 8u);
  o.rounds = static_cast<unsigned>(std::min<std::uint64_t>(o.rounds, o.tasks));
  return o;
}

double per_second(std::uint64_t n, double s) {
  return s > 0 ? static_cast<double>(n) / s : 0.0;
}

void print_report(const std::vector<run_result>& rs) {
  std::printf("\nhot path (per policy, same workload)\n");
  std::printf("%-19s %11s %10s %10s %11s %6s %9s %10s\n", "policy", "tasks run", "tasks/s", "switches", "lazy hits",
              "hit%", "migrated", "polls");
  for (const run_result& r : rs) {
    const std::uint64_t entries = r.switches + r.lazy_hits;
    std::printf("%-19s %11llu %9.2fM %10llu %11llu %5.1f%% %9llu %10llu\n", r.policy,
                static_cast<unsigned long long>(r.tasks), per_second(r.tasks, r.seconds) / 1e6,
                static_cast<unsigned long long>(r.switches), static_cast<unsigned long long>(r.lazy_hits),
                entries ? 100.0 * static_cast<double>(r.lazy_hits) / static_cast<double>(entries) : 0.0,
                static_cast<unsigned long long>(r.migrated), static_cast<unsigned long long>(r.polls));
  }
  std::printf("\nreclamation\n");
  std::printf("%-19s %8s %9s %8s %7s %8s %7s %7s %5s %12s %12s\n", "policy", "tenants", "torn down", "freed", "rounds",
              "barriers", "steals", "evicted", "waits", "drop mean", "drop worst");
  for (const run_result& r : rs) {
    const double mean_us = r.drops ? static_cast<double>(r.drop_ns_sum) / static_cast<double>(r.drops) / 1e3 : 0.0;
    std::printf("%-19s %8llu %9llu %8llu %7llu %8llu %7llu %7llu %5llu %9.2f us %9.1f us\n", r.policy,
                static_cast<unsigned long long>(r.tenants), static_cast<unsigned long long>(r.torn_down),
                static_cast<unsigned long long>(r.freed), static_cast<unsigned long long>(r.dom.rounds),
                static_cast<unsigned long long>(r.dom.heavy_barriers), static_cast<unsigned long long>(r.dom.steals),
                static_cast<unsigned long long>(r.evicted), static_cast<unsigned long long>(r.dom.waits), mean_us,
                static_cast<double>(r.drop_ns_max) / 1e3);
  }
  std::printf(
      "\nswitches: real switches (hooks ran); lazy hits: the tenant was still loaded from an earlier task, so\n"
      "switch_to did nothing; migrated: tasks taken from another worker's queue. rounds: shootdown rounds (one\n"
      "per tenant under the shootdown policies); barriers: rounds that found a lazy holder and so issued the\n"
      "heavy barrier; steals: lazy holds taken away (on_evict ran); waits: holders caught inside a switch.\n"
      "drop: the control thread's final owning_ref::reset(): round (implicit), teardown (munmap) and, for the\n"
      "last structural reference, the free (explicit: with its round). Checked mode and a shared machine are\n"
      "in these numbers: they show the shape, the benchmarks measure the cost.\n");
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse(argc, argv);
  examples::print_header("",
                         "lazymm tenant_pool: %u workers, %u live tenants, churn 1 tenant / %u requests, per "
                         "policy: up to %llu requests or %.2f s, in %u rounds taken in turn\n",
                         o.workers, o.tenants, o.churn, static_cast<unsigned long long>(o.tasks), o.duration,
                         o.rounds);
  std::printf(
      "each tenant: %u x 16 KiB mmap'd slabs; tasks: work (1 in 4 issues an I/O: completion, then "
      "continuation) and timers\n",
      o.workers);
  std::fflush(stdout);
  const bool want[3] = {examples::chosen<lazymm::refcount>(o.policy),
                        examples::chosen<lazymm::explicit_shootdown>(o.policy),
                        examples::chosen<lazymm::implicit_shootdown>(o.policy)};
  const unsigned policies = static_cast<unsigned>(want[0] + want[1] + want[2]);
  options per = o;  // one round of one policy
  per.duration = o.duration / o.rounds;
  per.tasks = o.tasks / o.rounds;
  const bool progress = o.duration * policies > 2.0;
  run_result total[3];
  const auto start = steady::now();
  for (unsigned round = 0; round < o.rounds; ++round) {
    per.seed = o.seed + round;  // the same workload for every policy within a round
    if (want[0]) merge(total[0], examples::run_fresh<pool, lazymm::refcount>(per));
    if (want[1]) merge(total[1], examples::run_fresh<pool, lazymm::explicit_shootdown>(per));
    if (want[2]) merge(total[2], examples::run_fresh<pool, lazymm::implicit_shootdown>(per));
    if (progress)
      std::fprintf(stderr, "  round %u/%u done, %.1f s\n", round + 1, o.rounds,
                   std::chrono::duration<double>(steady::now() - start).count());
  }
  std::vector<run_result> rs;
  for (unsigned k = 0; k < 3; ++k)
    if (want[k]) rs.push_back(total[k]);
  print_report(rs);
  bool ok = true;
  for (const run_result& r : rs) ok = ok && r.ok;
  return examples::verdict(ok, "every tenant created was torn down and freed exactly once, every task ran with its "
                               "own slab bound, every mapped byte was unmapped");
}
