// The ClusterManager interface is public (dj/cluster_manager.hpp); managers include it here.
#pragma once

#include "dj/cluster_manager.hpp"
