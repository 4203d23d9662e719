// Shared test support: the policy x backend matrix for typed suites, a counting context type,
// and pause points that force interleavings through the LAZYMM_TEST_SEAMS hooks.
#pragma once

#include <lazymm/lazymm.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace lazymm_test {

template <class P, class B>
struct combo {
  using policy = P;
  using backend = B;
  using domain = lazymm::domain<P, B>;
};

using all_combos = ::testing::Types<combo<lazymm::refcount, lazymm::fence_backend>,
                                    combo<lazymm::refcount, lazymm::membarrier_backend>,
                                    combo<lazymm::explicit_shootdown, lazymm::fence_backend>,
                                    combo<lazymm::explicit_shootdown, lazymm::membarrier_backend>,
                                    combo<lazymm::implicit_shootdown, lazymm::fence_backend>,
                                    combo<lazymm::implicit_shootdown, lazymm::membarrier_backend>>;

struct combo_names {
  template <class C>
  static std::string GetName(int) {
    return std::string(C::policy::name) + "_" + C::backend::name;
  }
};

// Everything that happens to counted contexts, in order, from any thread.
struct event_log {
  enum kind { activate, deactivate, teardown, evict, free };
  struct event {
    kind k;
    int ctx;
    std::uint32_t exec;
  };
  std::mutex m;
  std::vector<event> events;
  void add(kind k, int ctx, std::uint32_t exec = ~0u) {
    std::lock_guard g(m);
    events.push_back({k, ctx, exec});
  }
  int count(kind k, int ctx) {
    std::lock_guard g(m);
    int n = 0;
    for (auto& e : events) n += e.k == k && e.ctx == ctx;
    return n;
  }
  // Index of the first event of kind k for ctx, or -1.
  int index(kind k, int ctx) {
    std::lock_guard g(m);
    for (std::size_t i = 0; i < events.size(); ++i)
      if (events[i].k == k && events[i].ctx == ctx) return static_cast<int>(i);
    return -1;
  }
  std::vector<event> of(kind k, int ctx) {
    std::lock_guard g(m);
    std::vector<event> r;
    for (auto& e : events)
      if (e.k == k && e.ctx == ctx) r.push_back(e);
    return r;
  }
};

// The history every context must have: exactly one teardown, then exactly one free, no activate
// after the teardown and no hook at all after the free.
inline void expect_clean_history(event_log& log, int ctx) {
  std::lock_guard g(log.m);
  int teardowns = 0, frees = 0;
  for (std::size_t i = 0; i < log.events.size(); ++i) {
    const auto& e = log.events[i];
    if (e.ctx != ctx) continue;
    EXPECT_EQ(frees, 0) << "context " << ctx << ": hook " << e.k << " at event " << i << " after its free";
    if (e.k == event_log::activate) {
      EXPECT_EQ(teardowns, 0) << "context " << ctx << ": activated after its teardown";
    }
    if (e.k == event_log::teardown) ++teardowns;
    if (e.k == event_log::free) {
      EXPECT_EQ(teardowns, 1) << "context " << ctx << ": freed before its teardown";
      ++frees;
    }
  }
  EXPECT_EQ(teardowns, 1) << "context " << ctx;
  EXPECT_EQ(frees, 1) << "context " << ctx;
}

// A context that records every hook in a log and carries a canary that teardown and free
// poison, so a use after free is visible even without ASan.
struct counted : lazymm::context {
  static constexpr std::uint64_t alive = 0xa11ce0a11ce0a11cull;
  counted(event_log& l, int id) : log(&l), id(id) {}
  event_log* log;
  int id;
  std::uint64_t canary = alive;
  void on_activate(lazymm::executor_id e) noexcept { use(event_log::activate, e); }
  void on_deactivate(lazymm::executor_id e) noexcept { use(event_log::deactivate, e); }
  void on_teardown() noexcept {
    EXPECT_EQ(canary, alive);
    log->add(event_log::teardown, id);
  }
  void on_evict(lazymm::executor_id e) noexcept { log->add(event_log::evict, id, e.value); }
  static void on_free(counted* c) noexcept {
    c->log->add(event_log::free, c->id);
    c->canary = 0xdeadull;
    delete c;
  }

 private:
  void use(event_log::kind k, lazymm::executor_id e) noexcept {
    EXPECT_EQ(canary, alive) << "hook on a dead context " << id;
    log->add(k, id, e.value);
  }
};

// Pauses the first thread that reaches `point` as executor `exec` (any executor if ~0u) until
// resume(). One at a time per process; the destructor removes the hook and releases the thread.
class pause_at {
 public:
  pause_at(lazymm::test_point p, std::uint32_t exec = ~0u) : point_(p), exec_(exec) {
    current().store(this);
    lazymm::detail::seams::on_point.store(&trampoline);
  }
  ~pause_at() {
    resume();
    lazymm::detail::seams::on_point.store(nullptr);
    current().store(nullptr);
  }
  pause_at(const pause_at&) = delete;
  pause_at& operator=(const pause_at&) = delete;

  // Waits (up to 10 s) until a thread is paused at the point.
  bool wait_reached() {
    std::unique_lock g(m_);
    return cv_.wait_for(g, std::chrono::seconds(10), [&] { return reached_; });
  }
  void resume() {
    std::lock_guard g(m_);
    released_ = true;
    cv_.notify_all();
  }

 private:
  static std::atomic<pause_at*>& current() {
    static std::atomic<pause_at*> c{nullptr};
    return c;
  }
  static void trampoline(lazymm::test_point p, std::uint32_t exec) {
    if (pause_at* self = current().load()) self->hit(p, exec);
  }
  void hit(lazymm::test_point p, std::uint32_t exec) {
    if (p != point_ || (exec_ != ~0u && exec != exec_)) return;
    std::unique_lock g(m_);
    if (reached_) return;  // only the first arrival pauses
    reached_ = true;
    cv_.notify_all();
    cv_.wait(g, [&] { return released_; });
  }
  lazymm::test_point point_;
  std::uint32_t exec_;
  std::mutex m_;
  std::condition_variable cv_;
  bool reached_ = false;
  bool released_ = false;
};

// A one-shot event: one thread opens it, others wait for it (with a generous bound, so that a
// broken library fails the test instead of hanging it).
class gate {
 public:
  void open() {
    std::lock_guard g(m_);
    open_ = true;
    cv_.notify_all();
  }
  bool wait() {
    std::unique_lock g(m_);
    return cv_.wait_for(g, std::chrono::seconds(10), [&] { return open_; });
  }
  bool is_open() {
    std::lock_guard g(m_);
    return open_;
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool open_ = false;
};

// Polls pred until it holds (true) or 10 s pass (false).
template <class Pred>
bool eventually(Pred pred) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return true;
}

// A thread that runs f attached as an executor of d; the executor lives for the thread's body.
template <class Domain>
auto executor_thread(Domain& d, auto f) {
  return std::thread([&d, f]() mutable {
    auto ex = d.attach();
    f(ex);
  });
}

// A thread attached as an executor of a domain that runs jobs handed to it by run(), one at a
// time, and otherwise sits blocked on a condition variable: an idle (possibly lazy) holder.
template <class Domain>
class worker {
 public:
  using executor_type = typename Domain::executor_type;

  explicit worker(Domain& d) : thread_([this, &d] { body(d); }) {
    std::unique_lock g(m_);
    cv_.wait(g, [&] { return attached_; });
  }
  ~worker() { detach(); }
  worker(const worker&) = delete;
  worker& operator=(const worker&) = delete;

  // Runs f(executor) on the worker's thread and returns when it is done.
  void run(std::function<void(executor_type&)> f) {
    std::unique_lock g(m_);
    job_ = std::move(f);
    cv_.notify_all();
    cv_.wait(g, [&] { return !job_; });
  }
  // What the worker's executor has loaded (for comparison only).
  const lazymm::context* loaded() {
    const lazymm::context* r = nullptr;
    run([&](executor_type& ex) { r = ex.loaded(); });
    return r;
  }
  lazymm::executor_id id() const { return id_; }
  // Ends the thread; its executor detaches.
  void detach() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard g(m_);
      quit_ = true;
      cv_.notify_all();
    }
    thread_.join();
  }

 private:
  void body(Domain& d) {
    auto ex = d.attach();
    std::unique_lock g(m_);
    id_ = ex.id();
    attached_ = true;
    cv_.notify_all();
    for (;;) {
      cv_.wait(g, [&] { return quit_ || job_; });
      if (!job_) return;  // g unlocks before ex detaches
      job_(ex);
      job_ = nullptr;
      cv_.notify_all();
    }
  }

  std::mutex m_;
  std::condition_variable cv_;
  std::function<void(executor_type&)> job_;
  bool attached_ = false;
  bool quit_ = false;
  lazymm::executor_id id_;
  std::thread thread_;  // last: starts after the other members exist
};

}  // namespace lazymm_test
