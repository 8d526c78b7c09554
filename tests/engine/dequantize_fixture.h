// Reads tests/engine/fixtures/dequantize_reference.txt (see make_dequantize_fixture.py).
#ifndef SILO_TESTS_ENGINE_DEQUANTIZE_FIXTURE_H_
#define SILO_TESTS_ENGINE_DEQUANTIZE_FIXTURE_H_

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace silo::engine::testing {

struct DequantizeCase {
  std::string kind;    // "case" or "model"
  uint32_t type = 0;   // case: ggml type id
  std::string tensor;  // model: tensor name
  int64_t row = 0;     // model: row index
  int64_t n_elements = 0;
  std::vector<uint8_t> bytes;  // case: raw data
  std::vector<float> expected;
};

inline std::vector<uint8_t> FromHex(const std::string& hex) {
  std::vector<uint8_t> bytes(hex.size() / 2);
  for (size_t i = 0; i < bytes.size(); ++i) {
    bytes[i] = static_cast<uint8_t>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  }
  return bytes;
}

// Empty when the file cannot be read.
inline std::vector<DequantizeCase> ReadDequantizeFixture() {
  std::ifstream in(std::string(SILO_SOURCE_DIR) +
                   "/tests/engine/fixtures/dequantize_reference.txt");
  std::vector<DequantizeCase> cases;
  std::string header, values;
  while (std::getline(in, header)) {
    if (header.empty() || header[0] == '#') continue;
    if (!std::getline(in, values)) break;
    DequantizeCase c;
    std::istringstream fields(header);
    fields >> c.kind;
    if (c.kind == "case") {
      std::string hex;
      fields >> c.type >> c.n_elements >> hex;
      c.bytes = FromHex(hex);
    } else {
      fields >> c.tensor >> c.row >> c.n_elements;
    }
    std::istringstream numbers(values);
    float x;
    while (numbers >> x) c.expected.push_back(x);
    cases.push_back(std::move(c));
  }
  return cases;
}

}  // namespace silo::engine::testing

#endif  // SILO_TESTS_ENGINE_DEQUANTIZE_FIXTURE_H_
