// The privacy report's plots as PNG files, drawn without a plotting library:
//   recovery.png  top-1 tokens recovered (%) by each attack under each setting, with chance;
//   frontier.png  privacy against utility: per FedRAG setting with measured cost, the strongest
//                 attack's top-1 excess over chance (points) against the perplexity cost (%).
// Thread-safety: pure functions.
#ifndef SILO_EVAL_PRIVACY_PLOTS_H_
#define SILO_EVAL_PRIVACY_PLOTS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "eval/privacy_eval.h"

namespace silo::eval {

// An RGB raster with a 5×7 pixel font (lowercase letters, digits and a few signs; uppercase is
// drawn as lowercase, other characters as a box).
class Canvas {
 public:
  Canvas(int32_t width, int32_t height);

  void Fill(int32_t x, int32_t y, int32_t w, int32_t h, uint32_t rgb);
  void Line(int32_t x0, int32_t y0, int32_t x1, int32_t y1, uint32_t rgb);
  void Text(int32_t x, int32_t y, std::string_view text, uint32_t rgb);  // top-left at (x, y)

  // The image as a PNG file (8-bit RGB, deflate stored blocks).
  std::string EncodePng() const;

 private:
  int32_t width_, height_;
  std::vector<uint8_t> pixels_;  // [height, width, 3]
};

// Writes recovery.png and frontier.png under `out_dir`. Internal on a write error.
absl::Status WritePrivacyPlots(const PrivacyEvalResult& result, const std::string& out_dir);

}  // namespace silo::eval

#endif  // SILO_EVAL_PRIVACY_PLOTS_H_
