// examples/common/runtime_shim.hpp: TEMPORARY SHIM, TO BE REMOVED when branch `runtime` (issue 9
// items 1-6: domain::thread_executor, lazymm::scoped_switch, on_stolen + executor::poll_stolen,
// domain::drop_latency) is merged. It stands in for that API, as /work/runtime-api-spec.md fixes
// it, over the 0.1 headers, so that the integrations build before it lands. It is included only
// when <lazymm/scoped_switch.hpp> does not exist. Its limits: a domain cannot be destroyed while
// a thread that used it is alive (the real one detaches them), no fork handling, drop latency
// reads zero.
#pragma once

#include <lazymm/lazymm.hpp>

#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>

namespace lazymm {

struct drop_latency {
  std::uint64_t count = 0, max_ns = 0;
  std::uint64_t log2_ns[32] = {};
  std::uint64_t percentile_ns(double) const noexcept { return 0; }
};

namespace shim {

template <class T>
concept has_on_stolen = requires(executor_id e) { T::on_stolen(e); };

template <class Policy>
class domain;

template <class Policy>
class executor {
 public:
  using real = typename lazymm::domain<Policy>::executor_type;
  explicit executor(lazymm::domain<Policy>& d) : ex_(new real(d.attach())), default_(d.default_context()) {}
  ~executor() {
    poll_stolen();
    ex_.reset();
  }
  template <class T>
  void switch_to(const owning_ref<T>& r) noexcept {
    poll_stolen();
    ex_->switch_to(r);
    loaded_ = r.get();
    if constexpr (has_on_stolen<T>)
      shim_stolen = &T::on_stolen;
    else
      shim_stolen = nullptr;
  }
  void switch_to_default() noexcept {
    poll_stolen();
    ex_->switch_to_default();
    loaded_ = default_;
  }
  void go_lazy() noexcept { ex_->go_lazy(); }
  const context* loaded() const noexcept { return ex_->loaded(); }
  bool is_lazy() const noexcept { return ex_->is_lazy(); }
  executor_id id() const noexcept { return ex_->id(); }
  bool poll_stolen() noexcept {
    if (loaded_ == default_ || ex_->loaded() != default_) return false;
    loaded_ = default_;
    if (shim_stolen) shim_stolen(ex_->id());
    return true;
  }

 private:
  std::unique_ptr<real> ex_;
  const context* default_;
  const context* loaded_ = default_;  // the private copy the real executor keeps

 public:
  void (*shim_stolen)(executor_id) noexcept = nullptr;  // the loaded type's on_stolen
};

template <class Policy>
class domain {
 public:
  using executor_type = executor<Policy>;
  template <class T, class... A>
  owning_ref<T> make(A&&... a) {
    return d_.template make<T>(static_cast<A&&>(a)...);
  }
  executor_type& thread_executor() {
    if (!mine) {
      thread_local holder h;  // detaches at thread exit; mine stays readable (null) after that
      mine = new executor_type(d_);
    }
    return *mine;
  }
  executor_type* find_thread_executor() noexcept { return mine; }
  domain_stats stats() const noexcept { return d_.stats(); }
  std::int64_t live_contexts() const noexcept { return d_.live_contexts(); }
  const context* default_context() const noexcept { return d_.default_context(); }
  lazymm::mechanism mechanism() const noexcept { return d_.mechanism(); }
  lazymm::drop_latency drop_latency() const noexcept { return {}; }

 private:
  struct holder {
    ~holder() { delete std::exchange(mine, nullptr); }
  };
  inline static thread_local executor_type* mine = nullptr;
  lazymm::domain<Policy> d_;
};

}  // namespace shim

template <class Executor>
class scoped_switch {
 public:
  template <class T>
  scoped_switch(Executor& ex, const owning_ref<T>& next) : ex_(ex), lazy_(ex.is_lazy()), stolen_(ex.shim_stolen) {
    const context* prev = ex.loaded();
    if (!lazy_ && prev != nullptr) {
      // An owning reference on what was loaded (it is alive: the outer task owns it).
      auto tmp = owning_ref<context>::adopt(const_cast<context*>(prev));
      prev_ = tmp;
      (void)tmp.release();
    }
    ex.switch_to(next);
  }
  scoped_switch(const scoped_switch&) = delete;
  scoped_switch& operator=(const scoped_switch&) = delete;
  ~scoped_switch() {
    if (lazy_) {
      ex_.go_lazy();
      return;
    }
    ex_.switch_to(prev_);
    ex_.shim_stolen = stolen_;
  }

 private:
  Executor& ex_;
  bool lazy_;
  void (*stolen_)(executor_id) noexcept;
  owning_ref<context> prev_;
};

}  // namespace lazymm
