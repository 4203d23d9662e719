// bench/main.cpp: registers every workload and runs Google Benchmark.
//
//   lazymm_bench [google benchmark flags]
//
// LAZYMM_BENCH_CPUS=N overrides the core count used to choose thread counts (default: the
// number of CPUs this process may run on). bench/report.sh runs it and writes docs/benchmarks.md.
// Built with LAZYMM_BENCH_TREND_ONLY=1 (lazymm_trend, lazymm_trend_base) it registers only the
// lazy-pair and real-switch workloads, whose sources compile against every release since 0.1.
#include <cstdlib>
#include <string>

#include "common.hpp"

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  int cpus = bench::ncpu();
  if (const char* env = std::getenv("LAZYMM_BENCH_CPUS"); env && std::atoi(env) > 0) cpus = std::atoi(env);

  // What the membarrier backend really uses here: a refused membarrier falls back to fences, and
  // the membarrier rows then report an error instead of mislabelled figures.
  {
    lazymm::domain<lazymm::explicit_shootdown, lazymm::membarrier_backend> probe;
    benchmark::AddCustomContext("lazymm_membarrier_backend", lazymm::to_string(probe.mechanism()));
    benchmark::AddCustomContext("lazymm_membarrier_reason", probe.mechanism_reason());
  }
  benchmark::AddCustomContext("bench_cpus", std::to_string(cpus));
  benchmark::AddCustomContext("bare_membarrier_registered", bench::register_membarrier() ? "yes" : "no");
#if LAZYMM_BENCH_HAVE_URCU
  benchmark::AddCustomContext("urcu_peer", "liburcu memb, _LGPL_SOURCE inline read side");
#else
  benchmark::AddCustomContext("urcu_peer", "not built (LAZYMM_BENCH_URCU=OFF)");
#endif
  benchmark::AddCustomContext("lazymm_checked", LAZYMM_CHECKED ? "1" : "0");
#if LAZYMM_BENCH_TREND_ONLY
  benchmark::AddCustomContext("holder_sets", "n/a (trend build)");
#elif LAZYMM_NO_HOLDER_SET
  benchmark::AddCustomContext("holder_sets", "off (LAZYMM_NO_HOLDER_SET: rounds walk every record)");
#else
  benchmark::AddCustomContext("holder_sets", "on");
#endif

  bench::register_lazy_pair(cpus);
  bench::register_switch(cpus);
#if !LAZYMM_BENCH_TREND_ONLY
  bench::register_drop(cpus);
  bench::register_churn(cpus);
  bench::register_retire(cpus);
#endif

  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
