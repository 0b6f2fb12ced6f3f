#include <dj/dj.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  auto triple = dj::everywhere(argv[1]).kernel<int64_t(int64_t)>("triple");
  int64_t sum = 0;
  for (int pid : dj::workers()) sum += dj::remotecall_fetch(triple, pid, int64_t{pid});
  std::printf("consumer: nworkers=%d sum=%lld\n", dj::nworkers(), static_cast<long long>(sum));
  return 0;
}
