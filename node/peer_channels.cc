#include "node/peer_channels.h"

#include "grpcpp/create_channel.h"

namespace silo::node {

PeerChannels::PeerChannels(const crypto::TlsMaterial& tls)
    : credentials_(crypto::MakeChannelCredentials(tls)) {}

std::shared_ptr<grpc::Channel> PeerChannels::Get(const std::string& address) {
  const std::lock_guard<std::mutex> lock(mutex_);
  std::shared_ptr<grpc::Channel>& channel = channels_[address];
  if (channel == nullptr) {
    channel =
        grpc::CreateCustomChannel(address, credentials_, crypto::FederationChannelArguments());
  }
  return channel;
}

}  // namespace silo::node
