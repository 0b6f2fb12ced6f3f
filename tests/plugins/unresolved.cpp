// A plugin that needs a symbol nothing provides: dlopen (RTLD_NOW) must refuse it.
#include <dj/kernel.hpp>

extern "C" double dj_test_symbol_that_does_not_exist(double);

double uses_missing(double x) { return dj_test_symbol_that_does_not_exist(x); }

DJ_PLUGIN("unresolved", DJ_KERNEL(uses_missing))
