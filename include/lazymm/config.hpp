// lazymm/config.hpp: compile-time switches. Every switch has a default here and nowhere else.
#pragma once

// ThreadSanitizer detection (GCC defines __SANITIZE_THREAD__, Clang has __has_feature).
#if defined(__SANITIZE_THREAD__)
#define LAZYMM_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define LAZYMM_TSAN 1
#endif
#endif
#ifndef LAZYMM_TSAN
#define LAZYMM_TSAN 0
#endif

// LAZYMM_CHECKED: verify at free that no executor slot holds the context, poison freed
// headers, check executor ownership and reference liveness. Default: on unless NDEBUG.
#ifndef LAZYMM_CHECKED
#ifdef NDEBUG
#define LAZYMM_CHECKED 0
#else
#define LAZYMM_CHECKED 1
#endif
#endif

// LAZYMM_NO_MEMBARRIER=1: never issue the membarrier syscall (the membarrier backend falls
// back to fences). The environment variable of the same name does this at run time.
#ifndef LAZYMM_NO_MEMBARRIER
#define LAZYMM_NO_MEMBARRIER 0
#endif

// LAZYMM_REQUIRE_MEMBARRIER=1: a membarrier backend that tries to register and is refused aborts
// instead of falling back to fences (TSan builds and non-Linux never try: they report fence).
#ifndef LAZYMM_REQUIRE_MEMBARRIER
#define LAZYMM_REQUIRE_MEMBARRIER 0
#endif

// LAZYMM_TEST_SEAMS=1: compile the test seams (pause points inside the protocol, a fake
// membarrier syscall). Tests only: it adds a load and a branch to every switch.
#ifndef LAZYMM_TEST_SEAMS
#define LAZYMM_TEST_SEAMS 0
#endif

// LAZYMM_GENMC=1: the build that the GenMC model checker compiles (tests/model/). It replaces
// only what GenMC cannot compile or run: the membarrier syscall (both barriers become seq_cst
// fences: the backend's contract), the futex sleep (a plain acquire spin), std::string (the
// mechanism reason), std::thread::id (owner checks use pthread_self), the pause instruction,
// the over-aligned record padding and the printing in fatal errors (an assert); it leaves out
// what is not protocol and has no second thread: the executor statistics counters, the
// in-switch flag (signal handlers), drop-latency timing, and thread exit and fork handling
// (thread_executor(), pthread_atfork). The atomics,
// their orders, the fences and the control flow of the switch, the round, the references and
// the registry are the same code in both builds. Never set it in a real build.
#ifndef LAZYMM_GENMC
#define LAZYMM_GENMC 0
#endif
