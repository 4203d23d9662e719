// lazymm/stats.hpp: the statistics a domain reports (domain::stats(), domain::drop_latency()).
#pragma once

#include <cstdint>

namespace lazymm {

// Final-drop latency of one domain (domain::drop_latency()): one sample per free, from the final
// drop that led to it (the last owning drop under implicit_shootdown, the last structural drop
// otherwise; for batched policies, the start of the reclaim that frees it) to the moment the free
// starts. Relaxed snapshot.
struct drop_latency {
  std::uint64_t count = 0;   // samples
  std::uint64_t max_ns = 0;  // the longest
  std::uint64_t log2_ns[32] = {};  // bucket i: [2^i, 2^(i+1)) ns (0 ns in bucket 0, >= 2^31 ns in bucket 31)
  // An upper bound (within a factor of 2, capped at max_ns) of the p-quantile, 0 <= p <= 1;
  // 0 without samples.
  std::uint64_t percentile_ns(double p) const noexcept {
    if (count == 0) return 0;
    if (p < 0) p = 0;
    if (p > 1) p = 1;
    std::uint64_t target = static_cast<std::uint64_t>(p * static_cast<double>(count));
    if (static_cast<double>(target) < p * static_cast<double>(count)) ++target;  // ceil
    if (target == 0) target = 1;
    std::uint64_t seen = 0;
    for (unsigned i = 0; i < 32; ++i) {
      seen += log2_ns[i];
      if (seen >= target) {
        const std::uint64_t upper = i == 31 ? max_ns : (std::uint64_t{2} << i) - 1;
        return upper < max_ns ? upper : max_ns;
      }
    }
    return max_ns;
  }
};

// Counters of one domain, for diagnostics, torture runs and benchmarks (relaxed snapshots).
struct domain_stats {
  std::uint64_t contexts_created = 0;
  std::uint64_t contexts_freed = 0;
  std::uint64_t rounds = 0;          // shootdown rounds (one per final drop under shootdown)
  std::uint64_t heavy_barriers = 0;  // barriers issued by rounds (one per chunk that stole from another thread)
  std::uint64_t steals = 0;          // slots taken away (= evict hook calls)
  std::uint64_t waits = 0;           // executors found inside a switch and waited for
  // Batched policies only (zero otherwise):
  std::uint64_t reclaimed = 0;       // contexts taken off the retire queue by reclaims
  std::uint64_t backlog = 0;         // contexts queued now
  std::uint64_t peak_backlog = 0;    // the most ever queued at once
};

}  // namespace lazymm
