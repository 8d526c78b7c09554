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

#include "crypto/mtls.h"
#include "grpcpp/channel.h"

namespace silo::node {

class PeerChannels {
 public:
  explicit PeerChannels(const crypto::TlsMaterial& tls);

  // The channel to `address` ("host:port"), pinning the federation CA and presenting this
  // process's certificate. The channel connects lazily; calls on it report UNAVAILABLE while
  // the peer is unreachable.
  std::shared_ptr<grpc::Channel> Get(const std::string& address);

 private:
  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  std::mutex mutex_;
  std::map<std::string, std::shared_ptr<grpc::Channel>> channels_;  // guarded by mutex_
};

}  // namespace silo::node

#endif  // SILO_NODE_PEER_CHANNELS_H_
