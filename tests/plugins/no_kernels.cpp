// A shared object that is not a dj plugin (no DJ_PLUGIN descriptor).
extern "C" __attribute__((visibility("default"))) int not_a_kernel(int x) { return x + 1; }
