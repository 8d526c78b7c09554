#include "attention/key_schedule.h"

#include <algorithm>

#include "common/strings.h"

namespace silo::attention {

absl::StatusOr<std::vector<KeyBlock>> PlanKeyBlocks(std::span<const int32_t> chunk_rows,
                                                    KeyScope scope, int32_t block_rows) {
  if (scope == KeyScope::kBlock && block_rows < 1) {
    return absl::InvalidArgumentError(
        StrCat("key schedule: block_rows must be positive, is ", block_rows));
  }
  int64_t total = 0;
  for (const int32_t rows : chunk_rows) {
    if (rows < 0) {
      return absl::InvalidArgumentError(StrCat("key schedule: chunk with ", rows, " rows"));
    }
    total += rows;
  }
  if (total > INT32_MAX) return absl::InvalidArgumentError("key schedule: too many rows");

  std::vector<KeyBlock> blocks;
  if (scope == KeyScope::kSession) {
    if (total > 0) blocks.push_back({0, 0, static_cast<int32_t>(total)});
    return blocks;
  }
  int32_t row = 0;
  for (const int32_t rows : chunk_rows) {
    const int64_t step = scope == KeyScope::kChunk ? std::max(rows, 1) : block_rows;
    for (int64_t begin = 0; begin < rows; begin += step) {  // int64: begin + step may pass 2^31
      blocks.push_back({static_cast<int32_t>(blocks.size()), static_cast<int32_t>(row + begin),
                        static_cast<int32_t>(std::min<int64_t>(step, rows - begin))});
    }
    row += rows;
  }
  return blocks;
}

}  // namespace silo::attention
