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
//   (15) after (2): holder bit of next set?  relaxed  (16) the round reads the holder set
//        if not, set it (fetch_or)         release       of its victims            relaxed
//   trim (an owner of x, any thread): (17) clear the bits of members seen not holding x,
//        (18) heavy barrier (Matches A), (19) re-check seq and slot (acquire), re-set if held
#pragma once

#include <lazymm/detail/diag.hpp>
#include <lazymm/detail/seams.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>

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
  // The thread-bound context the owner has loaded and not yet undone (its own writes, relaxed:
  // a hint for ~domain and fork, which name and nudge the holders that still owe an undo).
  std::atomic<context*> bound{nullptr};
  executor_record* next = nullptr;         // registry link, immutable once published
  std::uint32_t id = 0;                    // dense per registry: its index in the blocks
};

// Records come in blocks, so that an id names its record (registry::at) for rounds that visit
// only a context's holder set. The most executors a domain can have: record_block x max_blocks.
#if LAZYMM_GENMC
inline constexpr std::uint32_t record_block = 1, max_record_blocks = 8;  // no two attaches share a block
#else
inline constexpr std::uint32_t record_block = 64, max_record_blocks = 1024;
#endif

// Push-only list of records. Walked without a lock by reclaimers, so a final drop never waits
// on anything an executor may hold.
class registry {
 public:
  registry() noexcept {
    // Relaxed: the registry is not shared yet. (A loop, not `= {}`: GenMC cannot follow memset.)
    for (auto& b : blocks_) b.store(nullptr, std::memory_order_relaxed);
  }
  registry(const registry&) = delete;
  registry& operator=(const registry&) = delete;
  ~registry() {
    for (auto& b : blocks_) delete b.load(std::memory_order_relaxed);  // no walker left
  }

  // acquire: pairs with the release CAS in attach(); a record's fields are visible to a walker.
  executor_record* head() const noexcept { return head_.load(std::memory_order_acquire); }

  // The record of an id handed out by attach(); null if its block is not there yet. acquire:
  // pairs with the release CAS that installed the block (its records' ids and fields).
  executor_record* at(std::uint32_t id) const noexcept {
    block* b = blocks_[id / record_block].load(std::memory_order_acquire);
    return b ? &b->records[id % record_block] : nullptr;
  }

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
      // The block of the id about to be drawn exists before the id is drawn: a std::bad_alloc
      // from its allocation leaves no id drawn and without a record (it would be lost). Relaxed:
      // ids need only be distinct; the record is private until the CAS below, and the block's
      // install orders its records (acq_rel in record_of_new_id, acquire in at()).
      std::uint32_t id = next_id_.load(std::memory_order_relaxed);
      do r = record_of_new_id(id);
      while (!next_id_.compare_exchange_weak(id, id + 1, std::memory_order_relaxed, std::memory_order_relaxed));
      r->slot.store(dflt, std::memory_order_relaxed);
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
  // The record for a fresh id, its block allocated by the first attach that needs it.
  executor_record* record_of_new_id(std::uint32_t id) {
    LAZYMM_CHECK(id / record_block < max_record_blocks, "more than %u executors attached to one domain at once",
                 record_block * max_record_blocks);
    std::atomic<block*>& slot = blocks_[id / record_block];
    block* b = slot.load(std::memory_order_acquire);  // pairs with the CAS below
    if (!b) {
      auto* fresh = new block;
      for (std::uint32_t i = 0; i < record_block; ++i) fresh->records[i].id = id / record_block * record_block + i;
      // acq_rel: release publishes the ids above to at(); acquire (on failure) the winner's.
      if (slot.compare_exchange_strong(b, fresh, std::memory_order_acq_rel, std::memory_order_acquire))
        b = fresh;
      else
        delete fresh;
    }
    return &b->records[id % record_block];
  }

  struct block {
    executor_record records[record_block];
  };
  std::atomic<executor_record*> head_{nullptr};
  std::atomic<std::uint32_t> next_id_{0};
  std::atomic<block*> blocks_[max_record_blocks];
};

// ---- who may hold a context: its holder set (the kernel's mm_cpumask) --------------------------

// One bit per executor id that may hold the context in its slot. The owner sets its bit at a
// real switch to the context, only if it is not set (15); only trim_holders() clears bits, and
// only of executors it saw not holding the context (17)-(19). So a round visits the members and
// no one else. Ids 0..63 live in the context header; higher ids in an array allocated by the
// first executor that needs it (before its switch starts), sized for the registry then. An
// executor whose id is beyond that array marks the set `overflow`, and rounds then walk every
// record, as without a set.
//
// The GenMC build gives each executor a word of its own (bits_per_word 1, every id inline): two
// executors' bits in one word multiply the executions of a harness by about 25 (the order of
// their RMWs, and which of them each relaxed load reads), while the argument is per executor.
#if LAZYMM_GENMC
inline constexpr std::uint32_t holder_bits_per_word = 1, holder_inline_words = record_block * max_record_blocks;
#else
inline constexpr std::uint32_t holder_bits_per_word = 64, holder_inline_words = 1;
#endif

struct holder_set {
  std::atomic<std::uint64_t> inline_words[holder_inline_words];  // ids 0..63 (GenMC: one word per id)
  std::atomic<std::atomic<std::uint64_t>*> more{nullptr};  // [0]: word count n; [1..n]: ids 64..
  std::atomic<bool> overflow{false};

  // User-provided, a loop: GenMC must not see a zero-fill of the atomics. Relaxed: not shared yet.
  holder_set() noexcept {
    for (auto& w : inline_words) w.store(0, std::memory_order_relaxed);
  }
  holder_set(const holder_set&) = delete;
  holder_set& operator=(const holder_set&) = delete;
  ~holder_set() { release(); }
  // At the free (before on_free, which may keep the memory without destroying the object): no
  // executor holds the context and no round or trim can look at it any more. Relaxed: as above.
  void release() noexcept {
    if (std::atomic<std::uint64_t>* m = more.load(std::memory_order_relaxed)) {  // not an RMW: nobody races
      more.store(nullptr, std::memory_order_relaxed);
      delete[] m;
    }
  }

  // Word w (the inline ones first), or null past the allocated words. acquire: pairs with the
  // release CAS in reserve(); the word count is visible.
  std::atomic<std::uint64_t>* word(std::uint32_t w) const noexcept {
    if (w < holder_inline_words) return const_cast<std::atomic<std::uint64_t>*>(&inline_words[w]);
    std::atomic<std::uint64_t>* m = more.load(std::memory_order_acquire);
    w -= holder_inline_words - 1;
    return m && w <= m[0].load(std::memory_order_relaxed) ? m + w : nullptr;
  }
  std::uint32_t words() const noexcept {
    std::atomic<std::uint64_t>* m = more.load(std::memory_order_acquire);  // as in word()
    return holder_inline_words + (m ? static_cast<std::uint32_t>(m[0].load(std::memory_order_relaxed)) : 0);
  }
  // How many ids the words hold now (relaxed: a count for heuristics and diagnostics).
  std::size_t members() const noexcept {
    std::size_t n = 0;
    for (std::uint32_t w = 0, k = words(); w < k; ++w)
      n += static_cast<std::size_t>(__builtin_popcountll(word(w)->load(std::memory_order_relaxed)));
    return n;
  }
  static std::uint32_t word_of(std::uint32_t id) noexcept { return id / holder_bits_per_word; }
  static bool is_inline(std::uint32_t id) noexcept { return word_of(id) < holder_inline_words; }
  // The word of an id that is_inline().
  std::atomic<std::uint64_t>* inline_word(std::uint32_t id) noexcept {
    if constexpr (holder_inline_words == 1) return &inline_words[0];
    return &inline_words[word_of(id)];
  }
  static std::uint64_t bit_of(std::uint32_t id) noexcept { return std::uint64_t{1} << (id % holder_bits_per_word); }
  static std::uint32_t id_of(std::uint32_t word, std::uint64_t bits) noexcept {
    return word * holder_bits_per_word + static_cast<std::uint32_t>(__builtin_ctzll(bits));
  }

  // Called by executor `id` before a real switch to the context (not inside it: it may allocate,
  // and a reclaimer may be waiting for the switch to end): the word that holds id's bit, or null
  // after marking the set overflowed (id past the array, or no memory). ids() reads the
  // registry's size, only when the array is needed.
  template <class Ids>
  [[gnu::always_inline]] std::atomic<std::uint64_t>* word_for(std::uint32_t id, Ids&& ids) noexcept {
    const std::uint32_t w = word_of(id);
    if (w < holder_inline_words) [[likely]]
      return &inline_words[w];
    return outer_word(id, ids());
  }

 private:
  [[gnu::noinline]] std::atomic<std::uint64_t>* outer_word(std::uint32_t id, std::uint32_t ids) noexcept {
    reserve(id, ids);
    if (std::atomic<std::uint64_t>* w = word(word_of(id))) return w;
    // Relaxed: ordered before the round as the bits are (note_holder); trims never clear it.
    if (!overflow.load(std::memory_order_relaxed)) overflow.store(true, std::memory_order_relaxed);
    return nullptr;
  }

  void reserve(std::uint32_t id, std::uint32_t ids) noexcept {
#if LAZYMM_GENMC
    (void)id, (void)ids;  // every id of a model is inline (and GenMC has no array new)
    return;
#endif
    if (word_of(id) < holder_inline_words || more.load(std::memory_order_relaxed)) return;  // relaxed: word() acquires
    // Room for twice the executors attached now, so a growing pool rarely overflows.
    const std::uint32_t n = (2 * (ids > id ? ids : id + 1) + 63) / 64;
    auto* m = new (std::nothrow) std::atomic<std::uint64_t>[n + 1];
    if (!m) return;  // no memory: the switch marks the set overflow
    for (std::uint32_t i = 1; i <= n; ++i) m[i].store(0, std::memory_order_relaxed);
    m[0].store(n, std::memory_order_relaxed);  // published by the CAS
    std::atomic<std::uint64_t>* none = nullptr;
    // release: publishes the count and the zeroed words; relaxed failure: someone else's array
    // (word() acquires it).
    if (!more.compare_exchange_strong(none, m, std::memory_order_release, std::memory_order_relaxed)) delete[] m;
  }
};

// (15) At a real switch to a context other than the default, after (1) and (2). Writes nothing
// when the bit is already set: a real switch to a context this executor ran before is as cheap
// as without a set (S4).
//
// Why it needs no barrier of its own. The round (16): a switch to x is made under an owning
// reference, so it happens before x's final drop (the drops are RMWs, acq_rel, one release
// sequence), and the round that final drop runs sees the bit, whether this switch set it or an
// earlier one did. Only a trim can clear the bit while x is alive, and against a trim the test
// here is the load in a Dekker pairing: our odd seq (1), the light barrier (2), this load; the
// trim's clear (17), its heavy barrier (18), its load of our seq (19). Either this load sees the
// clear (and we set the bit again), or the trim sees our odd seq, or later our slot store (4),
// and puts the bit back. Reading the bit before (1)-(2) breaks this (CVE-2025-40174 in x86's
// conditional mm_cpumask update; mutant HOLDER_TEST_BEFORE_FENCE).
// `w` and `bit`: the executor's word and bit (holder_set::word_for, before the switch).
[[gnu::always_inline]] inline void note_holder(std::atomic<std::uint64_t>& w, std::uint64_t bit,
                                               [[maybe_unused]] std::uint32_t id) noexcept {
  // Relaxed load: ordered by (1)-(2) against a trim, and by the drops against the round.
  if (w.load(std::memory_order_relaxed) & bit) [[likely]]
    return;
  LAZYMM_TEST_POINT(holder_set_write, id);
  // release: a trim that reads the bit (acquire) finds our record (registry::at).
  w.fetch_or(bit, std::memory_order_release);
}

// Calls f(record) for each member of h (in id order), or for every record if h overflowed.
// (16) relaxed loads of the words: the final drop orders every (15) before the round.
template <class F>
void for_each_member(const registry& reg, const holder_set& h, F&& f) {
  if (h.overflow.load(std::memory_order_relaxed)) {
    for (executor_record* r = reg.head(); r; r = r->next) f(r);
    return;
  }
  const std::uint32_t n = h.words();
  for (std::uint32_t w = 0; w < n; ++w) {
    for (std::uint64_t bits = h.word(w)->load(std::memory_order_relaxed); bits; bits &= bits - 1) {
      // A member's record exists: its attach happened before its switch, which happened before us.
      f(reg.at(holder_set::id_of(w, bits)));
    }
  }
}

// ---- the owner's switch ---------------------------------------------------------------------

// Switches the owner's record from its slot to `next`; returns the context it switched away
// from (read at (3): a stolen slot reads the default context). `s`: the odd value r.seq takes
// for this switch (the owner's private count + 1); s + 1 at the end. `holder_word`,
// `holder_bit`: r's bit in next's holder set (null: the default context, or an overflowed set),
// found before the call. `hooks(prev)` runs deactivate/activate. Steals: whether the policy
// steals (otherwise (2), (12) and the holder set are not needed, and (1)/(5) are relaxed: nobody
// waits on seq and no round looks for holders; the odd seq still tells this thread's own later
// code -- a hook, a signal handler -- that a switch is in progress).
//
// Barriers provides light() (2), heavy() (7), wait(r, s) (8: returns once r.seq != s, by an
// acquire load) and wake_blocked(r) (12). See backend.hpp for the contract.
// Always inlined: out of line, the hooks lambda becomes an object on the stack and the switch a
// call (a real switch took 5.5 ns instead of 3 ns in a microbenchmark on the 2-core VM).
template <bool Steals, class Barriers, class Hooks>
[[gnu::always_inline]] inline context* switch_slot(executor_record& r, const std::uint32_t s, context* next,
                                                   std::atomic<std::uint64_t>* holder_word, std::uint64_t holder_bit,
                                                   const Barriers& b, Hooks&& hooks) noexcept {
  if constexpr (!Steals) {
    r.seq.store(s, std::memory_order_relaxed);  // relaxed: read only by this thread (in_switch)
  } else {
    // (1) A: odd seq. release: whatever a waiter's (8) reads from now on is a release store of
    // ours, so a wait that ends on the odd (1') of our *next* switch still synchronises (a
    // release sequence continues only through RMWs since C++20: a relaxed (1') would not).
    r.seq.store(s, std::memory_order_release);
    // (2) A: light barrier; orders (1) before (3) against the reclaimer's heavy barrier (7).
    b.light();
    // (15) after (2): see note_holder.
    if (holder_word) note_holder(*holder_word, holder_bit, r.id);
  }
  LAZYMM_TEST_POINT(switch_before_slot_read, r.id);
  // (3) relaxed: a stolen slot reads default, and we then never touch the old context; a slot
  // read as x is covered by (1)/(2) against (7)/(8), or by (4) against (6).
  context* prev = r.slot.load(std::memory_order_relaxed);
  LAZYMM_TEST_POINT(switch_after_slot_read, r.id);
  hooks(prev);
  // (4) release: pairs with the reclaimer's acquire load / failed CAS (6): our hooks on prev
  // happen before its teardown and free.
  r.slot.store(next, std::memory_order_release);
  if constexpr (Steals) {
    // (5) release: pairs with the acquire wait (8): the switch is over.
    r.seq.store(s + 1, std::memory_order_release);
    // (12) B: wake a reclaimer that blocked in (8), if any (backend.hpp).
    b.wake_blocked(r);
  } else {
    r.seq.store(s + 1, std::memory_order_relaxed);  // relaxed: as above
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
// already in progress (S3). Victims: contains(const context*), and for_each_candidate(reg, f),
// which calls f on every record that may hold a victim (the victims' holder sets). Hooks:
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
      b.heavy();
      ++res.barriers;
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
    }
    // (9) Nothing holds or touches these victims now.
    for (std::size_t i = 0; i < n; ++i) hooks.evicted(stolen[i]);
    res.steals += static_cast<std::uint32_t>(n);
    n = 0;
    others = false;
  };

  // A record the victims' holder sets do not name never held a victim, or was trimmed after it
  // switched away (17)-(19): it cannot hold one now, nor be inside a switch away from one.
  victims.for_each_candidate(reg, [&](executor_record* r) {
    // (10) acquire: pairs with (11). A record seen free was switched to default first.
    if (!r->in_use.load(std::memory_order_acquire)) return;
    // (6) acquire: if this reads the owner's (4) or a later value, the owner's hooks on the
    // victim happen before our teardown/free, and the owner cannot load it again.
    context* cur = r->slot.load(std::memory_order_acquire);
    if (!victims.contains(cur)) return;
    // (14) acquire: pairs with (13). Names the holder if the steal below succeeds: not an older
    // attach (the holder's (13) is sequenced before its switch to the victim, which happens
    // before this round), and not a newer one (a newer (13) read here would make the previous
    // owner's detach -- its slot store of default, then (11) -- happen before our CAS, which
    // would then fail). GenMC found the relaxed version naming the next attach (record_reuse).
    const std::uint32_t gen = r->generation.load(std::memory_order_acquire);
    // (6') steal: seq_cst CAS. A failure reads the owner's (4) or later: same as (6).
    if (!r->slot.compare_exchange_strong(cur, dflt, std::memory_order_seq_cst)) return;
    stolen_slot& e = stolen[n++];
    e.rec = r;
    e.ctx = cur;
    e.id = r->id;
    e.generation = gen;
    e.own = hooks.is_own(*r);
    others = others || !e.own;
    if (n == round_chunk) finish();
  });
  LAZYMM_TEST_POINT(reclaim_after_steal, ~0u);
  // No steal means no slot held a victim at (6'): every owner that ever read one has already
  // passed its (4), so no barrier and no wait are needed.
  if (n != 0) finish();
}

// The victims of a round for one context: its holder set names the candidates.
struct one_context {
  const context* x;
  const holder_set* holders;
  bool contains(const context* c) const noexcept { return c == x; }
  template <class F>
  void for_each_candidate(const registry& reg, F&& f) const {
#if LAZYMM_NO_HOLDER_SET
    for (executor_record* r = reg.head(); r; r = r->next) f(r);
#else
    for_each_member(reg, *holders, f);
#endif
  }
};

// ---- trimming a holder set ------------------------------------------------------------------

// Removes from x's holder set the executors that no longer hold x, so that x's round visits only
// recent holders. Runs while x is alive (the caller holds an owning reference), concurrently with
// switches to and from x; never removes an executor that holds x or is inside a switch (it may be
// switching to x): the Linux 2023 hotplug bug and CVE-2025-37964. One heavy barrier per 1024
// ids with candidates. Returns how many members it removed.
template <class Barriers>
std::uint32_t trim_holders(const registry& reg, holder_set& h, const context* x, const Barriers& b) noexcept {
  // A member that holds x or is switching (odd seq: maybe to x) stays. acquire, both: pairs with
  // the owner's release (1)/(5) and (4), so a seq read after its switch to x shows the slot too.
  auto may_hold = [&](const executor_record& r) {
    return (r.seq.load(std::memory_order_acquire) & 1u) || r.slot.load(std::memory_order_acquire) == x;
  };
  constexpr std::uint32_t span = 16;  // words per heavy barrier (1024 ids)
  std::uint64_t cleared[span];
  std::uint32_t removed = 0;
  const std::uint32_t n = h.words();
  for (std::uint32_t base = 0; base < n; base += span) {
    const std::uint32_t k = n - base < span ? n - base : span;
    bool any = false;
    for (std::uint32_t i = 0; i < k; ++i) {
      std::atomic<std::uint64_t>& w = *h.word(base + i);
      std::uint64_t gone = 0;
      // acquire: pairs with the release set in (15): the member's record block is visible.
      for (std::uint64_t bits = w.load(std::memory_order_acquire); bits; bits &= bits - 1)
        if (!may_hold(*reg.at(holder_set::id_of(base + i, bits)))) gone |= bits & (~bits + 1);  // the lowest bit
      LAZYMM_TEST_POINT(trim_before_clear, ~0u);
      // (17) seq_cst RMW: the clear that (15)'s load either sees or misses (then see (19)). Only
      // the bits this RMW found set are ours: a concurrent trim that cleared one first counts it.
      if (gone) gone &= w.fetch_and(~gone, std::memory_order_seq_cst);
      // A member that started a switch (or switched to x) since the choice goes back now, without
      // the barrier: putting a bit back is always safe. Acquire loads, as in may_hold.
      std::uint64_t back = 0;
      for (std::uint64_t bits = gone; bits; bits &= bits - 1)
        if (may_hold(*reg.at(holder_set::id_of(base + i, bits)))) back |= bits & (~bits + 1);
      if (back) w.fetch_or(back, std::memory_order_relaxed);  // relaxed: as (15)'s set
      gone &= ~back;
      cleared[i] = gone;
      any = any || gone;
    }
    if (!any) continue;  // nothing left cleared: no barrier
    // (18) heavy barrier. Matches A in every switch: an owner whose (15) load missed our clear has
    // its odd seq (1) visible to (19), or its whole switch (4)-(5) is.
    b.heavy();
    for (std::uint32_t i = 0; i < k; ++i) {
      std::uint64_t back = 0;
      for (std::uint64_t bits = cleared[i]; bits; bits &= bits - 1) {
        // (19) as in may_hold. Either the owner's (15) saw our clear and set the bit again, or
        // this sees its switch: put the bit back (a second set is harmless).
        if (may_hold(*reg.at(holder_set::id_of(base + i, bits))))
          back |= bits & (~bits + 1);
        else
          ++removed;
      }
      if (back) h.word(base + i)->fetch_or(back, std::memory_order_relaxed);  // relaxed: as (15)'s set
    }
  }
  return removed;
}

}  // namespace lazymm::detail
