// examples/common/report.hpp: what every example shares that is about neither its workload nor
// its runtime: the books its context hooks keep, failed checks, the end-of-run checks that the
// books and the domain balance, the command line of the two scheduler examples (tenant_pool,
// fiber_sched), and the first and last lines they print. The runtime integrations get it through
// tenants.hpp.
#pragma once

#include <lazymm/lazymm.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <string_view>

namespace examples {

// xorshift64: the workload generator (the same sequence for every policy).
struct rng64 {
  std::uint64_t s;
  std::uint64_t operator()() noexcept {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
};

// What the context hooks and the checks count in one run. All relaxed: statistics, read after the
// threads that counted have been joined (the joins order them) or at least after the run.
// An example derives its own books from this one for whatever else it counts.
struct books {
  explicit books(const char* who) noexcept : name(who) {}
  const char* name;  // the example's, for messages
  std::atomic<std::uint64_t> created{0}, torn_down{0}, freed{0}, evicted{0}, failures{0};
};

// A failed check: counted, and the first ten printed as "NAME: CHECK FAILED: ...".
__attribute__((format(printf, 2, 3))) inline void check_failed(books& b, const char* fmt, ...) noexcept {
  if (b.failures.fetch_add(1, std::memory_order_relaxed) < 10) {  // relaxed: a statistic
    va_list ap;
    va_start(ap, fmt);
    std::fprintf(stderr, "%s: CHECK FAILED: ", b.name);
    std::vfprintf(stderr, fmt, ap);
    std::fputc('\n', stderr);
    va_end(ap);
  }
}

// The end-of-run checks every example makes, once every context is gone: as many created as torn
// down and freed, by the books and by the domain; one on_evict per steal; no round under refcount.
// `what` names the contexts in messages ("tenants", "processes"). Returns the failed checks so far,
// these and the example's own.
template <class Domain>
std::uint64_t check_balance(books& b, Domain& dom, const char* what) {
  using ull = unsigned long long;
  constexpr auto rx = std::memory_order_relaxed;  // statistics, after the run
  const lazymm::domain_stats s = dom.stats();
  const auto created = b.created.load(rx), torn = b.torn_down.load(rx), freed = b.freed.load(rx);
  if (torn != created || freed != created)
    check_failed(b, "%llu %s created, %llu torn down, %llu freed", static_cast<ull>(created), what,
                 static_cast<ull>(torn), static_cast<ull>(freed));
  if (s.contexts_created != created || s.contexts_freed != created || dom.live_contexts() != 0)
    check_failed(b, "the domain counted %llu created, %llu freed, %lld alive", static_cast<ull>(s.contexts_created),
                 static_cast<ull>(s.contexts_freed), static_cast<long long>(dom.live_contexts()));
  if (s.steals != b.evicted.load(rx))
    check_failed(b, "the domain counted %llu steals, on_evict ran %llu times", static_cast<ull>(s.steals),
                 static_cast<ull>(b.evicted.load(rx)));
  if (Domain::policy::round == lazymm::round_at::never && s.rounds != 0)
    check_failed(b, "refcount ran %llu shootdown rounds", static_cast<ull>(s.rounds));
  return b.failures.load(rx);
}

// Prints the usage text (to stdout for -h, else to stderr) and exits with `code`. Before any
// thread starts.
[[noreturn]] inline void usage(int code, const char* text) {
  std::fputs(text, code ? stderr : stdout);
  std::exit(code);  // NOLINT(concurrency-mt-unsafe): parsing happens before any thread starts
}

// The options tenant_pool and fiber_sched share: how long each policy runs, the workload's seed,
// and which policies run (refcount, explicit, implicit or all).
struct run_options {
  double duration;
  std::uint64_t seed = 1;
  std::string policy = "all";
};

// A whole-number option of tenant_pool or fiber_sched: its name, where it goes, and the largest
// value kept (a larger one is clamped to it).
struct number_option {
  number_option(std::string_view n, unsigned* to, unsigned long long most) noexcept : name(n), u(to), max(most) {}
  number_option(std::string_view n, std::uint64_t* to) noexcept : name(n), u64(to) {}
  std::string_view name;
  unsigned* u = nullptr;
  std::uint64_t* u64 = nullptr;
  unsigned long long max = ~0ull;
};

// The command line of tenant_pool and fiber_sched: "--name value" pairs. --policy
// (refcount|explicit|implicit|all), --duration (seconds, > 0), --seed, and the whole numbers > 0
// that `numbers` names. -h/--help: the usage text and exit 0; anything else: it and exit 2. Before any
// thread starts.
inline void parse_options(int argc, char** argv, const char* usage_text, run_options& o,
                          std::initializer_list<number_option> numbers) {
  const auto bad = [usage_text] { usage(2, usage_text); };
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "-h" || a == "--help") usage(0, usage_text);
    if (i + 1 >= argc) bad();
    const char* v = argv[++i];
    char* end = nullptr;
    errno = 0;
    if (a == "--policy") {
      o.policy = v;
      if (o.policy != "all" && o.policy != "refcount" && o.policy != "explicit" && o.policy != "implicit") bad();
      continue;
    }
    if (a == "--duration") {
      o.duration = std::strtod(v, &end);
      if (*end || errno || !(o.duration > 0)) bad();
      continue;
    }
    const unsigned long long n = std::strtoull(v, &end, 10);
    if (*end || errno || n == 0) bad();
    if (a == "--seed") {
      o.seed = n;
      continue;
    }
    const number_option* x = std::find_if(numbers.begin(), numbers.end(), [a](auto& y) { return y.name == a; });
    if (x == numbers.end()) bad();
    if (x->u) *x->u = static_cast<unsigned>(std::min(n, x->max));
    if (x->u64) *x->u64 = n;
  }
}

// Whether --policy chose P: "all", or P's name without "_shootdown".
template <class P>
bool chosen(const std::string& policy) {
  return policy == "all" || std::string_view(P::name).substr(0, std::string_view(P::name).find('_')) == policy;
}

// One policy's run: a fresh System<Policy> made from the options, run once.
template <template <class> class System, class Policy, class Options>
auto run_fresh(const Options& o) {
  System<Policy> system(o);
  return system.run();
}

// The first lines of a run: the example's own (printf-style), then the backend a default domain
// gets and why, and whether checked mode is on, with `more` appended ("" for nothing).
__attribute__((format(printf, 2, 3))) inline void print_header(const char* more, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::vprintf(fmt, ap);
  va_end(ap);
  lazymm::domain<lazymm::default_policy> probe;  // what a domain with the default backend gets
  std::printf("backend %s: mechanism %s (%s); checked mode %s%s\n", lazymm::default_backend::name,
              lazymm::to_string(probe.mechanism()), probe.mechanism_reason().c_str(), LAZYMM_CHECKED ? "on" : "off",
              more);
  std::fflush(stdout);
}

// The last line: "all checks passed: <passed>" or "CHECKS FAILED"; returns the exit status.
inline int verdict(bool ok, const char* passed) {
  if (ok)
    std::printf("\nall checks passed: %s\n", passed);
  else
    std::printf("\nCHECKS FAILED (see messages above)\n");
  return ok ? 0 : 1;
}

}  // namespace examples
