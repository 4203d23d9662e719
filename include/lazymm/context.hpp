// lazymm/context.hpp: the intrusive context header, its hooks, and the reference handles.
//
// A context has two counts, as a kernel mm_struct does:
//   owning     (mm_users): the contents are alive. Reaching zero runs the teardown hook once.
//   structural (mm_count): the memory is alive. Reaching zero frees it once. All owners
//                          together hold one structural reference.
#pragma once

#include <lazymm/config.hpp>
#include <lazymm/detail/diag.hpp>
#include <lazymm/detail/protocol.hpp>
#include <lazymm/fwd.hpp>

#include <atomic>
#include <compare>
#include <concepts>
#include <cstdint>
#include <string_view>
#include <type_traits>
#include <utility>

namespace lazymm {

// Names an executor in hooks and messages. `value` is small and dense per domain; a detached
// executor's value may be reused by a later attach, which then has a higher `generation`: the
// pair names one attach, so an on_evict that runs after the holder detached and its record was
// reused still names the holder.
struct executor_id {
  std::uint32_t value = ~0u;
  std::uint32_t generation = 0;
  friend constexpr auto operator<=>(executor_id, executor_id) = default;
};

namespace detail {

class domain_base;

// Type-erased hooks of one context type; a null entry means "the type has no such hook".
// (Ids go by reference inside lazymm: GenMC cannot follow a two-word struct passed by value.)
struct context_ops {
  void (*activate)(context*, const executor_id&) noexcept;
  void (*deactivate)(context*, const executor_id&) noexcept;
  void (*teardown)(context*) noexcept;
  void (*evict)(context*, const executor_id&) noexcept;
  void (*stolen)(const executor_id&) noexcept;  // static: the context may be gone when it runs
  void (*free)(context*) noexcept;  // never null: defaults to `delete`
  std::string_view type_name;
  // What a real switch reads as one byte (executor::general_): switch_general if deactivate is
  // not null (the switch away from such a context takes the general form), switch_stolen if
  // stolen is not null, switch_activates if activate is not null (the switch to it does).
  std::uint8_t switch_flags;
};
inline constexpr std::uint8_t switch_general = 1, switch_stolen = 4, switch_activates = 8, switch_thread_bound = 16;

// Header states, checked in checked mode; the freed value is also the poison.
enum : std::uint32_t {
  state_live = 0x11fe11feu,
  state_torn_down = 0x7ea2d0a2u,
  state_freed = 0xdeadbeefu,
};

void release_owning(context* c) noexcept;
void release_structural(context* c) noexcept;
struct retire_link;
struct final_drops;

}  // namespace detail

// Base class of every context type. Derive publicly (not virtually) and create instances with
// domain::make<T>(), which fills in the header. Not copyable or movable: executors and handles
// refer to it by address.
class context {
 public:
  context() = default;
  context(const context&) = delete;
  context& operator=(const context&) = delete;

  // Approximate counts, for diagnostics and tests only (relaxed: a snapshot that orders nothing).
  std::int64_t owning_count() const noexcept { return users_.load(std::memory_order_relaxed); }
  std::int64_t structural_count() const noexcept { return count_.load(std::memory_order_relaxed); }

 protected:
  ~context() = default;

 private:
  template <class, class>
  friend class domain;
  template <class>
  friend class executor;
  template <class>
  friend class scoped_switch;
  friend class detail::domain_base;
  template <class, class>
  friend class ref;
  friend struct owning_kind;
  friend struct structural_kind;
  friend void detail::release_owning(context*) noexcept;
  friend void detail::release_structural(context*) noexcept;
  friend struct detail::final_drops;

  std::atomic<std::int64_t> users_{1};  // owning references
  std::atomic<std::int64_t> count_{1};  // structural references (+1 held by all owners together)
  detail::domain_base* domain_ = nullptr;
  const detail::context_ops* ops_ = nullptr;
  std::atomic<std::uint32_t> state_{detail::state_live};  // read only in checked mode
  context* retire_next_ = nullptr;  // batched policies: the retire queue's link (detail::retire_link)
  detail::holder_set holders_;      // shootdown policies: executors that may hold it (protocol.hpp)
  // Thread-bound types only (T::thread_bound): loads of this context not yet undone on their
  // holder's thread (each real switch to it adds one, its on_deactivate takes it away), plus one
  // for the owners, which the final drop's round gives back. The teardown (free, under explicit)
  // runs when it reaches zero, on whichever thread brings it there.
  std::atomic<std::int64_t> binds_{1};
  friend struct detail::retire_link;
};

namespace detail {
// The retire queue's link through the context header (detail/retire_queue.hpp).
struct retire_link {
  static context*& next(context* c) noexcept { return c->retire_next_; }
  static const holder_set& holders(const context* c) noexcept { return c->holders_; }
};
}  // namespace detail

// ---- hooks --------------------------------------------------------------------------------
// All optional, detected at compile time, and noexcept (a hook that throws would leave a switch
// or a final drop half done). Hooks must be public: a hook that T declares (or inherits) but that
// lazymm cannot call (private, protected, ambiguous) is a compile error, except in a `final` T,
// where the language gives no way to find it (it is then silently never called).
//   void on_activate(executor_id) noexcept    owner executor, inside a switch to this context
//   void on_deactivate(executor_id) noexcept  owner executor, inside a switch away from it
//   void on_teardown() noexcept               owning count reached zero (exactly once)
//   void on_evict(executor_id) noexcept       a reclaimer stole this context from that
//                                             executor's slot (runs on the reclaimer thread)
//   static void on_stolen(executor_id) noexcept  the same steal, seen by the evicted executor on
//                                             its own thread, where on_deactivate would have run
//                                             (static: the context may be freed by then)
//   static void on_free(T*) noexcept          releases the memory (default: delete); declared
//                                             for T itself (an inherited on_free(Base*) is refused)
//   static constexpr bool thread_bound = true   not a hook: the type binds per-thread state in
//                                             on_activate that only the holder's own thread can
//                                             undo (on_deactivate, required): every load gets
//                                             its on_deactivate on its thread, after a steal too,
//                                             before the teardown (free, under explicit_shootdown)
//                                             runs; both hooks run outside the switch protocol
namespace detail {

// T::thread_bound, if T declares it (docs/api.md, "Thread-bound contexts").
template <class T>
constexpr bool declared_thread_bound() {
  if constexpr (requires { T::thread_bound; })
    return static_cast<bool>(T::thread_bound);
  else
    return false;
}
template <class T>
inline constexpr bool thread_bound_v = declared_thread_bound<T>();

template <class T>
concept has_on_activate = requires(T& t, executor_id e) { t.on_activate(e); };
template <class T>
concept has_on_deactivate = requires(T& t, executor_id e) { t.on_deactivate(e); };
template <class T>
concept has_on_teardown = requires(T& t) { t.on_teardown(); };
template <class T>
concept has_on_evict = requires(T& t, executor_id e) { t.on_evict(e); };
template <class T>
concept has_on_stolen = requires(const executor_id& e) { T::on_stolen(e); };
// Exactly T::on_free(T*): an inherited static on_free(Base*) would be callable with a T* too, and
// would destroy a Base, skipping T's destructor.
template <class T>
concept has_on_free = requires(T* p) {
  T::on_free(p);
  static_cast<void (*)(T*)>(&T::on_free);
};

// A member with the hook's name that is not callable as the hook: a typo in the signature.
template <class T>
concept names_on_activate = requires { &T::on_activate; };
template <class T>
concept names_on_deactivate = requires { &T::on_deactivate; };
template <class T>
concept names_on_teardown = requires { &T::on_teardown; };
template <class T>
concept names_on_evict = requires { &T::on_evict; };
template <class T>
concept names_on_stolen = requires { &T::on_stolen; };
template <class T>
concept names_on_free = requires { &T::on_free; };

// Whether T declares or inherits a member of that name, whatever its access: a probe derived
// from T and from a mixin that declares the name finds it ambiguously iff T has it too (access is
// checked after name lookup). A final T cannot be derived from: nothing is found there.
#define LAZYMM_DECLARES_HOOK(hook)                                                  \
  struct declares_##hook##_mixin {                                                  \
    void hook();                                                                    \
  };                                                                                \
  template <class T>                                                                \
  struct declares_##hook##_probe : T, declares_##hook##_mixin {};                   \
  template <class T>                                                                \
  constexpr bool declares_##hook() {                                                \
    if constexpr (std::is_final_v<T>)                                               \
      return false;                                                                 \
    else                                                                            \
      return !requires { &declares_##hook##_probe<T>::hook; };                      \
  }
LAZYMM_DECLARES_HOOK(on_activate)
LAZYMM_DECLARES_HOOK(on_deactivate)
LAZYMM_DECLARES_HOOK(on_teardown)
LAZYMM_DECLARES_HOOK(on_evict)
LAZYMM_DECLARES_HOOK(on_stolen)
LAZYMM_DECLARES_HOOK(on_free)
#undef LAZYMM_DECLARES_HOOK

// Every hook T declares can be named by lazymm (a private or protected hook would silently
// never be called).
template <class T>
constexpr bool hooks_accessible() {
  return (!declares_on_activate<T>() || names_on_activate<T>) &&
         (!declares_on_deactivate<T>() || names_on_deactivate<T>) &&
         (!declares_on_teardown<T>() || names_on_teardown<T>) && (!declares_on_evict<T>() || names_on_evict<T>) &&
         (!declares_on_stolen<T>() || names_on_stolen<T>) && (!declares_on_free<T>() || names_on_free<T>);
}

template <class T>
constexpr bool hooks_noexcept() {
  bool ok = true;
  if constexpr (has_on_activate<T>) ok = ok && noexcept(std::declval<T&>().on_activate(executor_id{}));
  if constexpr (has_on_deactivate<T>) ok = ok && noexcept(std::declval<T&>().on_deactivate(executor_id{}));
  if constexpr (has_on_teardown<T>) ok = ok && noexcept(std::declval<T&>().on_teardown());
  if constexpr (has_on_evict<T>) ok = ok && noexcept(std::declval<T&>().on_evict(executor_id{}));
  if constexpr (has_on_stolen<T>) ok = ok && noexcept(T::on_stolen(executor_id{}));
  if constexpr (has_on_free<T>) ok = ok && noexcept(T::on_free(std::declval<T*>()));
  return ok;
}

template <class T>
constexpr bool hooks_well_formed() {
  return (!names_on_activate<T> || has_on_activate<T>) && (!names_on_deactivate<T> || has_on_deactivate<T>) &&
         (!names_on_teardown<T> || has_on_teardown<T>) && (!names_on_evict<T> || has_on_evict<T>) &&
         (!names_on_stolen<T> || has_on_stolen<T>) && (!names_on_free<T> || has_on_free<T>) &&
         hooks_accessible<T>() && hooks_noexcept<T>();
}

}  // namespace detail

// What a context type must be: a class derived publicly from lazymm::context whose hooks, if
// any, have the signatures above and are noexcept. domain::make<T> checks each part with its
// own message.
template <class T>
concept context_type = std::is_class_v<T> && std::derived_from<T, context> && detail::hooks_well_formed<T>();

namespace detail {

template <class T>
void check_context_type() {
  static_assert(std::is_class_v<T> && std::derived_from<T, context>,
                "lazymm: a context type must derive publicly from lazymm::context");
  static_assert(!names_on_activate<T> || has_on_activate<T>,
                "lazymm: on_activate must be callable as on_activate(lazymm::executor_id)");
  static_assert(!names_on_deactivate<T> || has_on_deactivate<T>,
                "lazymm: on_deactivate must be callable as on_deactivate(lazymm::executor_id)");
  static_assert(!names_on_teardown<T> || has_on_teardown<T>, "lazymm: on_teardown must be callable as on_teardown()");
  static_assert(!names_on_evict<T> || has_on_evict<T>,
                "lazymm: on_evict must be callable as on_evict(lazymm::executor_id)");
  static_assert(!names_on_stolen<T> || has_on_stolen<T>,
                "lazymm: on_stolen must be a static member callable as T::on_stolen(lazymm::executor_id)");
  static_assert(!names_on_free<T> || has_on_free<T>,
                "lazymm: on_free must be a static member callable as T::on_free(T*), declared for T itself "
                "(an inherited on_free(Base*) would skip T's destructor)");
  static_assert(hooks_accessible<T>(),
                "lazymm: a context hook is declared but not public (private, protected or ambiguous): lazymm "
                "cannot call it");
  static_assert(hooks_noexcept<T>(), "lazymm: context hooks must be noexcept");
  static_assert(!thread_bound_v<T> || has_on_deactivate<T>,
                "lazymm: a thread_bound context type needs on_deactivate(lazymm::executor_id): the undo that runs on "
                "each holder's own thread before the teardown");
}

template <class T>
struct ops_for {
  // Each body is discarded when T lacks the hook; the table then holds nullptr for it.
  static void activate(context* c, const executor_id& e) noexcept {
    if constexpr (has_on_activate<T>) static_cast<T*>(c)->on_activate(e);
  }
  static void deactivate(context* c, const executor_id& e) noexcept {
    if constexpr (has_on_deactivate<T>) static_cast<T*>(c)->on_deactivate(e);
  }
  static void teardown(context* c) noexcept {
    if constexpr (has_on_teardown<T>) static_cast<T*>(c)->on_teardown();
  }
  static void evict(context* c, const executor_id& e) noexcept {
    if constexpr (has_on_evict<T>) static_cast<T*>(c)->on_evict(e);
  }
  static void stolen(const executor_id& e) noexcept {
    if constexpr (has_on_stolen<T>) T::on_stolen(e);
  }
  static void free(context* c) noexcept {
    if constexpr (has_on_free<T>)
      T::on_free(static_cast<T*>(c));
    else
      delete static_cast<T*>(c);
  }
  static constexpr context_ops table{
      has_on_activate<T> ? &activate : nullptr,
      has_on_deactivate<T> ? &deactivate : nullptr,
      has_on_teardown<T> ? &teardown : nullptr,
      has_on_evict<T> ? &evict : nullptr,
      has_on_stolen<T> ? &stolen : nullptr,
      &free,
      type_name<T>(),
      static_cast<std::uint8_t>((has_on_deactivate<T> ? switch_general : 0) | (has_on_stolen<T> ? switch_stolen : 0) |
                                (has_on_activate<T> ? switch_activates : 0) |
                                (thread_bound_v<T> ? switch_general | switch_activates | switch_thread_bound : 0)),
  };
};

}  // namespace detail

// ---- reference handles --------------------------------------------------------------------

// Owning reference (mmget / mmput).
struct owning_kind {
  static void acquire(context* c) noexcept {
    // Checked mode only; relaxed: the caller's reference orders it after the make / before the teardown.
    LAZYMM_DCHECK(c->state_.load(std::memory_order_relaxed) == detail::state_live,
                  "owning reference copied from context %p after its teardown or free", static_cast<void*>(c));
    // Relaxed: the copy is made from a reference that already keeps the count above zero.
    c->users_.fetch_add(1, std::memory_order_relaxed);
  }
  static void release(context* c) noexcept { detail::release_owning(c); }
};

// Structural reference (mmgrab / mmdrop).
struct structural_kind {
  static void acquire(context* c) noexcept {
    // Checked mode only; relaxed: as above.
    LAZYMM_DCHECK(c->state_.load(std::memory_order_relaxed) != detail::state_freed,
                  "structural reference copied from freed context %p", static_cast<void*>(c));
    // Relaxed: made from a reference that already keeps the count above zero.
    c->count_.fetch_add(1, std::memory_order_relaxed);
  }
  static void release(context* c) noexcept { detail::release_structural(c); }
};

// An RAII reference of kind Kind to a T. Copy adds a reference, move transfers it, destruction
// or reset() drops it. An empty ref (default-constructed, moved-from, reset) holds nothing.
template <class T, class Kind>
class ref {
 public:
  ref() noexcept {}  // user-provided: `ref r{}` is not a zero-fill (GenMC cannot follow a memset)
  ref(const ref& o) noexcept : p_(o.p_) {
    if (p_) Kind::acquire(p_);
  }
  ref(ref&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  template <class U>
    requires std::convertible_to<U*, T*>
  ref(const ref<U, Kind>& o) noexcept : p_(o.get()) {  // NOLINT: implicit upcast, as shared_ptr
    if (p_) Kind::acquire(p_);
  }
  template <class U>
    requires std::convertible_to<U*, T*>
  ref(ref<U, Kind>&& o) noexcept : p_(o.release()) {}  // NOLINT
  ref& operator=(ref o) noexcept {
    std::swap(p_, o.p_);
    return *this;
  }
  ~ref() { reset(); }

  // Drops the reference now (may run the teardown hook, a shootdown round, or the free).
  void reset() noexcept {
    if (T* p = std::exchange(p_, nullptr)) Kind::release(p);
  }
  // Gives up the reference without dropping it; pair with adopt().
  [[nodiscard]] T* release() noexcept { return std::exchange(p_, nullptr); }
  // Takes over a reference previously given up by release().
  [[nodiscard]] static ref adopt(T* p) noexcept {
    ref r;
    r.p_ = p;
    return r;
  }

  T* get() const noexcept { return p_; }
  T& operator*() const noexcept { return *p_; }
  T* operator->() const noexcept { return p_; }
  explicit operator bool() const noexcept { return p_ != nullptr; }
  friend bool operator==(const ref& a, const ref& b) noexcept { return a.p_ == b.p_; }

  // Owning -> structural: a structural reference to the same context (mmgrab).
  structural_ref<T> structural() const noexcept
    requires std::same_as<Kind, owning_kind>
  {
    if (p_) structural_kind::acquire(p_);
    return structural_ref<T>::adopt(p_);
  }

  // Structural -> owning: succeeds while the owning count is above zero, and fails (returns an
  // empty ref) forever once it has reached zero (mmget_not_zero).
  owning_ref<T> try_upgrade() const noexcept
    requires std::same_as<Kind, structural_kind>
  {
    if (!p_) return {};
    auto& users = static_cast<context*>(p_)->users_;
    // Relaxed: a first guess for the CAS; the structural reference we hold keeps the header
    // valid while we try.
    std::int64_t n = users.load(std::memory_order_relaxed);
    // acquire on success: pairs with the release of every earlier owner's drop (the counter's
    // RMWs form one release sequence), so the new owner sees what earlier owners wrote, as
    // mmget_not_zero and weak_ptr::lock give. Relaxed on failure: we only retry or give up.
    while (n > 0)
      if (users.compare_exchange_weak(n, n + 1, std::memory_order_acquire, std::memory_order_relaxed))
        return owning_ref<T>::adopt(p_);
    return {};
  }

 private:
  template <class, class>
  friend class ref;
  T* p_ = nullptr;
};

}  // namespace lazymm
