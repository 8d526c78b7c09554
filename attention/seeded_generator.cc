#include "attention/seeded_generator.h"

#include <cmath>
#include <cstring>
#include <numbers>

namespace silo::attention {
namespace {

uint32_t Rotl(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

void QuarterRound(uint32_t* s, int a, int b, int c, int d) {
  s[a] += s[b];
  s[d] = Rotl(s[d] ^ s[a], 16);
  s[c] += s[d];
  s[b] = Rotl(s[b] ^ s[c], 12);
  s[a] += s[b];
  s[d] = Rotl(s[d] ^ s[a], 8);
  s[c] += s[d];
  s[b] = Rotl(s[b] ^ s[c], 7);
}

uint32_t LoadLe32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

}  // namespace

std::array<uint8_t, 64> ChaCha20Block(const Seed& key, uint32_t counter,
                                      const std::array<uint8_t, 12>& nonce) {
  uint32_t state[16] = {0x61707865, 0x3320646e, 0x79622d32, 0x6b206574};  // "expand 32-byte k"
  for (size_t i = 0; i < 8; ++i) state[4 + i] = LoadLe32(key.data() + 4 * i);
  state[12] = counter;
  for (size_t i = 0; i < 3; ++i) state[13 + i] = LoadLe32(nonce.data() + 4 * i);
  uint32_t working[16];
  std::memcpy(working, state, sizeof(state));
  for (int round = 0; round < 10; ++round) {  // 20 rounds: column then diagonal
    QuarterRound(working, 0, 4, 8, 12);
    QuarterRound(working, 1, 5, 9, 13);
    QuarterRound(working, 2, 6, 10, 14);
    QuarterRound(working, 3, 7, 11, 15);
    QuarterRound(working, 0, 5, 10, 15);
    QuarterRound(working, 1, 6, 11, 12);
    QuarterRound(working, 2, 7, 8, 13);
    QuarterRound(working, 3, 4, 9, 14);
  }
  std::array<uint8_t, 64> out;
  for (int i = 0; i < 16; ++i) {
    const uint32_t word = working[i] + state[i];
    for (int b = 0; b < 4; ++b) out[4 * i + b] = static_cast<uint8_t>(word >> (8 * b));
  }
  return out;
}

SeededGenerator::SeededGenerator(const Seed& seed, uint64_t stream) : key_(seed) {
  for (int b = 0; b < 8; ++b) nonce_[4 + b] = static_cast<uint8_t>(stream >> (8 * b));
}

void SeededGenerator::Refill() {
  block_ = ChaCha20Block(key_, counter_, nonce_);
  ++counter_;
  if (counter_ == 0) ++nonce_[0];  // 2^32 blocks (256 GiB) into one stream: move to the next
  position_ = 0;
}

uint32_t SeededGenerator::NextUint32() {
  if (position_ + 4 > 64) Refill();
  const uint32_t value = LoadLe32(block_.data() + position_);
  position_ += 4;
  return value;
}

uint64_t SeededGenerator::NextUint64() {
  const uint64_t low = NextUint32();
  return low | static_cast<uint64_t>(NextUint32()) << 32;
}

uint64_t SeededGenerator::Below(uint64_t bound) {
  // Reject the top partial range so every residue is equally likely.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  uint64_t value;
  do {
    value = NextUint64();
  } while (value >= limit);
  return value % bound;
}

double SeededGenerator::UniformDouble() {
  return static_cast<double>(NextUint64() >> 11) * 0x1.0p-53;
}

double SeededGenerator::Normal() {
  const double u1 = 1.0 - UniformDouble();  // (0, 1]: log is finite
  const double u2 = UniformDouble();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

}  // namespace silo::attention
