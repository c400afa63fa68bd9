// quern's data-parallel sidecar: c10d's TCPStore and process groups (Gloo on CPU, NCCL on
// CUDA) from the libtorch that tch links, for `quern train` under torchrun.
//
// Gloo: the PyPI wheel ships ProcessGroupGloo.hpp but not gloo's own headers, which that
// header includes. build.rs compiles this file with USE_C10D_GLOO only where gloo's headers
// exist (Debian's libgloo-dev). Those headers are an older gloo than the one inside
// libtorch (docs/distributed.md): this file therefore never touches a gloo type itself. It
// only calls functions libtorch exports (the ProcessGroupGloo constructor, the device
// factories) and holds gloo objects through shared_ptr, so no gloo layout or vtable from the
// Debian headers is ever compiled into quern (build.rs checks the object for gloo symbols,
// and the static_asserts below pin the sizes of the two c10d classes this file allocates
// to the sizes libtorch's own code allocates).
//
// NCCL: compiled with QUERN_NCCL where the wheel's nccl and CUDA headers exist.
//
// Every function returns NULL or a malloc'd error message (freed with quern_free_error).
#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
#ifdef USE_C10D_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef QUERN_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#ifdef USE_C10D_GLOO
// Sizes libtorch 2.11.0's own code allocates for these classes (the operand of operator new
// before their constructors in ProcessGroupGloo::split and Options::create_default of
// libtorch_cpu.so; see docs/distributed.md). `make_intrusive` below allocates them here, so
// the headers we compile against must give the same sizes.
static_assert(sizeof(c10d::ProcessGroupGloo) == QUERN_GLOO_PG_SIZE, "ProcessGroupGloo's size differs from libtorch's");
static_assert(sizeof(c10d::ProcessGroupGloo::Options) == QUERN_GLOO_OPTIONS_SIZE,
              "ProcessGroupGloo::Options' size differs from libtorch's");
#endif
#ifdef QUERN_NCCL
// The same for ProcessGroupNCCL (ProcessGroupNCCL::split of libtorch_cuda.so).
static_assert(sizeof(c10d::ProcessGroupNCCL) == QUERN_NCCL_PG_SIZE, "ProcessGroupNCCL's size differs from libtorch's");
#endif

namespace {
// An exception's message without libtorch's C++ backtrace.
std::string brief(const std::exception &e) {
  if (auto c = dynamic_cast<const c10::Error *>(&e)) {
    return c->what_without_backtrace();
  }
  return e.what();
}

char *dup_msg(const std::string &msg) {
  char *out = static_cast<char *>(std::malloc(msg.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, msg.c_str(), msg.size() + 1);
  }
  return out;
}

struct Dist {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  int rank = 0;
  int world = 1;
  std::string where;  // "rank R of W (store HOST:PORT)" for messages
};

std::string joined_key(const std::string &prefix, int rank) { return prefix + "joined/" + std::to_string(rank); }

// Waits until every rank has announced itself in the store; on timeout, names the ranks
// that never did.
void wait_for_ranks(Dist &d, const std::string &prefix, const std::string &addr, int port,
                    std::chrono::milliseconds timeout) {
  d.store->set(joined_key(prefix, d.rank), std::vector<uint8_t>{1});
  std::vector<std::string> keys;
  for (int r = 0; r < d.world; ++r) {
    keys.push_back(joined_key(prefix, r));
  }
  try {
    d.store->wait(keys, timeout);
  } catch (const std::exception &e) {
    std::vector<int> missing;
    for (int r = 0; r < d.world; ++r) {
      bool there = false;
      try {
        there = d.store->check({joined_key(prefix, r)});
      } catch (...) {
      }
      if (!there) {
        missing.push_back(r);
      }
    }
    std::ostringstream m;
    m << "timed out after " << timeout.count() / 1000.0 << " s (dist.timeout_s) waiting for ";
    if (missing.empty()) {
      m << "the other ranks";
    } else {
      m << (missing.size() == 1 ? "rank " : "ranks ");
      for (size_t i = 0; i < missing.size(); ++i) {
        m << (i ? ", " : "") << missing[i];
      }
    }
    m << " of WORLD_SIZE " << d.world << " to join the store at " << addr << ":" << port << " (this is rank "
      << d.rank << "): start every rank with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE";
    throw std::runtime_error(m.str());
  }
}

void wait_work(Dist &d, const c10::intrusive_ptr<c10d::Work> &w, const char *what) {
  try {
    w->wait();
  } catch (const std::exception &e) {
    throw std::runtime_error(std::string(what) + " failed on " + d.where + ": " + brief(e));
  }
}
}  // namespace

#define QUERN_DIST_TRY(...)                                \
  try {                                                    \
    __VA_ARGS__;                                           \
    return nullptr;                                        \
  } catch (const std::exception &e) {                      \
    return dup_msg(brief(e));                              \
  } catch (...) {                                          \
    return dup_msg("unknown C++ exception in libtorch c10d"); \
  }

extern "C" {

// Which backends this build has: bit 0 Gloo, bit 1 NCCL.
int quern_dist_backends() {
  int b = 0;
#ifdef USE_C10D_GLOO
  b |= 1;
#endif
#ifdef QUERN_NCCL
  b |= 2;
#endif
  return b;
}

// Joins the group: rank 0 serves a TCPStore on `port` (unless `agent_store`: torchrun's
// agent already serves it), every rank connects to `addr:port`, announces itself under
// `prefix` (which differs between torchrun's restarts of the same store) and waits for the
// others, then builds the process group (NCCL on CUDA device `device` when `cuda`, else
// Gloo). `*out` receives the handle.
char *quern_dist_init(const char *addr, int port, int rank, int world, int64_t timeout_ms, int cuda, int device,
                      int agent_store, const char *prefix_c, void **out) {
  QUERN_DIST_TRY({
    *out = nullptr;
    auto timeout = std::chrono::milliseconds(timeout_ms);
    auto d = std::make_unique<Dist>();
    d->rank = rank;
    d->world = world;
    std::string host(addr);
    std::string prefix(prefix_c);
    {
      std::ostringstream w;
      w << "rank " << rank << " of " << world << " (store " << host << ":" << port << ")";
      d->where = w.str();
    }
    c10d::TCPStoreOptions o;
    o.port = static_cast<uint16_t>(port);
    o.isServer = rank == 0 && !agent_store;
    o.numWorkers = world;
    o.waitWorkers = false;  // we wait ourselves, to name the ranks that did not come
    o.timeout = timeout;
    try {
      d->store = c10::make_intrusive<c10d::TCPStore>(host, o);
    } catch (const std::exception &e) {
      std::ostringstream m;
      if (o.isServer) {
        m << "rank 0 could not serve the store on port " << port << " (MASTER_PORT): " << brief(e);
      } else {
        m << "rank " << rank << " could not reach the store at " << host << ":" << port
          << " (MASTER_ADDR:MASTER_PORT, served by " << (agent_store ? "torchrun's agent" : "rank 0") << ") within "
          << timeout_ms / 1000.0
          << " s (dist.timeout_s): " << brief(e);
      }
      throw std::runtime_error(m.str());
    }
    wait_for_ranks(*d, prefix, host, port, timeout);
    auto pg_store = c10::make_intrusive<c10d::PrefixStore>(prefix + "pg", d->store);
    if (cuda) {
#ifdef QUERN_NCCL
      c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = timeout;
      d->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(pg_store, rank, world, opts);
#else
      throw std::runtime_error(
          "this quern was built without NCCL (the CUDA and NCCL headers were missing at build time: "
          "scripts/setup.sh installs them), so it cannot train on CUDA across ranks");
#endif
    } else {
#ifdef USE_C10D_GLOO
      auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
      const char *ifname = std::getenv("GLOO_SOCKET_IFNAME");
      if (ifname != nullptr && ifname[0] != '\0') {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      } else {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      d->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(pg_store, rank, world, opts);
#else
      throw std::runtime_error(
          "this quern was built without gloo's headers (Debian's libgloo-dev, which scripts/setup.sh "
          "installs), so it has no CPU process group: install libgloo-dev and rebuild");
#endif
    }
    *out = d.release();
  })
}

void quern_dist_free(void *h) { delete static_cast<Dist *>(h); }

// Sums `t` over the ranks, in place.
char *quern_dist_allreduce(void *h, at::Tensor *t) {
  QUERN_DIST_TRY({
    Dist &d = *static_cast<Dist *>(h);
    std::vector<at::Tensor> ts{*t};
    wait_work(d, d.backend->allreduce(ts, c10d::AllreduceOptions()), "an all-reduce");
  })
}

// Copies rank 0's values of the n tensors into every rank's, in place.
char *quern_dist_broadcast(void *h, at::Tensor **ts, int n) {
  QUERN_DIST_TRY({
    Dist &d = *static_cast<Dist *>(h);
    for (int i = 0; i < n; ++i) {
      std::vector<at::Tensor> one{*ts[i]};
      c10d::BroadcastOptions o;
      o.rootRank = 0;
      wait_work(d, d.backend->broadcast(one, o), "a broadcast of the initial weights");
    }
  })
}

// Sums the gradients of the n parameters over the ranks, in place. Which parameters have a
// gradient is agreed first: one that has none on any rank stays without (the optimizer skips
// it, as in one process); one that has a gradient on some rank gets zeros where it has none,
// so every rank reduces the same buffers. The gradients are packed in reverse order (the
// order backward produces them) into flat buffers of at most `bucket_bytes` (a larger
// gradient is a bucket alone) of one dtype and device each; every bucket's all-reduce is
// started before the first is waited for, and the sums are copied back. Returns the number
// of buckets in *buckets.
char *quern_dist_allreduce_grads(void *h, at::Tensor **params, int n, int64_t bucket_bytes, int *buckets) {
  QUERN_DIST_TRY({
    Dist &d = *static_cast<Dist *>(h);
    *buckets = 0;
    if (n == 0) {
      return nullptr;
    }
    at::Tensor has = at::zeros({n}, at::TensorOptions().dtype(at::kInt).device(params[0]->device()));
    {
      std::vector<int32_t> flags(n);
      for (int i = 0; i < n; ++i) {
        flags[i] = params[i]->grad().defined() ? 1 : 0;
      }
      has.copy_(at::from_blob(flags.data(), {n}, at::kInt));
      std::vector<at::Tensor> one{has};
      wait_work(d, d.backend->allreduce(one, c10d::AllreduceOptions()), "agreeing on the parameters with gradients");
      has = has.cpu();
    }
    const int32_t *any = has.data_ptr<int32_t>();
    std::vector<at::Tensor> grads;
    grads.reserve(n);
    for (int i = n - 1; i >= 0; --i) {
      if (any[i] == 0) {
        continue;
      }
      at::Tensor &p = *params[i];
      if (!p.grad().defined()) {
        p.mutable_grad() = at::zeros_like(p);
      }
      grads.push_back(p.grad());
    }
    struct Bucket {
      std::vector<at::Tensor> grads;
      at::Tensor flat;
      c10::intrusive_ptr<c10d::Work> work;
    };
    std::vector<Bucket> bs;
    int64_t bytes = 0;
    for (auto &g : grads) {
      int64_t b = g.numel() * static_cast<int64_t>(g.element_size());
      bool fits = !bs.empty() && bytes + b <= bucket_bytes &&
                  bs.back().grads.front().scalar_type() == g.scalar_type() &&
                  bs.back().grads.front().device() == g.device();
      if (!fits) {
        bs.emplace_back();
        bytes = 0;
      }
      bs.back().grads.push_back(g);
      bytes += b;
    }
    for (auto &b : bs) {
      std::vector<at::Tensor> flat;
      flat.reserve(b.grads.size());
      for (auto &g : b.grads) {
        flat.push_back(g.reshape({-1}));
      }
      b.flat = at::cat(flat);
      std::vector<at::Tensor> one{b.flat};
      b.work = d.backend->allreduce(one, c10d::AllreduceOptions());
    }
    for (auto &b : bs) {
      wait_work(d, b.work, "the gradient all-reduce");
      int64_t off = 0;
      for (auto &g : b.grads) {
        g.copy_(b.flat.narrow(0, off, g.numel()).view_as(g));
        off += g.numel();
      }
    }
    *buckets = static_cast<int>(bs.size());
  })
}

}
