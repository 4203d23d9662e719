// lazymm/domain.hpp: a set of executors, their contexts, a policy and a backend.
#pragma once

#include <lazymm/backend.hpp>
#include <lazymm/context.hpp>
#include <lazymm/detail/domain_base.hpp>
#include <lazymm/executor.hpp>
#include <lazymm/fwd.hpp>
#include <lazymm/policy.hpp>

#include <utility>

namespace lazymm {

// Owns the executor registry, the permanent default context and the backend's set-up.
// Create it before the workers start (membarrier registration happens in the constructor) and
// destroy it after every executor has detached and every context has been freed: anything else
// aborts with a message. Not copyable or movable: contexts and executors point to it.
template <class Policy, class Backend>
class domain final : public detail::domain_base {
 public:
  using policy = Policy;
  using backend = Backend;
  using executor_type = executor<domain>;

  domain() : domain_base(detail::choose_mechanism<Backend>()) {}
  ~domain() { check_destroyable(); }

  // Creates a T (new T(args...)) with one owning reference, returned.
  template <class T, class... Args>
  owning_ref<T> make(Args&&... args) {
    detail::check_context_type<T>();
    T* p = new T(std::forward<Args>(args)...);
    adopt_new(p);
    return owning_ref<T>::adopt(p);
  }

  // Attaches the calling thread as an executor, loaded with the default context. A thread may
  // be attached to a domain once at a time (a second attach aborts with a message).
  [[nodiscard]] executor_type attach() {
    for (auto* l = detail::executor_link::this_thread; l; l = l->next_on_thread)
      LAZYMM_CHECK(l->dom != this, "this thread is already attached to this domain as executor #%u", l->rec->id);
    return executor_type(*this);
  }

 private:
  void owning_zero(context* x) noexcept override {
    check_not_in_switch_hook(x);
#if !defined(LAZYMM_MUTANT_IMPLICIT_NO_ROUND)
    if constexpr (Policy::round == round_at::owning_zero) shootdown<Backend>(x);
#endif
    run_teardown(x);
    detail::release_structural(x);  // the owners' structural reference
  }

  void structural_zero(context* x) noexcept override {
    check_not_in_switch_hook(x);
    if constexpr (Policy::round == round_at::structural_zero) shootdown<Backend>(x);
    run_free(x);
  }
};

// make_context<T>(d, args...) is d.make<T>(args...).
template <class T, class Domain, class... Args>
owning_ref<T> make_context(Domain& d, Args&&... args) {
  return d.template make<T>(std::forward<Args>(args)...);
}

}  // namespace lazymm
