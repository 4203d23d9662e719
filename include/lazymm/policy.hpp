// lazymm/policy.hpp: how a lazy reference is kept valid. One tag per kernel strategy.
#pragma once

namespace lazymm {

// When a policy runs its shootdown round (steal + heavy barrier + wait).
enum class round_at { never, owning_zero, structural_zero };

// MMU_LAZY_TLB_REFCOUNT, with the count on the slot: a real switch takes a structural reference
// on the context it loads and drops the one on the context it leaves, so a slot (lazy or not)
// always keeps its context's memory alive, whoever drops the last owning reference and when.
// No steal, no barrier, and the lazy pair does no RMW. Costs: two atomic RMWs on two contexts'
// count lines per real switch (docs/benchmarks.md).
struct refcount {
  static constexpr bool counts_slot_holds = true;
  static constexpr round_at round = round_at::never;
  static constexpr const char* name = "refcount";
};

// MMU_LAZY_TLB_SHOOTDOWN (powerpc). Lazy holds are not counted. When the structural count
// reaches zero, the reclaimer steals the context from every slot that holds it, issues one
// heavy barrier, waits for executors caught inside a switch, then frees. Costs: one round per
// freed context; lazy holders may keep a torn-down context loaded until the free.
struct explicit_shootdown {
  static constexpr bool counts_slot_holds = false;
  static constexpr round_at round = round_at::structural_zero;
  static constexpr const char* name = "explicit_shootdown";
};

// MMU_LAZY_TLB_IMPLICIT_SHOOTDOWN (x86, the seed patch). Lazy holds are not counted. The round
// runs once, when the owning count reaches zero, before the teardown hook: the teardown itself
// then runs with no executor holding the context, and the free needs no round of its own
// (checked mode verifies that). Costs: one round per context, at teardown.
struct implicit_shootdown {
  static constexpr bool counts_slot_holds = false;
  static constexpr round_at round = round_at::owning_zero;
  static constexpr const char* name = "implicit_shootdown";
};

}  // namespace lazymm
