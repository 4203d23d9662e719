// A plugin that uses lazymm, loaded with dlopen() by dlopen_main.cpp (issue #19, items 1 and 8).
#include "dso.hpp"

// Item 8: attaches the calling thread through this plugin's code.
DSO_API void plugin_thread_executor(dso_domain* d) { d->thread_executor(); }
// Item 1: a managed executor of a domain type whose thread_executor() only this plugin
// instantiates.
DSO_API void plugin_thread_executor2(dso_domain2* d) { d->thread_executor(); }
