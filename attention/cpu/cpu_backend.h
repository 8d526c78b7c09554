// The CPU attention backend: plain loops, the reference every other backend is tested against.
// Memory is host memory. Thread-safety: one thread at a time (see backend.h).
#ifndef SILO_ATTENTION_CPU_CPU_BACKEND_H_
#define SILO_ATTENTION_CPU_CPU_BACKEND_H_

#include "attention/backend.h"

namespace silo::attention {

class CpuBackend final : public AttentionBackend {
 public:
  std::string_view name() const override { return "cpu"; }

  absl::StatusOr<BackendBuffer> Allocate(size_t bytes) override;
  absl::Status CopyIn(void* backend_dst, const void* host_src, size_t bytes) override;
  absl::Status CopyOut(void* host_dst, const void* backend_src, size_t bytes) override;
  absl::Status Synchronize() override { return absl::OkStatus(); }

  absl::Status PartialAttention(const PartialAttentionArgs& args) override;
  absl::Status MergePartials(const MergeArgs& args) override;
  absl::Status TransformRows(const RowTransformArgs& args) override;
  absl::Status GatherRows(const GatherRowsArgs& args) override;

 protected:
  void Free(void* data) override;
};

}  // namespace silo::attention

#endif  // SILO_ATTENTION_CPU_CPU_BACKEND_H_
