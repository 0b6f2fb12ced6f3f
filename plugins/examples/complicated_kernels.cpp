// The notebook's complicated_calculation(): defined in a plugin of its own, so that the demo
// can call it before the plugin is loaded everywhere (the "What happened?" cell).
#include <dj/kernel.hpp>

#include <chrono>
#include <random>
#include <thread>

std::vector<double> complicated_calculation() {
  std::this_thread::sleep_for(std::chrono::seconds(1));  // so complex that it takes a long time
  thread_local std::mt19937_64 engine{std::random_device{}()};
  std::exponential_distribution<double> randexp(1.0);
  std::vector<double> out(5);
  for (auto& x : out) x = randexp(engine);
  return out;
}

DJ_PLUGIN("complicated_kernels", DJ_KERNEL(complicated_calculation))
