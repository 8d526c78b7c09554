// The compute interface of attention/: partial attention, merge, row transforms (scrambling)
// and row gathers (permutations), on the CPU or on a CUDA device.
//
// Every op takes pointers in the backend's memory (Allocate / CopyIn / CopyOut move data there
// and back), validates its arguments and returns InvalidArgument for shapes it cannot run,
// never aborting. Ops on one backend run in order; CopyOut and Synchronize wait for them.
// Preconditions the host cannot check, because the data lives on the device: GatherRows' row
// indices lie in [0, n_in) (the CPU backend returns InvalidArgument, the CUDA one writes zero
// rows); the CUDA backend wants K and V 16-byte aligned (checked, InvalidArgument). Buffers
// must be destroyed before the backend that allocated them.
//
// Thread-safety: a backend is used by one thread at a time (each session owns its own).
#ifndef SILO_ATTENTION_BACKEND_H_
#define SILO_ATTENTION_BACKEND_H_

#include <cstddef>
#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "attention/attention_args.h"

namespace silo::attention {

class AttentionBackend;

// Memory owned by a backend; freed when destroyed. Move-only.
class BackendBuffer {
 public:
  BackendBuffer() = default;
  BackendBuffer(AttentionBackend* backend, void* data, size_t bytes)
      : backend_(backend), data_(data), bytes_(bytes) {}
  BackendBuffer(BackendBuffer&& other) noexcept;
  BackendBuffer& operator=(BackendBuffer&& other) noexcept;
  BackendBuffer(const BackendBuffer&) = delete;
  BackendBuffer& operator=(const BackendBuffer&) = delete;
  ~BackendBuffer();

  void* data() const { return data_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void Release();

  AttentionBackend* backend_ = nullptr;
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

class AttentionBackend {
 public:
  virtual ~AttentionBackend() = default;

  virtual std::string_view name() const = 0;

  // ResourceExhausted when the memory is not there.
  virtual absl::StatusOr<BackendBuffer> Allocate(size_t bytes) = 0;
  // Host → backend and backend → host copies of `bytes` bytes.
  virtual absl::Status CopyIn(void* backend_dst, const void* host_src, size_t bytes) = 0;
  virtual absl::Status CopyOut(void* host_dst, const void* backend_src, size_t bytes) = 0;
  // Waits for every op issued so far; reports a device error that happened in one of them.
  virtual absl::Status Synchronize() = 0;

  virtual absl::Status PartialAttention(const PartialAttentionArgs& args) = 0;
  virtual absl::Status MergePartials(const MergeArgs& args) = 0;
  virtual absl::Status TransformRows(const RowTransformArgs& args) = 0;
  virtual absl::Status GatherRows(const GatherRowsArgs& args) = 0;

 protected:
  friend class BackendBuffer;
  virtual void Free(void* data) = 0;
};

enum class BackendKind { kCpu, kCuda };

// The CPU backend always exists. kCuda: Unavailable when silo was built without CUDA or no
// device is present.
absl::StatusOr<std::unique_ptr<AttentionBackend>> CreateBackend(BackendKind kind);

// Argument checks shared by every backend: InvalidArgument naming the offending field.
absl::Status ValidatePartialAttention(const PartialAttentionArgs& args);
absl::Status ValidateMerge(const MergeArgs& args);
absl::Status ValidateTransformRows(const RowTransformArgs& args);
absl::Status ValidateGatherRows(const GatherRowsArgs& args);

}  // namespace silo::attention

#endif  // SILO_ATTENTION_BACKEND_H_
