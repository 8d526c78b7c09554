#include "crypto/scrambler_seeds.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <string_view>
#include <vector>

#include "common/status_macros.h"
#include "common/strings.h"
#include "crypto/hkdf.h"
#include "crypto/internal/encoding.h"
#include "crypto/key_exchange.h"

namespace silo::crypto {
namespace {

constexpr std::string_view kSeedLabel = "silo/v1 fedrag scrambler seed";

// HKDF-SHA256(shared_secret, no salt, info = `context` || `name`) into `seed`.
absl::Status DeriveSeed(const SecretBytes& shared_secret, const std::vector<uint8_t>& context,
                        std::string_view name, std::array<uint8_t, kScramblerSeedSize>& seed) {
  std::vector<uint8_t> info = context;
  internal::AppendBytes(info, name);
  SILO_ASSIGN_OR_RETURN(const SecretBytes okm,
                        HkdfSha256(shared_secret.span(), {}, info, kScramblerSeedSize));
  std::ranges::copy(okm.span(), seed.begin());
  return absl::OkStatus();
}

}  // namespace

ScramblerSeeds::~ScramblerSeeds() {
  OPENSSL_cleanse(phi.data(), phi.size());
  OPENSSL_cleanse(psi.data(), psi.size());
  OPENSSL_cleanse(perm.data(), perm.size());
}

absl::StatusOr<ScramblerSeeds> DeriveScramblerSeeds(const SecretBytes& shared_secret,
                                                    std::span<const uint8_t> session_id,
                                                    uint32_t layer, uint32_t kv_head,
                                                    uint32_t block) {
  if (shared_secret.empty()) return absl::InvalidArgumentError("shared secret is empty");
  if (session_id.empty() || session_id.size() > kMaxSessionIdSize) {
    return absl::InvalidArgumentError(
        StrCat("session id must be 1 to ", kMaxSessionIdSize, " bytes, got ", session_id.size()));
  }
  std::vector<uint8_t> context;
  internal::AppendBytes(context, kSeedLabel);
  internal::AppendLengthPrefixed(context, session_id);
  internal::AppendUint32(context, layer);
  internal::AppendUint32(context, kv_head);
  internal::AppendUint32(context, block);

  ScramblerSeeds seeds;
  SILO_RETURN_IF_ERROR(DeriveSeed(shared_secret, context, "phi", seeds.phi));
  SILO_RETURN_IF_ERROR(DeriveSeed(shared_secret, context, "psi", seeds.psi));
  SILO_RETURN_IF_ERROR(DeriveSeed(shared_secret, context, "perm", seeds.perm));
  return seeds;
}

}  // namespace silo::crypto
