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
  static constexpr bool batches = false;
  static constexpr round_at round = round_at::never;
  static constexpr const char* name = "refcount";
};

// MMU_LAZY_TLB_SHOOTDOWN (powerpc). Lazy holds are not counted. When the structural count
// reaches zero, the reclaimer steals the context from every slot that holds it, issues one
// heavy barrier, waits for executors caught inside a switch, then frees. Costs: one round per
// freed context; lazy holders may keep a torn-down context loaded until the free.
struct explicit_shootdown {
  static constexpr bool counts_slot_holds = false;
  static constexpr bool batches = false;
  static constexpr round_at round = round_at::structural_zero;
  static constexpr const char* name = "explicit_shootdown";
};

// MMU_LAZY_TLB_IMPLICIT_SHOOTDOWN (x86, the seed patch). Lazy holds are not counted. The round
// runs once, when the owning count reaches zero, before the teardown hook: the teardown itself
// then runs with no executor holding the context, and the free needs no round of its own
// (checked mode verifies that). Costs: one round per context, at teardown.
struct implicit_shootdown {
  static constexpr bool counts_slot_holds = false;
  static constexpr bool batches = false;
  static constexpr round_at round = round_at::owning_zero;
  static constexpr const char* name = "implicit_shootdown";
};

// batched<explicit_shootdown> / batched<implicit_shootdown>: the final drop does not run the
// round; it pushes the context on the domain's retire queue (O(1), lock-free, no syscall, no
// wait) and a later domain::reclaim() runs one round for a whole batch: one registry walk, one
// heavy barrier, one wait pass, then the evict hooks and, per context, what the base policy does
// after its round (implicit: teardown then free; explicit: free). The answer for churn.
// Costs: contexts live until the next reclaim (bounded by batch_options); someone must call
// reclaim(), reclaim_if_due() or run a lazymm::reclaimer thread.
template <class Base>
struct batched : Base {
  static_assert(Base::round != round_at::never, "lazymm: batched<> needs a shootdown policy (refcount has no round)");
  static_assert(!Base::batches, "lazymm: batched<batched<P>> is batched<P>");
  static constexpr bool batches = true;
  static constexpr const char* name =
      Base::round == round_at::owning_zero ? "batched_implicit_shootdown" : "batched_explicit_shootdown";
};

}  // namespace lazymm
