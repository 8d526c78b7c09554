// Seeds of the FedRAG scramblers (DESIGN §6, Keys): for one session, layer, KV head and block,
// a seed for the key mixer Φ, one for the value mixer Ψ and one for the row permutation Π.
//
// Each seed is HKDF-SHA256 of the session secret (from DeriveSessionSecret) with no salt and
//   info = "silo/v1 fedrag scrambler seed" || u32le(|session_id|) || session_id
//          || u32le(layer) || u32le(kv_head) || u32le(block) || "phi" | "psi" | "perm",
// 32 bytes long. The querier and the owner compute the same seeds; the compute node never sees
// them. attention/ expands a seed into Φ, Ψ or Π with its own generator.
//
// Thread-safe (a pure function).
#ifndef SILO_CRYPTO_SCRAMBLER_SEEDS_H_
#define SILO_CRYPTO_SCRAMBLER_SEEDS_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"

namespace silo::crypto {

inline constexpr size_t kScramblerSeedSize = 32;

// Secrets: whoever holds a seed can undo that scrambler. Never log, print or send them to the
// compute node. The destructor wipes them; copies wipe themselves too.
struct ScramblerSeeds {
  ScramblerSeeds() = default;
  ScramblerSeeds(const ScramblerSeeds&) = default;
  ScramblerSeeds& operator=(const ScramblerSeeds&) = default;
  ~ScramblerSeeds();

  std::array<uint8_t, kScramblerSeedSize> phi{};   // Φ, the key mixer
  std::array<uint8_t, kScramblerSeedSize> psi{};   // Ψ, the value mixer
  std::array<uint8_t, kScramblerSeedSize> perm{};  // Π, the row permutation
};

// The seeds of (session_id, layer, kv_head, block); `block` is 0 unless the key scope is
// `block`. InvalidArgument when `shared_secret` is empty or `session_id` is empty or longer than
// kMaxSessionIdSize (256, key_exchange.h); Internal when OpenSSL fails.
absl::StatusOr<ScramblerSeeds> DeriveScramblerSeeds(const SecretBytes& shared_secret,
                                                    std::span<const uint8_t> session_id,
                                                    uint32_t layer, uint32_t kv_head,
                                                    uint32_t block);

}  // namespace silo::crypto

#endif  // SILO_CRYPTO_SCRAMBLER_SEEDS_H_
