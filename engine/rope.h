// Rotary position embedding (RoPE) of query and key rows at explicit positions: the engine
// rotates keys when they enter the KV cache, and owners re-rotate stored pre-RoPE keys to the
// positions a querier assigned (DESIGN.md §4, §6).
//
// Thread-safety: immutable after construction.
#ifndef SILO_ENGINE_ROPE_H_
#define SILO_ENGINE_ROPE_H_

#include <cstdint>
#include <vector>

#include "engine/model_config.h"

namespace silo::engine {

class Rope {
 public:
  explicit Rope(const ModelConfig& config);

  // Rotates n_rows rows of x, each [n_heads, head_dim] (row stride n_heads * head_dim floats),
  // row i by the angle of positions[i]; `inverse` rotates back. Positions may be any int32
  // (negative ones too): the map is a rotation either way.
  void Rotate(const int32_t* positions, int64_t n_rows, int32_t n_heads, float* x,
              bool inverse = false) const;

 private:
  int32_t head_dim_;
  RopeStyle style_;
  std::vector<double> inverse_frequencies_;  // [head_dim / 2]
};

}  // namespace silo::engine

#endif  // SILO_ENGINE_ROPE_H_
