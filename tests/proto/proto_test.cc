// The generated contract links and round-trips, and the services name the RPCs of DESIGN.md.
#include <string>

#include "google/protobuf/descriptor.h"
#include "gtest/gtest.h"
#include "silo/v1/common.pb.h"
#include "silo/v1/coordinator.grpc.pb.h"
#include "silo/v1/node.grpc.pb.h"

namespace silo {
namespace {

TEST(Proto, TensorRoundTrips) {
  v1::Tensor tensor;
  tensor.set_dtype(v1::DTYPE_F16);
  tensor.add_shape(2);
  tensor.add_shape(64);
  tensor.set_data(std::string(size_t{2} * 64 * 2, '\x3c'));
  std::string wire;
  ASSERT_TRUE(tensor.SerializeToString(&wire));
  v1::Tensor parsed;
  ASSERT_TRUE(parsed.ParseFromString(wire));
  EXPECT_EQ(parsed.dtype(), v1::DTYPE_F16);
  ASSERT_EQ(parsed.shape_size(), 2);
  EXPECT_EQ(parsed.shape(1), 64);
  EXPECT_EQ(parsed.data().size(), 256u);
}

// Methods are looked up through a message of the same file, which also makes the linker keep
// that file's generated code (and its descriptor) in the test binary.
const google::protobuf::MethodDescriptor* Method(const google::protobuf::FileDescriptor* file,
                                                 const std::string& service,
                                                 const std::string& method) {
  const auto* descriptor = file->FindServiceByName(service);
  return descriptor == nullptr ? nullptr : descriptor->FindMethodByName(method);
}

TEST(Proto, ServicesCarryTheProtocolRpcs) {
  const auto* node = v1::RetrieveRequest::descriptor()->file();
  const auto* coordinator = v1::RegisterNodeRequest::descriptor()->file();
  const auto* attend = Method(node, "ScrambledAttentionService", "Attend");
  ASSERT_NE(attend, nullptr);
  EXPECT_TRUE(attend->client_streaming());
  EXPECT_TRUE(attend->server_streaming());
  EXPECT_NE(Method(node, "RetrievalService", "Retrieve"), nullptr);
  EXPECT_NE(Method(node, "FedRagOwnerService", "ExchangeKeys"), nullptr);
  EXPECT_NE(Method(node, "NodeControlService", "Probe"), nullptr);
  EXPECT_NE(Method(node, "DragonService", "Decode"), nullptr);
  EXPECT_NE(Method(coordinator, "CoordinatorService", "RegisterNode"), nullptr);
  EXPECT_NE(Method(coordinator, "CoordinatorService", "PlaceSession"), nullptr);
  EXPECT_NE(Method(coordinator, "QueryService", "Query"), nullptr);
  EXPECT_EQ(Method(coordinator, "QueryService", "NoSuchRpc"), nullptr);
}

}  // namespace
}  // namespace silo
