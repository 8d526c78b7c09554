// A deterministic random generator keyed by a 32-byte secret seed: the ChaCha20 keystream
// (RFC 8439), so that scrambler parameters drawn from it are as unpredictable as the seed,
// without OpenSSL (crypto/ derives the seeds; attention/ must build on the GPU machine).
//
// Thread-safety: none; one generator per thread. Copying a generator copies its position.
#ifndef SILO_ATTENTION_SEEDED_GENERATOR_H_
#define SILO_ATTENTION_SEEDED_GENERATOR_H_

#include <array>
#include <cstdint>

namespace silo::attention {

using Seed = std::array<uint8_t, 32>;

// One 64-byte ChaCha20 block (RFC 8439 §2.3), for the known-answer test and the generator.
std::array<uint8_t, 64> ChaCha20Block(const Seed& key, uint32_t counter,
                                      const std::array<uint8_t, 12>& nonce);

class SeededGenerator {
 public:
  // `stream` separates independent streams drawn from one seed (it becomes the nonce).
  explicit SeededGenerator(const Seed& seed, uint64_t stream = 0);

  uint32_t NextUint32();
  uint64_t NextUint64();
  // Uniform in [0, bound), unbiased (rejection sampling); bound > 0.
  uint64_t Below(uint64_t bound);
  // Uniform in [0, 1) with 53 random bits.
  double UniformDouble();
  // Standard normal (Box–Muller on two uniforms).
  double Normal();

 private:
  void Refill();

  Seed key_;
  std::array<uint8_t, 12> nonce_{};
  uint32_t counter_ = 0;
  std::array<uint8_t, 64> block_{};
  int position_ = 64;  // next unread byte of block_
};

}  // namespace silo::attention

#endif  // SILO_ATTENTION_SEEDED_GENERATOR_H_
