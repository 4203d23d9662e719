// Usage: lazymm_dso_dlopen split PLUGIN | lazymm_dso_dlopen_exports unload PLUGIN (issue #19).
//   split:  built without -rdynamic: the plugin binds its own copy of lazymm's per-thread and
//           process-wide state; its thread_executor() on this thread must abort with a message
//           instead of attaching a second executor (item 8).
//   unload: built with -rdynamic (ENABLE_EXPORTS): a thread gets a managed executor through the
//           plugin's code, the plugin is dlclose()d, then the thread exits: its detach must not
//           call into the unloaded plugin (item 1, the managed executor's half).
#include "dso.hpp"

#include <dlfcn.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <thread>

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  void* h = dlopen(argv[2], RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    std::printf("dso: dlopen: %s\n", dlerror());
    return 2;
  }
  if (std::strcmp(argv[1], "split") == 0) {
    auto* f = reinterpret_cast<void (*)(dso_domain*)>(dlsym(h, "plugin_thread_executor"));
    auto* d = new dso_domain;
    d->thread_executor();
    f(d);  // must abort: a second copy of lazymm's state
    std::puts("dso: FAIL: the plugin attached a second executor of the domain to this thread");
    return 1;
  }
  auto* f = reinterpret_cast<void (*)(dso_domain2*)>(dlsym(h, "plugin_thread_executor2"));
  dso_domain d1;
  dso_domain2 d2;
  std::atomic<int> stage{0};
  std::thread t([&] {
    d1.thread_executor();  // the thread's exit list: this executable's code
    f(&d2);                // a managed executor made by the plugin's code
    stage = 1;
    while (stage != 2) std::this_thread::yield();
  });  // at its exit: the managed detach of both executors
  while (stage != 1) std::this_thread::yield();
  dlclose(h);  // the plugin is gone before the thread exits
  stage = 2;
  t.join();
  const bool ok = d1.attached_executors() == 0 && d2.attached_executors() == 0;
  std::puts(ok ? "dso: a managed executor made by an unloaded plugin detached: PASS" : "dso: FAIL: still attached");
  return ok ? 0 : 1;
}
