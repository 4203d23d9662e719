// Workload 2: real switches among K contexts per executor (K = 2, 16, 1024).
//
// Each thread owns K contexts and repeats: task of context i -> context-free work (lazy) -> task
// of context i+1 (mod K). Every switch is a real one (the loaded context differs), so lazymm runs
// its full switch protocol: odd seq, light barrier (a compiler barrier on membarrier, a seq_cst
// fence on the fence backend), slot read, slot write, even seq; the refcount policy also drops
// the lazy hold of the previous context. K = 1024 adds cache misses on the contexts themselves.
// Peers: the floor (thread-local pointer stores), a per-worker std::shared_ptr lazy copy, and an
// intrusive atomic refcount, each over the same K objects.
#include <memory>
#include <vector>

#include "common.hpp"

namespace bench {
namespace {

// Next index mod K without a division.
inline std::size_t next_index(std::size_t i, std::size_t k) noexcept {
  return i + 1 == k ? 0 : i + 1;
}

template <class P, class B>
struct lazymm_switch : per_run<lazymm::domain<P, B>> {
  static void run(benchmark::State& st) {
    auto* dom = lazymm_switch::p;
    if (!backend_in_force<B>(st, *dom)) return;
    const auto k = static_cast<std::size_t>(st.range(0));
    std::vector<lazymm::owning_ref<bench_ctx>> ctxs;  // declared first: outlives the executor
    ctxs.reserve(k);
    for (std::size_t i = 0; i < k; ++i) ctxs.push_back(dom->template make<bench_ctx>());
    auto ex = dom->attach();
    std::uint64_t acc = 0;
    std::size_t i = 0;
    for (auto _ : st) {
      i = next_index(i, k);
      ex.switch_to(ctxs[i]);  // real switch: ctxs[i-1] was loaded (lazily)
      tiny_work(ctxs[i].get(), acc);
      ex.go_lazy();
    }
  }
};

struct floor_switch {
  static void setup(const benchmark::State&) {}
  static void teardown(const benchmark::State&) {}
  static void run(benchmark::State& st) {
    const auto k = static_cast<std::size_t>(st.range(0));
    std::vector<std::unique_ptr<payload>> objs;
    for (std::size_t i = 0; i < k; ++i) objs.push_back(std::make_unique<payload>());
    std::uint64_t acc = 0;
    std::size_t i = 0;
    for (auto _ : st) {
      i = next_index(i, k);
      const payload* c = objs[i].get();
      tl_current = c;
      compiler_barrier();
      tiny_work(c, acc);
      compiler_barrier();
      tl_current = nullptr;
      compiler_barrier();
    }
  }
};

struct shared_ptr_switch {
  static void setup(const benchmark::State&) {}
  static void teardown(const benchmark::State&) {}
  static void run(benchmark::State& st) {
    const auto k = static_cast<std::size_t>(st.range(0));
    std::vector<std::shared_ptr<payload>> objs;
    for (std::size_t i = 0; i < k; ++i) objs.push_back(std::make_shared<payload>());
    std::shared_ptr<payload> lazy_hold;
    std::uint64_t acc = 0;
    std::size_t i = 0;
    for (auto _ : st) {
      i = next_index(i, k);
      lazy_hold.reset();  // switch: drop the lazy copy of the previous context
      tiny_work(objs[i].get(), acc);
      lazy_hold = objs[i];  // context-free work: keep a counted copy
    }
  }
};

struct intrusive_switch {
  static void setup(const benchmark::State&) {}
  static void teardown(const benchmark::State&) {}
  static void run(benchmark::State& st) {
    const auto k = static_cast<std::size_t>(st.range(0));
    std::vector<std::unique_ptr<counted_payload>> objs;
    for (std::size_t i = 0; i < k; ++i) objs.push_back(std::make_unique<counted_payload>());
    counted_payload* lazy = nullptr;
    std::uint64_t acc = 0;
    std::size_t i = 0;
    for (auto _ : st) {
      i = next_index(i, k);
      // acq_rel: a decrement that could be the last orders our uses before the free (pairs with
      // the other decrements); the vector's reference keeps it above zero here.
      if (lazy) lazy->refs.fetch_sub(1, std::memory_order_acq_rel);
      tiny_work(&objs[i]->data, acc);
      // relaxed: the count is already above zero (the vector's reference); nothing to publish.
      objs[i]->refs.fetch_add(1, std::memory_order_relaxed);
      lazy = objs[i].get();
    }
    if (lazy) lazy->refs.fetch_sub(1, std::memory_order_acq_rel);  // as above
  }
};

template <class V>
void add(const std::string& variant, int cpus) {
  auto* b = benchmark::RegisterBenchmark(("switch/" + variant).c_str(), &V::run)
                ->Setup(&V::setup)
                ->Teardown(&V::teardown)
                ->ArgName("K")
                ->Arg(2)
                ->Arg(16)
                ->Arg(1024)
                ->UseRealTime();
  b->Threads(1);
  if (cpus > 1) b->Threads(cpus);
}

}  // namespace

void register_switch(int cpus) {
  add<floor_switch>("floor", cpus);
  for_each_policy_backend([cpus]<class P, class B>() { add<lazymm_switch<P, B>>(variant_name<P, B>(), cpus); });
  add<shared_ptr_switch>("shared_ptr", cpus);
  add<intrusive_switch>("intrusive_refcount", cpus);
}

}  // namespace bench
