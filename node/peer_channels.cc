#include "node/peer_channels.h"

#include <algorithm>

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

std::shared_ptr<grpc::Channel> PeerChannels::GetConnected(const std::string& address,
                                                          absl::Time deadline) {
  std::shared_ptr<grpc::Channel> channel = Get(address);
  if (channel->GetState(/*try_to_connect=*/true) != GRPC_CHANNEL_READY) {
    channel->WaitForConnected(
        absl::ToChronoTime(std::min(deadline, absl::Now() + kPeerConnectWait)));
  }
  return channel;
}

}  // namespace silo::node
