// The backend and its fallback (S5): which mechanism a domain uses and why, the refusals the
// membarrier backend survives (ENOSYS, EPERM, EINVAL, a kernel without PRIVATE_EXPEDITED), and
// that the heavy barrier really is one membarrier call per round that stole something.
//
// Refusals are simulated through lazymm::detail::seams::membarrier. Expectations follow the
// build and the environment the binary runs in:
//   - TSan builds never issue membarrier (the library picks fences and says ThreadSanitizer);
//   - LAZYMM_NO_MEMBARRIER in the environment turns it off (tests/fault: unit.no_membarrier_env);
//   - LAZYMM_TEST_FAKE_MEMBARRIER=ENOSYS|EPERM|EINVAL makes every command fail for the whole run
//     (fake_membarrier_env.cpp; tests/fault: unit.fallback.*).
// Tests that script the syscall themselves set both variables aside while they run.
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <latch>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "support.hpp"

using namespace lazymm_test;

namespace {

using lazymm::mechanism;
using lazymm::detail::seams;

#if LAZYMM_TSAN || !defined(__linux__)
static_assert(std::is_same_v<lazymm::default_backend, lazymm::fence_backend>,
              "TSan builds (and non-Linux) default to the fence backend");
#else
static_assert(std::is_same_v<lazymm::default_backend, lazymm::membarrier_backend>,
              "Linux builds default to the membarrier backend");
#endif

// ---- the environment ------------------------------------------------------------------------

// getenv/setenv are not thread-safe: the environment is read and written only on the main test
// thread, while no other thread of the test runs.
// NOLINTBEGIN(concurrency-mt-unsafe)

const char* fake_membarrier_variable() {
  const char* v = std::getenv("LAZYMM_TEST_FAKE_MEMBARRIER");
  return v && *v ? v : nullptr;
}

[[maybe_unused]] bool environment_disables_membarrier() {
  const char* v = std::getenv("LAZYMM_NO_MEMBARRIER");
  return v && *v && std::strcmp(v, "0") != 0;
}

const char* errno_name(int e) {
  return e == ENOSYS ? "ENOSYS" : e == EPERM ? "EPERM" : e == EINVAL ? "EINVAL" : "another errno";
}

// Sets (value != nullptr) or unsets an environment variable for a scope, then restores it.
// Only the main test thread touches the environment, and no other thread runs meanwhile.
class scoped_env {
 public:
  scoped_env(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value)
      ::setenv(name, value, 1);
    else
      ::unsetenv(name);
  }
  ~scoped_env() {
    if (old_)
      ::setenv(name_, old_->c_str(), 1);
    else
      ::unsetenv(name_);
  }
  scoped_env(const scoped_env&) = delete;
  scoped_env& operator=(const scoped_env&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};
// NOLINTEND(concurrency-mt-unsafe)

// ---- membarrier seams -------------------------------------------------------------------------

// Calls that reached the seam, by command (all atomics seq_cst: the reclaimer's calls may come
// from any thread, and these are tests).
struct membarrier_calls {
  std::atomic<int> query{0}, register_private_expedited{0}, private_expedited{0}, other{0};
  void count(int cmd) {
    if (cmd == MEMBARRIER_CMD_QUERY)
      ++query;
    else if (cmd == MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED)
      ++register_private_expedited;
    else if (cmd == MEMBARRIER_CMD_PRIVATE_EXPEDITED)
      ++private_expedited;
    else
      ++other;
  }
  int total() const { return query + register_private_expedited + private_expedited + other; }
  void clear() {
    query = 0;
    register_private_expedited = 0;
    private_expedited = 0;
    other = 0;
  }
};
membarrier_calls calls;

// The seam that was installed before ours (the fake environment's, or none).
std::atomic<long (*)(int, unsigned)> forward_to{nullptr};

long real_membarrier(int cmd, unsigned flags) {
  return ::syscall(__NR_membarrier, cmd, flags, 0);
}

// Counts, then does what would have happened without us: the previous seam, or the syscall.
long count_and_forward(int cmd, unsigned flags) {
  calls.count(cmd);
  if (auto f = forward_to.load()) return f(cmd, flags);
  return real_membarrier(cmd, flags);
}

// Counts, then answers as the script says: `fail_cmd` fails with `err`; QUERY answers
// `query_answer`; anything else succeeds without a syscall.
struct {
  std::atomic<int> fail_cmd{-1};
  std::atomic<int> err{0};
  std::atomic<long> query_answer{0};
} script;

long count_and_follow_the_script(int cmd, unsigned) {
  calls.count(cmd);
  if (cmd == script.fail_cmd.load()) {
    errno = script.err.load();
    return -1;
  }
  if (cmd == MEMBARRIER_CMD_QUERY) return script.query_answer.load();
  return 0;
}

// Installs a seam for a scope and clears the call counts. `chain`: count_and_forward passes
// calls on to the seam installed before (so the fake environment still applies).
class membarrier_seam {
 public:
  membarrier_seam(long (*f)(int, unsigned), bool chain) : previous_(seams::membarrier.exchange(f)) {
    forward_to.store(chain ? previous_ : nullptr);
    calls.clear();
  }
  ~membarrier_seam() {
    seams::membarrier.store(previous_);
    forward_to.store(nullptr);
  }
  membarrier_seam(const membarrier_seam&) = delete;
  membarrier_seam& operator=(const membarrier_seam&) = delete;

 private:
  long (*previous_)(int, unsigned);
};

// ---- what a domain should report -------------------------------------------------------------

struct expectation {
  mechanism mech;
  std::vector<std::string> words;  // each must appear in mechanism_reason()
};

// What a membarrier_backend domain reports in this build, with no test seam of its own and
// the environment as it is now. Mirrors the order of lazymm::detail::choose_mechanism.
expectation expected_membarrier_backend() {
#if LAZYMM_NO_MEMBARRIER
  return {mechanism::fence, {"LAZYMM_NO_MEMBARRIER", "compile time"}};
#elif LAZYMM_TSAN
  return {mechanism::fence, {"ThreadSanitizer"}};
#else
  if (environment_disables_membarrier()) return {mechanism::fence, {"LAZYMM_NO_MEMBARRIER", "environment"}};
  if (const char* fake = fake_membarrier_variable())
    return {mechanism::fence, {"membarrier refused at MEMBARRIER_CMD_QUERY", fake, "falling back to fences"}};
  return {mechanism::membarrier, {"MEMBARRIER_CMD_PRIVATE_EXPEDITED registered"}};
#endif
}

// What it reports when the membarrier steps are the test's to script (the variables set aside):
// `otherwise` unless the build never reaches the syscall.
expectation expected_when_scripted([[maybe_unused]] expectation otherwise) {
#if LAZYMM_NO_MEMBARRIER
  return {mechanism::fence, {"LAZYMM_NO_MEMBARRIER", "compile time"}};
#elif LAZYMM_TSAN
  return {mechanism::fence, {"ThreadSanitizer"}};
#else
  return otherwise;
#endif
}

// True when the build decides without asking the kernel (then no seam is ever called).
constexpr bool build_never_asks_the_kernel = LAZYMM_TSAN || LAZYMM_NO_MEMBARRIER;

template <class Domain>
void expect_choice(const Domain& d, const expectation& e) {
  EXPECT_STREQ(lazymm::to_string(d.mechanism()), lazymm::to_string(e.mech)) << "reason: " << d.mechanism_reason();
  for (const auto& w : e.words)
    EXPECT_NE(d.mechanism_reason().find(w), std::string::npos)
        << "reason \"" << d.mechanism_reason() << "\" does not mention \"" << w << "\"";
}

// ---- a final drop with lazy holders ------------------------------------------------------------

// An executor thread that loads the context of `r`, goes lazy, and parks until leave(): an idle
// worker holding the context lazily, which a final drop must not wait for (S3).
template <class Domain>
class parked_holder {
 public:
  template <class T>
  parked_holder(Domain& d, const lazymm::owning_ref<T>& r)
      : thread_([this, &d, &r] {
          auto ex = d.attach();
          id_ = ex.id().value;
          ex.switch_to(r);
          ex.go_lazy();
          parked_.count_down();
          wake_.wait();
          stolen_ = ex.loaded() == d.default_context();
        }) {
    parked_.wait();  // r is not touched again by the holder after this
  }
  ~parked_holder() { leave(); }
  parked_holder(const parked_holder&) = delete;
  parked_holder& operator=(const parked_holder&) = delete;

  std::uint32_t id() const { return id_; }
  // Wakes the holder, which detaches; returns whether its slot had been stolen meanwhile.
  bool leave() {
    if (thread_.joinable()) {
      wake_.count_down();
      thread_.join();
    }
    return stolen_;
  }

 private:
  std::latch parked_{1};
  std::latch wake_{1};
  std::uint32_t id_ = ~0u;
  bool stolen_ = false;
  std::thread thread_;  // last: starts once the members above exist
};

// Makes a context, parks `holders` executors on it lazily, drops the last owning reference on
// this (non-executor) thread, then lets the holders go. Checks S2 (teardown and free exactly
// once), the steals and evicts, and that only the drop itself may call membarrier. Returns the
// number of MEMBARRIER_CMD_PRIVATE_EXPEDITED calls the drop made (as seen by a counting seam).
template <class Domain>
int drop_with_lazy_holders(Domain& d, int holders) {
  using policy = typename Domain::policy;
  constexpr bool shootdown = policy::round != lazymm::round_at::never;
  static int next_id = 100;
  const int id = next_id++;
  event_log log;
  calls.clear();
  auto r = d.template make<counted>(log, id);
  std::vector<std::unique_ptr<parked_holder<Domain>>> parked;
  parked.reserve(static_cast<std::size_t>(holders));
  for (int i = 0; i < holders; ++i) parked.push_back(std::make_unique<parked_holder<Domain>>(d, r));
  EXPECT_EQ(calls.total(), 0) << "switching and going lazy never call membarrier";

  const auto before = d.stats();
  r.reset();  // the final drop, while every holder is parked
  const auto after = d.stats();
  const int expedited = calls.private_expedited.load();
  EXPECT_EQ(calls.total(), expedited) << "a drop calls nothing but MEMBARRIER_CMD_PRIVATE_EXPEDITED";
  EXPECT_EQ(log.count(event_log::teardown, id), 1);
  if constexpr (shootdown) {
    EXPECT_EQ(log.count(event_log::free, id), 1) << "freed without the parked holders' help";
    EXPECT_EQ(after.rounds - before.rounds, 1u);
    EXPECT_EQ(after.steals - before.steals, static_cast<std::uint64_t>(holders));
    EXPECT_EQ(after.heavy_barriers - before.heavy_barriers, holders > 0 ? 1u : 0u);
    const auto evicts = log.of(event_log::evict, id);
    EXPECT_EQ(evicts.size(), static_cast<std::size_t>(holders));
    for (auto& h : parked) {
      int seen = 0;
      for (auto& e : evicts) seen += e.exec == h->id();
      EXPECT_EQ(seen, 1) << "executor #" << h->id() << " evicted once";
    }
  } else {
    EXPECT_EQ(after.rounds - before.rounds, 0u);
    EXPECT_EQ(log.count(event_log::free, id), holders > 0 ? 0 : 1) << "refcount: lazy holds keep the memory";
  }
  for (auto& h : parked) EXPECT_EQ(h->leave(), shootdown) << "executor #" << h->id();
  EXPECT_EQ(log.count(event_log::teardown, id), 1);
  EXPECT_EQ(log.count(event_log::free, id), 1);
  EXPECT_EQ(calls.total(), expedited) << "detaching never calls membarrier";
  EXPECT_EQ(d.live_contexts(), 0);
  return expedited;
}

// Calls f.template operator()<Policy>() for each policy.
template <class F>
void for_each_policy(F f) {
  f.template operator()<lazymm::refcount>();
  f.template operator()<lazymm::explicit_shootdown>();
  f.template operator()<lazymm::implicit_shootdown>();
}

// ---- the mechanism a domain reports --------------------------------------------------------------

TEST(backend_choice, fence_backend_reports_fence_and_never_calls_membarrier) {
  for_each_policy([]<class P>() {
    SCOPED_TRACE(P::name);
    membarrier_seam seam(&count_and_forward, true);
    lazymm::domain<P, lazymm::fence_backend> d;
    expect_choice(d, {mechanism::fence, {"fence backend selected"}});
    EXPECT_EQ(calls.total(), 0) << "not even at creation";
    EXPECT_EQ(drop_with_lazy_holders(d, 1), 0);
    EXPECT_EQ(drop_with_lazy_holders(d, 2), 0);
  });
}

TEST(backend_choice, membarrier_backend_registers_at_creation_or_reports_why_not) {
  for_each_policy([]<class P>() {
    SCOPED_TRACE(P::name);
    membarrier_seam seam(&count_and_forward, true);
    lazymm::domain<P, lazymm::membarrier_backend> d;
    const auto e = expected_membarrier_backend();
    expect_choice(d, e);
    if (e.mech == mechanism::membarrier) {
      EXPECT_EQ(calls.query.load(), 1);
      EXPECT_EQ(calls.register_private_expedited.load(), 1);
    }
    EXPECT_EQ(calls.private_expedited.load(), e.mech == mechanism::membarrier ? 1 : 0)
        << "creating a domain probes the barrier command once, and only once registered";
  });
}

// This machine supports membarrier: with the variables set aside and the real syscall, a
// membarrier_backend domain registers (except in builds that never ask the kernel).
TEST(backend_choice, membarrier_backend_uses_membarrier_on_this_machine) {
  scoped_env no_env("LAZYMM_NO_MEMBARRIER", nullptr);
  membarrier_seam seam(&count_and_forward, false);
  lazymm::domain<lazymm::implicit_shootdown, lazymm::membarrier_backend> d;
  expect_choice(d, expected_when_scripted({mechanism::membarrier, {"MEMBARRIER_CMD_PRIVATE_EXPEDITED registered"}}));
  EXPECT_EQ(calls.query.load(), build_never_asks_the_kernel ? 0 : 1);
  EXPECT_EQ(calls.register_private_expedited.load(), build_never_asks_the_kernel ? 0 : 1);
}

TEST(backend_choice, lazymm_no_membarrier_in_the_environment_selects_fences_without_a_syscall) {
  for_each_policy([]<class P>() {
    SCOPED_TRACE(P::name);
    membarrier_seam seam(&count_and_forward, false);
    std::optional<lazymm::domain<P, lazymm::membarrier_backend>> d;
    {
      scoped_env env("LAZYMM_NO_MEMBARRIER", "1");
      d.emplace();
    }
    expect_choice(*d, expected_when_scripted({mechanism::fence, {"LAZYMM_NO_MEMBARRIER", "environment"}}));
    EXPECT_EQ(calls.total(), 0) << "the variable means: never issue the syscall";
    EXPECT_EQ(drop_with_lazy_holders(*d, 1), 0);
    EXPECT_EQ(calls.total(), 0);
  });
}

TEST(backend_choice, lazymm_no_membarrier_set_to_0_or_empty_leaves_membarrier_on) {
  for (const char* value : {"0", ""}) {
    SCOPED_TRACE(std::string("LAZYMM_NO_MEMBARRIER=\"") + value + "\"");
    membarrier_seam seam(&count_and_forward, false);
    scoped_env env("LAZYMM_NO_MEMBARRIER", value);
    lazymm::domain<lazymm::implicit_shootdown, lazymm::membarrier_backend> d;
    expect_choice(d, expected_when_scripted({mechanism::membarrier, {"registered"}}));
  }
}

// ---- refusals ------------------------------------------------------------------------------------

constexpr long all_commands = MEMBARRIER_CMD_GLOBAL | MEMBARRIER_CMD_GLOBAL_EXPEDITED |
                              MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED | MEMBARRIER_CMD_PRIVATE_EXPEDITED |
                              MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED;

struct refusal {
  const char* name;
  int fail_cmd;       // the command that fails (-1: none)
  int err;            // with this errno
  long query_answer;  // what QUERY answers when it does not fail
  const char* step;   // the step the reason must name
  const char* errno_word;
  int registrations;  // REGISTER_PRIVATE_EXPEDITED calls expected at creation
  int probes = 0;     // PRIVATE_EXPEDITED calls expected at creation (the probe after registering)
};

const refusal refusals[] = {
    {"ENOSYS_at_query", MEMBARRIER_CMD_QUERY, ENOSYS, all_commands, "MEMBARRIER_CMD_QUERY", "ENOSYS", 0},
    {"EINVAL_at_query", MEMBARRIER_CMD_QUERY, EINVAL, all_commands, "MEMBARRIER_CMD_QUERY", "EINVAL", 0},
    {"EPERM_at_register", MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, EPERM, all_commands,
     "MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED", "EPERM", 1},
    {"query_lacks_private_expedited", -1, 0, all_commands & ~long{MEMBARRIER_CMD_PRIVATE_EXPEDITED},
     "MEMBARRIER_CMD_QUERY", "EINVAL", 0},
    // A seccomp profile that allows the registration but refuses the barrier command itself:
    // the domain's probe finds it at creation, not the first round that steals.
    {"EPERM_at_the_barrier_command_after_registering", MEMBARRIER_CMD_PRIVATE_EXPEDITED, EPERM, all_commands,
     "MEMBARRIER_CMD_PRIVATE_EXPEDITED", "EPERM", 1, 1},
};

void PrintTo(const refusal& r, std::ostream* os) {
  *os << r.name;
}

class membarrier_refusal : public ::testing::TestWithParam<refusal> {};

TEST_P(membarrier_refusal, falls_back_to_fences_says_why_and_a_final_drop_still_works) {
  const refusal& p = GetParam();
  for_each_policy([&p]<class P>() {
    SCOPED_TRACE(P::name);
    scoped_env no_env("LAZYMM_NO_MEMBARRIER", nullptr);
    script.fail_cmd = p.fail_cmd;
    script.err = p.err;
    script.query_answer = p.query_answer;
    membarrier_seam seam(&count_and_follow_the_script, false);
    lazymm::domain<P, lazymm::membarrier_backend> d;
    expect_choice(d, expected_when_scripted({mechanism::fence,
                                             {std::string("membarrier refused at ") + p.step + ": " + p.errno_word,
                                              "falling back to fences"}}));
    EXPECT_EQ(calls.query.load(), build_never_asks_the_kernel ? 0 : 1);
    EXPECT_EQ(calls.register_private_expedited.load(), build_never_asks_the_kernel ? 0 : p.registrations);
    EXPECT_EQ(calls.private_expedited.load() + calls.other.load(), build_never_asks_the_kernel ? 0 : p.probes);
    // After the fallback no membarrier call is ever made: not by switches, drops or detaches.
    EXPECT_EQ(drop_with_lazy_holders(d, 1), 0);
    EXPECT_EQ(drop_with_lazy_holders(d, 2), 0);
    EXPECT_EQ(drop_with_lazy_holders(d, 0), 0);
  });
}

INSTANTIATE_TEST_SUITE_P(each_refusal, membarrier_refusal, ::testing::ValuesIn(refusals),
                         [](const ::testing::TestParamInfo<refusal>& i) { return std::string(i.param.name); });

// ---- the heavy barrier is the syscall --------------------------------------------------------------

// One MEMBARRIER_CMD_PRIVATE_EXPEDITED per round that stole something, however many slots it
// stole; none for a round that stole nothing. On a fallback domain (TSan, or a rerun under
// tests/fault) the count is zero for every round.
template <class Policy>
void heavy_barrier_calls_follow_the_steals() {
  membarrier_seam seam(&count_and_forward, true);
  lazymm::domain<Policy, lazymm::membarrier_backend> d;
  expect_choice(d, expected_membarrier_backend());
  const int per_round = d.mechanism() == mechanism::membarrier ? 1 : 0;

  EXPECT_EQ(drop_with_lazy_holders(d, 0), 0) << "a round that stole nothing";
  EXPECT_EQ(drop_with_lazy_holders(d, 1), per_round) << "a round that stole one slot";
  EXPECT_EQ(drop_with_lazy_holders(d, 3), per_round) << "a round that stole three slots";

  // Loaded, then switched away before the drop: nothing left to steal, no barrier.
  event_log log;
  calls.clear();
  auto r = d.template make<counted>(log, 1);
  {
    auto ex = d.attach();
    ex.switch_to(r);
    ex.go_lazy();
    ex.switch_to_default();
    const auto before = d.stats();
    r.reset();
    EXPECT_EQ(d.stats().rounds - before.rounds, 1u);
    EXPECT_EQ(d.stats().heavy_barriers - before.heavy_barriers, 0u);
  }
  EXPECT_EQ(calls.total(), 0);
  EXPECT_EQ(log.count(event_log::free, 1), 1);
}

TEST(heavy_barrier, explicit_shootdown_calls_membarrier_once_per_round_that_stole) {
  heavy_barrier_calls_follow_the_steals<lazymm::explicit_shootdown>();
}

TEST(heavy_barrier, implicit_shootdown_calls_membarrier_once_per_round_that_stole) {
  heavy_barrier_calls_follow_the_steals<lazymm::implicit_shootdown>();
}

TEST(heavy_barrier, refcount_never_calls_membarrier_after_creation) {
  membarrier_seam seam(&count_and_forward, true);
  lazymm::domain<lazymm::refcount, lazymm::membarrier_backend> d;
  expect_choice(d, expected_membarrier_backend());
  EXPECT_EQ(drop_with_lazy_holders(d, 0), 0);
  EXPECT_EQ(drop_with_lazy_holders(d, 2), 0);
  EXPECT_EQ(d.stats().rounds, 0u);
}

// ---- the fallback reruns (tests/fault) ---------------------------------------------------------------

// Under LAZYMM_TEST_FAKE_MEMBARRIER=<errno> the environment in fake_membarrier_env.cpp must
// have installed a seam that refuses everything, and a membarrier_backend domain must report
// the fallback with that errno: this is what makes the unit.fallback.* reruns a proof that the
// whole suite passes on fences. Without the variable, no seam may be installed.
TEST(fake_membarrier, the_fake_environment_forces_the_fallback_with_its_errno) {
  auto* const installed = seams::membarrier.load();
  const char* fake = fake_membarrier_variable();
  if (!fake) {
    EXPECT_EQ(installed, nullptr) << "a membarrier seam is installed without LAZYMM_TEST_FAKE_MEMBARRIER";
    return;
  }
  ASSERT_NE(installed, nullptr) << "LAZYMM_TEST_FAKE_MEMBARRIER=" << fake << " but no seam is installed";
  for (int cmd : {MEMBARRIER_CMD_QUERY, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, MEMBARRIER_CMD_PRIVATE_EXPEDITED}) {
    errno = 0;
    EXPECT_EQ(installed(cmd, 0), -1) << "command " << cmd;
    EXPECT_STREQ(errno_name(errno), fake) << "command " << cmd;
  }
  scoped_env no_env("LAZYMM_NO_MEMBARRIER", nullptr);
  lazymm::domain<lazymm::implicit_shootdown, lazymm::membarrier_backend> d;
  expect_choice(d, expected_when_scripted({mechanism::fence,
                                           {std::string("membarrier refused at MEMBARRIER_CMD_QUERY: ") + fake,
                                            "falling back to fences"}}));
  drop_with_lazy_holders(d, 2);
}

}  // namespace
