// lazymm/detail/protocol.hpp: the whole switch/steal protocol, top to bottom: the executor
// record, the registry, the owner's switch and the reclaimer's round. It needs nothing but
// <atomic> and <cstdint>, so that GenMC checks this very code (tests/model/). Barriers, the
// blocking wait, hooks and bookkeeping come in as template parameters from the headers around it.
//
// Ordering edges, numbered as in docs/design.md:
//   executor (owner thread)                      reclaimer (final drop, any thread)
//   (1) seq = s+1, odd       release  // A       (10) in_use?                  acquire
//   (2) light barrier                 // A       (6)  slot in victims?         acquire
//   (3) prev = slot          relaxed             (6') CAS slot -> default      seq_cst
//       deactivate(prev), activate(next)         (7)  heavy barrier            // Matches A
//   (4) slot = next          release             (8)  seq odd? wait until it changes (acquire)
//   (5) seq = s+2, even      release                  then evict hooks; teardown / free
//   (12) waiters? wake them  relaxed  // B       detach: switch to default, (11) in_use = false
//   attach: (13) generation++ release            (14) generation before the steal (acquire)
#pragma once

#include <lazymm/detail/seams.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace lazymm {
class context;
}

namespace lazymm::detail {

// GenMC cannot allocate over-aligned objects; there the record is not padded (the padding only
// keeps executors off each other's cache lines).
#if LAZYMM_GENMC
#define LAZYMM_CACHELINE_ALIGN
#else
#define LAZYMM_CACHELINE_ALIGN alignas(64)
#endif

// One per attached executor, never freed before its registry; reused after a detach. The owner
// writes slot, seq and generation; a reclaimer writes slot only when it steals, and waiters
// only when it blocks.
struct LAZYMM_CACHELINE_ALIGN executor_record {
  std::atomic<context*> slot{nullptr};     // the active context (active_mm), possibly lazy
  std::atomic<std::uint32_t> seq{0};       // odd while the owner is inside a switch (a futex word)
  std::atomic<std::uint32_t> waiters{0};   // reclaimers blocked on seq
  std::atomic<std::uint32_t> generation{0};  // attaches of this record so far (names the owner)
  std::atomic<bool> in_use{true};          // attached
  executor_record* next = nullptr;         // registry link, immutable once published
  std::uint32_t id = 0;                    // dense per registry
};

// Push-only list of records. Walked without a lock by reclaimers, so a final drop never waits
// on anything an executor may hold.
class registry {
 public:
  registry() = default;
  registry(const registry&) = delete;
  registry& operator=(const registry&) = delete;
  ~registry() {
    for (auto* r = head(); r;) {
      auto* n = r->next;
      delete r;
      r = n;
    }
  }

  // acquire: pairs with the release CAS in attach(); a record's fields are visible to a walker.
  executor_record* head() const noexcept { return head_.load(std::memory_order_acquire); }

  // A free record, or a new one pushed on the list; its slot holds `dflt` (a detach left it so).
  executor_record* attach(context* dflt) {
    executor_record* r = head();
    for (; r; r = r->next) {
      bool busy = false;
      // Relaxed pre-check only filters. The CAS acquires: pairs with (11), so the previous
      // owner's switches (its last one to default included) happen before ours.
      if (!r->in_use.load(std::memory_order_relaxed) &&
          r->in_use.compare_exchange_strong(busy, true, std::memory_order_acquire, std::memory_order_relaxed))
        break;
    }
    if (!r) {
      r = new executor_record;
      // Relaxed: private until the release CAS below publishes it; ids need only be distinct.
      r->slot.store(dflt, std::memory_order_relaxed);
      r->id = next_id_.fetch_add(1, std::memory_order_relaxed);
      r->next = head_.load(std::memory_order_relaxed);
      // release: publishes the record's fields to walkers (acquire in head()).
      while (!head_.compare_exchange_weak(r->next, r, std::memory_order_release, std::memory_order_relaxed)) {
      }
    }
    // (13) release: pairs with the acquire (14) in a round, which then cannot name this attach
    // for a steal from the previous one (see there). Relaxed load: only owners write it, and
    // the previous owner's store happens before ours (through (11) and the CAS above).
    r->generation.store(r->generation.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    return r;
  }

  // (11) release: the detaching owner's switch to default (its last slot store) happens before
  // any reclaimer that reads in_use == false at (10) and skips the record.
  static void detach(executor_record* r) noexcept { r->in_use.store(false, std::memory_order_release); }

  // Records ever created (relaxed: a size for heuristics, e.g. the batch threshold).
  std::uint32_t size() const noexcept { return next_id_.load(std::memory_order_relaxed); }

 private:
  std::atomic<executor_record*> head_{nullptr};
  std::atomic<std::uint32_t> next_id_{0};
};

// ---- the owner's switch ---------------------------------------------------------------------

// Switches the owner's record from its slot to `next`; returns the context it switched away
// from (read at (3): a stolen slot reads the default context). `seq` is the owner's private
// copy of r.seq. `hooks(prev)` runs deactivate/activate. Steals: whether the policy steals
// (otherwise (1), (2), (5) and (12) are not needed: nobody waits on seq).
//
// Barriers provides light() (2), heavy() (7), wait(r, s) (8: returns once r.seq != s, by an
// acquire load) and wake_blocked(r) (12). See backend.hpp for the contract.
// Always inlined: out of line, the hooks lambda becomes an object on the stack and the switch a
// call (a real switch took 5.5 ns instead of 3 ns in a microbenchmark on the 2-core VM).
template <bool Steals, class Barriers, class Hooks>
[[gnu::always_inline]] inline context* switch_slot(executor_record& r, std::uint32_t& seq, context* next, const Barriers& b,
                     Hooks&& hooks) noexcept {
  const std::uint32_t s = seq + 1;
  if constexpr (Steals) {
    // (1) A: odd seq. release: whatever a waiter's (8) reads from now on is a release store of
    // ours, so a wait that ends on the odd (1') of our *next* switch still synchronises (a
    // release sequence continues only through RMWs since C++20: a relaxed (1') would not).
#if defined(LAZYMM_MUTANT_RELAXED_ODD_STORE)
    r.seq.store(s, std::memory_order_relaxed);
#else
    r.seq.store(s, std::memory_order_release);
#endif
    // (2) A: light barrier; orders (1) before (3) against the reclaimer's heavy barrier (7).
#if !defined(LAZYMM_MUTANT_NO_LIGHT_FENCE)
    b.light();
#endif
  }
  LAZYMM_TEST_POINT(switch_before_slot_read, r.id);
  // (3) relaxed: a stolen slot reads default, and we then never touch the old context; a slot
  // read as x is covered by (1)/(2) against (7)/(8), or by (4) against (6).
  context* prev = r.slot.load(std::memory_order_relaxed);
  LAZYMM_TEST_POINT(switch_after_slot_read, r.id);
  hooks(prev);
  // (4) release: pairs with the reclaimer's acquire load / failed CAS (6): our hooks on prev
  // happen before its teardown and free.
#if defined(LAZYMM_MUTANT_RELAXED_SLOT_STORE)
  r.slot.store(next, std::memory_order_relaxed);
#else
  r.slot.store(next, std::memory_order_release);
#endif
  if constexpr (Steals) {
    // (5) release: pairs with the acquire wait (8): the switch is over.
#if defined(LAZYMM_MUTANT_RELAXED_SEQ_STORE)
    r.seq.store(s + 1, std::memory_order_relaxed);
#else
    r.seq.store(s + 1, std::memory_order_release);
#endif
    seq = s + 1;
    // (12) B: wake a reclaimer that blocked in (8), if any (backend.hpp).
    b.wake_blocked(r);
  }
  return prev;
}

// ---- the reclaimer's round ------------------------------------------------------------------

// One slot taken away by a round.
struct stolen_slot {
  executor_record* rec;
  context* ctx;              // what the slot held (one of the victims)
  std::uint32_t id;          // the holder, as the record named it when we stole
  std::uint32_t generation;  //   (its incarnation: the record may be reused right after)
  bool own;                  // the record belongs to the calling thread
};

struct round_result {
  std::uint32_t steals = 0, barriers = 0;  // (waits are reported as they start: hooks.waiting())
};

// A round never allocates: it steals into a fixed buffer and, when the buffer is full, finishes
// those steals (barrier, wait, report) before it walks on. One heavy barrier per chunk.
inline constexpr std::size_t round_chunk = 64;

// The shootdown round: steal every victim from every slot that holds one, one heavy barrier,
// wait for holders caught inside a switch, then report each steal. Called once no new owning
// reference to any victim can appear. Waits only for the short, non-blocking tail of a switch
// already in progress (S3). Victims: contains(const context*). Hooks:
//   is_own(record)   whether the record is an executor of the calling thread, which cannot be
//                    inside a switch (the caller checks): stealing from it needs no barrier or wait
//   waiting()        a holder was found inside its switch; the round waits for it now
//   evicted(stolen_slot)  after the wait: nothing holds or touches that victim there any more
// (Structs are filled field by field here: GenMC cannot follow the memcpy of a struct copy.)
template <class Victims, class Barriers, class Hooks>
void shootdown(const registry& reg, const Victims& victims, context* dflt, const Barriers& b, Hooks& hooks,
               round_result& res) noexcept {
  stolen_slot stolen[round_chunk];
  std::size_t n = 0;
  bool others = false;  // stolen from another thread's executor: barrier and wait needed

  auto finish = [&] {
    if (others) {
      // Full fence
      // (7) heavy barrier. Matches A ((1) then (2)) in every executor's switch: an owner whose
      // load (3) read a victim before our steal has its odd seq (1) visible to the loads in (8).
#if !defined(LAZYMM_MUTANT_NO_HEAVY_BARRIER) && !defined(LAZYMM_MUTANT_STEAL_AFTER_BARRIER)
      b.heavy();
#endif
      ++res.barriers;
#if !defined(LAZYMM_MUTANT_NO_WAIT)
      for (std::size_t i = 0; i < n; ++i) {
        if (stolen[i].own) continue;
        // (8) acquire: pairs with the owner's release (1), (5) or any later seq store; once seq
        // moves on, every access the owner made to the victim in that switch happens before
        // what we do next.
        const std::uint32_t s = stolen[i].rec->seq.load(std::memory_order_acquire);
        if (!(s & 1u)) continue;
        hooks.waiting();
        b.wait(*stolen[i].rec, s);
      }
#endif
    }
    // (9) Nothing holds or touches these victims now.
    for (std::size_t i = 0; i < n; ++i) hooks.evicted(stolen[i]);
    res.steals += static_cast<std::uint32_t>(n);
    n = 0;
    others = false;
  };

#if defined(LAZYMM_MUTANT_STEAL_AFTER_BARRIER)
  b.heavy();
#endif
  for (executor_record* r = reg.head(); r; r = r->next) {
    // (10) acquire: pairs with (11). A record seen free was switched to default first.
    if (!r->in_use.load(std::memory_order_acquire)) continue;
    // (6) acquire: if this reads the owner's (4) or a later value, the owner's hooks on the
    // victim happen before our teardown/free, and the owner cannot load it again.
    context* cur = r->slot.load(std::memory_order_acquire);
    if (!victims.contains(cur)) continue;
    // (14) acquire: pairs with (13). Names the holder if the steal below succeeds: not an older
    // attach (the holder's (13) is sequenced before its switch to the victim, which happens
    // before this round), and not a newer one (a newer (13) read here would make the previous
    // owner's detach -- its slot store of default, then (11) -- happen before our CAS, which
    // would then fail). GenMC found the relaxed version naming the next attach (record_reuse).
#if defined(LAZYMM_MUTANT_RELAXED_GENERATION)
    const std::uint32_t gen = r->generation.load(std::memory_order_relaxed);
#else
    const std::uint32_t gen = r->generation.load(std::memory_order_acquire);
#endif
#if !defined(LAZYMM_MUTANT_NO_STEAL)
    // (6') steal: seq_cst CAS. A failure reads the owner's (4) or later: same as (6).
    if (!r->slot.compare_exchange_strong(cur, dflt, std::memory_order_seq_cst)) continue;
#endif
    stolen_slot& e = stolen[n++];
    e.rec = r;
    e.ctx = cur;
    e.id = r->id;
    e.generation = gen;
    e.own = hooks.is_own(*r);
    others = others || !e.own;
    if (n == round_chunk) finish();
  }
  LAZYMM_TEST_POINT(reclaim_after_steal, ~0u);
  // No steal means no slot held a victim at (6'): every owner that ever read one has already
  // passed its (4), so no barrier and no wait are needed.
  if (n != 0) finish();
}

// The victims of a round for one context.
struct one_context {
  const context* x;
  bool contains(const context* c) const noexcept { return c == x; }
};

}  // namespace lazymm::detail
