// mTLS channels to federation peers, one per address, made on first use and reused (a TLS
// handshake per call would cost more than the call).
//
// Thread-safe.
#ifndef SILO_NODE_PEER_CHANNELS_H_
#define SILO_NODE_PEER_CHANNELS_H_

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "absl/time/time.h"
#include "crypto/mtls.h"
#include "grpcpp/channel.h"

namespace silo::node {

// How long a call that starts a peer's part of a query waits for a channel without a connection:
// a peer that has just restarted on the same address is reached once the channel's reconnect
// backoff (crypto::kMaxReconnectBackoffMs) has passed, where a call would fail at once before.
inline constexpr absl::Duration kPeerConnectWait = absl::Seconds(3);

class PeerChannels {
 public:
  explicit PeerChannels(const crypto::TlsMaterial& tls);

  // The channel to `address` ("host:port"), pinning the federation CA and presenting this
  // process's certificate. The channel connects lazily; calls on it report UNAVAILABLE while
  // the peer is unreachable.
  std::shared_ptr<grpc::Channel> Get(const std::string& address);

  // Get, and when the channel has no connection, a wait for one until `deadline` or
  // kPeerConnectWait from now, whichever comes first. Calls on a channel still unconnected then
  // fail as on Get's (UNAVAILABLE), so a dead peer costs at most the wait.
  std::shared_ptr<grpc::Channel> GetConnected(const std::string& address, absl::Time deadline);

 private:
  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  std::mutex mutex_;
  std::map<std::string, std::shared_ptr<grpc::Channel>> channels_;  // guarded by mutex_
};

}  // namespace silo::node

#endif  // SILO_NODE_PEER_CHANNELS_H_
